/* The workbench: each module file's textarea becomes a CodeMirror editor (vendored
 * StepworksEditor); as you type, the interface is read again by the server (ast, nothing
 * run) and its problems are marked in the editors. Without JavaScript the textareas still
 * post the edit. */
(function () {
  "use strict";

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function names(dd, list) {
    dd.replaceChildren();
    if (!list.length) {
      dd.appendChild(el("span", "none", "muted"));
      return;
    }
    list.forEach(function (item, i) {
      if (i) dd.appendChild(document.createTextNode(", "));
      dd.appendChild(el("code", item.name));
      if (item.note) {
        dd.appendChild(document.createTextNode(" "));
        dd.appendChild(el("small", item.note, "muted"));
      }
    });
  }

  function drawInterface(body, iface) {
    var optional = iface.optional_inputs || [];
    names(body.querySelector("[data-part=inputs]"), iface.inputs.map(function (name) {
      return { name: name, note: optional.indexOf(name) >= 0 ? "(optional)" : "" };
    }));
    names(body.querySelector("[data-part=outputs]"), iface.outputs.map(function (name) {
      return { name: name };
    }));
    names(body.querySelector("[data-part=params]"), Object.keys(iface.params).map(function (name) {
      var spec = iface.params[name];
      var note = spec.type || "any";
      if ("default" in spec) note += " = " + JSON.stringify(spec.default);
      return { name: name, note: note };
    }));
  }

  function start() {
    var form = document.getElementById("workbench-form");
    if (!form || form.dataset.started || typeof StepworksEditor === "undefined") return;
    form.dataset.started = "true";
    var readOnly = form.dataset.readonly === "true";
    var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    var status = document.getElementById("interface-status");
    var problemList = document.getElementById("interface-problems");
    var body = document.getElementById("interface-body");
    var token = form.querySelector("input[name=csrfmiddlewaretoken]");
    var editors = [];
    var asked = 0;

    function check() {
      var files = {};
      editors.forEach(function (e) { files[e.path] = e.editor.getValue(); });
      var ticket = ++asked;
      status.textContent = "Reading the interface…";
      fetch(form.dataset.interfaceUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": token ? token.value : "" },
        body: JSON.stringify({ files: files }),
      })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          if (ticket !== asked) return; // a newer edit has been sent since
          show(answer);
        })
        .catch(function () {
          if (ticket === asked) status.textContent = "Could not read the interface; the server will check it when you run.";
        });
    }

    function show(answer) {
      var problems = answer.problems || [];
      problemList.replaceChildren();
      editors.forEach(function (e) {
        e.editor.setDiagnostics(problems.filter(function (p) { return p.file === e.path; }));
      });
      problems.forEach(function (p) {
        var line = p.line && p.message.indexOf("line " + p.line) < 0 ? ", line " + p.line : "";
        var where = p.file ? p.file + line + ": " : "";
        problemList.appendChild(el("li", where + p.message));
      });
      if (answer.ok) {
        drawInterface(body, answer.interface);
        status.textContent = "The interface, as the code now declares it.";
        (answer.warnings || []).forEach(function (w) { problemList.appendChild(el("li", w, "muted")); });
      } else {
        status.textContent = answer.error || "The code has problems: fix them to run it.";
      }
      form.dataset.interfaceOk = answer.ok ? "true" : "false";
    }

    form.querySelectorAll("textarea[data-editor]").forEach(function (area) {
      var holder = el("div");
      area.insertAdjacentElement("afterend", holder);
      area.hidden = true;
      var editor = StepworksEditor.create(holder, {
        doc: area.value,
        language: area.dataset.language,
        readOnly: readOnly,
        dark: dark,
        onChange: readOnly ? null : function (text) {
          area.value = text;
          check();
        },
      });
      editors.push({ path: area.dataset.path, area: area, editor: editor });
    });
    form.addEventListener("submit", function () {
      editors.forEach(function (e) { e.area.value = e.editor.getValue(); });
    });
  }

  document.addEventListener("DOMContentLoaded", start);
  if (document.readyState !== "loading") start();
})();
