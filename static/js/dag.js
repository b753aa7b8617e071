/* Draw a graph as SVG, laid out by the vendored dagre (left to right).
 *
 * Every element with data-dag="ID" is filled from the JSON in <script id="ID"> (written by
 * Django's json_script): {"nodes": [{id, label, kind, status?, module?, duration_s?,
 * reused_from_run?, href?}], "edges": [{source, target, label?, kind?}]}. After an htmx
 * swap, containers that have no drawing yet are drawn again, so a polled partial that
 * carries new statuses redraws the graph without reloading the page. Every graph can be
 * panned, zoomed and fitted to its box (panZoom below).
 */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, attrs[key]);
    });
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, attrs, value) {
    var node = el("text", attrs, parent);
    node.textContent = value;
    return node;
  }

  function humanDuration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 10) return seconds.toFixed(1) + " s";
    if (seconds < 60) return Math.round(seconds) + " s";
    var minutes = Math.floor(seconds / 60);
    var rest = Math.round(seconds - minutes * 60);
    if (minutes < 60) return minutes + " m" + (rest ? " " + rest + " s" : "");
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " m";
  }

  function subtitle(node) {
    var parts = [];
    if (node.module) parts.push(node.module);
    if (node.status === "reused") parts.push("reused");
    else if (node.duration_s !== null && node.duration_s !== undefined) parts.push(humanDuration(node.duration_s));
    else if (node.status) parts.push(node.status);
    if (node.kind === "artifact" && node.media_type) parts.push(node.media_type.split(";")[0]);
    return parts.join(" · ");
  }

  // Approximate text widths: 13px bold labels and 11px subtitles in the system sans.
  var LABEL_PX = 8.0;
  var SUB_PX = 6.4;
  var MAX_WIDTH = 300;

  function widthFor(label, sub) {
    var needed = Math.max(label.length * LABEL_PX, (sub || "").length * SUB_PX) + 30;
    return Math.min(Math.max(needed, 80), MAX_WIDTH);
  }

  function clip(value, width, px) {
    var max = Math.floor((width - 22) / px);
    return value.length > max ? value.slice(0, max - 1) + "…" : value;
  }

  function draw(container) {
    var source = document.getElementById(container.getAttribute("data-dag"));
    if (!source || typeof dagre === "undefined") return;
    var data = JSON.parse(source.textContent);
    var g = new dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({
      rankdir: container.getAttribute("data-rankdir") || "LR",
      nodesep: 16,
      ranksep: 48,
      edgesep: 8,
      marginx: 6,
      marginy: 12, // a reused step's badge stands 8px above its box
    });
    g.setDefaultEdgeLabel(function () {
      return {};
    });
    data.nodes.forEach(function (node) {
      var sub = subtitle(node);
      g.setNode(node.id, { width: widthFor(node.label, sub), height: sub ? 44 : 30, node: node, sub: sub });
    });
    var hidden = (container.getAttribute("data-hide-edges") || "").split(" ");
    data.edges.forEach(function (edge, i) {
      if (hidden.indexOf(edge.kind) !== -1) return;
      if (g.hasNode(edge.source) && g.hasNode(edge.target)) {
        g.setEdge(edge.source, edge.target, { edge: edge }, "e" + i);
      }
    });
    dagre.layout(g);
    var size = g.graph();
    var svg = el("svg", {
      class: "dag-svg",
      width: Math.ceil(size.width),
      height: Math.ceil(size.height),
      viewBox: "0 0 " + Math.ceil(size.width) + " " + Math.ceil(size.height),
      "aria-label": container.getAttribute("data-label") || "Graph",
    });
    var defs = el("defs", {}, svg);
    var marker = el("marker", {
      id: "arrow-" + container.getAttribute("data-dag"),
      viewBox: "0 0 10 10",
      refX: 9,
      refY: 5,
      markerWidth: 7,
      markerHeight: 7,
      orient: "auto-start-reverse",
    }, defs);
    el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "dag-arrow" }, marker);

    var edges = el("g", { class: "dag-edges" }, svg);
    g.edges().forEach(function (ref) {
      var info = g.edge(ref);
      var points = info.points || [];
      if (!points.length) return;
      var d = "M " + points[0].x + " " + points[0].y;
      for (var i = 1; i < points.length; i++) d += " L " + points[i].x + " " + points[i].y;
      var kind = (info.edge && info.edge.kind) || "data";
      var path = el("path", {
        d: d,
        class: "dag-edge edge-" + kind,
        "marker-end": "url(#arrow-" + container.getAttribute("data-dag") + ")",
      }, edges);
      var label = info.edge && (info.edge.label || info.edge.kind);
      if (label) {
        var title = el("title", {}, path);
        title.textContent = label;
      }
    });

    var nodes = el("g", { class: "dag-nodes" }, svg);
    g.nodes().forEach(function (id) {
      var info = g.node(id);
      var node = info.node;
      var x = info.x - info.width / 2;
      var y = info.y - info.height / 2;
      var parent = nodes;
      if (node.href) {
        parent = el("a", { href: node.href, class: "dag-link" }, nodes);
      }
      var group = el("g", {
        class: "dag-node kind-" + node.kind + (node.status ? " node-" + node.status : ""),
        transform: "translate(" + x + "," + y + ")",
        "data-node": node.id,
        "data-status": node.status || "",
      }, parent);
      var title = el("title", {}, group);
      title.textContent = node.label + (info.sub ? " (" + info.sub + ")" : "");
      el("rect", { width: info.width, height: info.height, rx: 7, ry: 7, class: "dag-box" }, group);
      if (node.status) el("rect", { width: 5, height: info.height, rx: 2, class: "dag-stripe" }, group);
      text(group, { x: 14, y: 19, class: "dag-label" }, clip(node.label, info.width, LABEL_PX));
      if (info.sub) text(group, { x: 14, y: 35, class: "dag-sub" }, clip(info.sub, info.width, SUB_PX));
      if (node.reused_from_run) {
        var badge = "↻ run " + node.reused_from_run;
        var bw = badge.length * 6.2 + 10;
        var b = el("g", { class: "dag-badge", transform: "translate(" + (info.width - bw - 4) + ",-8)" }, group);
        el("rect", { width: bw, height: 16, rx: 8, ry: 8 }, b);
        text(b, { x: bw / 2, y: 12, "text-anchor": "middle" }, badge);
      }
    });
    panZoom(container, svg, Math.ceil(size.width), Math.ceil(size.height));
  }

  // --- pan, zoom and fit ---------------------------------------------------------------------
  // The graph is drawn at its natural size; the SVG's viewBox shows a part of it: screen =
  // graph * k + (tx, ty). It starts fitted to its box (never enlarged past 1:1). A drag pans,
  // the wheel or a pinch zooms around the pointer, the buttons zoom and fit. A view the user
  // chose survives the redraws of a polled page (per data-dag id); a click that ended a drag
  // does not follow a node's link.
  var MIN_SCALE = 0.05;
  var MAX_SCALE = 4;
  var STEP = 1.25;
  var DRAG_PX = 4;
  var views = {};

  function clampScale(k) {
    return Math.min(MAX_SCALE, Math.max(MIN_SCALE, k));
  }

  function button(label, title, action) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "dag-tool secondary outline";
    b.textContent = label;
    b.title = title;
    b.setAttribute("aria-label", title);
    b.setAttribute("data-action", action);
    return b;
  }

  function panZoom(container, svg, gw, gh) {
    var id = container.getAttribute("data-dag");
    var view = null;
    var pointers = {};
    var dragged = false;

    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.classList.add("dag-zoom");
    var tools = document.createElement("div");
    tools.className = "dag-tools";
    tools.append(
      button("Fit", "Fit the graph", "fit"),
      button("+", "Zoom in", "in"),
      button("−", "Zoom out", "out")
    );
    var hint = document.createElement("span");
    hint.className = "dag-hint";
    hint.textContent = "drag to move · wheel or pinch to zoom";
    tools.append(hint);
    container.replaceChildren(tools, svg);
    container.classList.add("dag-zoomable");

    function box() {
      return { w: svg.clientWidth || container.clientWidth, h: svg.clientHeight || gh };
    }
    function setHeight() {
      var width = container.clientWidth || gw;
      var height = gh * Math.min(1, width / gw);
      svg.style.height = Math.ceil(Math.max(120, Math.min(height, window.innerHeight * 0.7))) + "px";
    }
    function apply() {
      var b = box();
      svg.setAttribute(
        "viewBox",
        [-view.tx / view.k, -view.ty / view.k, b.w / view.k, b.h / view.k].join(" ")
      );
      container.setAttribute("data-scale", view.k.toFixed(3));
    }
    function remember() {
      views[id] = view;
      container.removeAttribute("data-fitted");
    }
    function fit() {
      var b = box();
      var k = Math.min(1, b.w / gw, b.h / gh);
      view = { k: k, tx: (b.w - gw * k) / 2, ty: (b.h - gh * k) / 2 };
      delete views[id];
      container.setAttribute("data-fitted", "1");
      apply();
    }
    function zoomAt(factor, x, y) {
      var k = clampScale(view.k * factor);
      var f = k / view.k;
      view = { k: k, tx: x - (x - view.tx) * f, ty: y - (y - view.ty) * f };
      remember();
      apply();
    }
    function local(event) {
      var rect = svg.getBoundingClientRect();
      return { x: event.clientX - rect.left, y: event.clientY - rect.top };
    }

    setHeight();
    if (views[id]) {
      view = views[id];
      apply();
    } else {
      fit();
    }

    tools.addEventListener("click", function (event) {
      var action = event.target.getAttribute && event.target.getAttribute("data-action");
      var b = box();
      if (action === "fit") fit();
      else if (action === "in") zoomAt(STEP, b.w / 2, b.h / 2);
      else if (action === "out") zoomAt(1 / STEP, b.w / 2, b.h / 2);
    });
    svg.addEventListener(
      "wheel",
      function (event) {
        event.preventDefault(); // the wheel zooms the graph, not the page
        var delta = event.deltaY * (event.deltaMode === 1 ? 16 : 1);
        // A pinch on a touchpad comes as a wheel with ctrlKey: small deltas, zoom faster.
        var p = local(event);
        zoomAt(Math.exp(-delta * (event.ctrlKey ? 0.01 : 0.002)), p.x, p.y);
      },
      { passive: false }
    );
    svg.addEventListener("dragstart", function (event) {
      event.preventDefault(); // a node's link is not dragged away
    });
    svg.addEventListener("pointerdown", function (event) {
      if (event.pointerType === "mouse" && event.button !== 0) return;
      pointers[event.pointerId] = { x: event.clientX, y: event.clientY };
      dragged = false;
    });
    svg.addEventListener("pointermove", function (event) {
      var p = pointers[event.pointerId];
      if (!p) return;
      var ids = Object.keys(pointers);
      var dx = event.clientX - p.x;
      var dy = event.clientY - p.y;
      if (ids.length === 1) {
        if (!dragged && Math.abs(dx) + Math.abs(dy) < DRAG_PX) return;
        if (!dragged) {
          dragged = true;
          svg.setPointerCapture(event.pointerId);
          svg.classList.add("dag-panning");
        }
        view = { k: view.k, tx: view.tx + dx, ty: view.ty + dy };
        remember();
        apply();
      } else if (ids.length === 2) {
        var other = pointers[ids[0] === String(event.pointerId) ? ids[1] : ids[0]];
        var before = Math.hypot(p.x - other.x, p.y - other.y);
        var after = Math.hypot(event.clientX - other.x, event.clientY - other.y);
        dragged = true;
        if (before > 0) {
          var rect = svg.getBoundingClientRect();
          zoomAt(after / before, (event.clientX + other.x) / 2 - rect.left, (event.clientY + other.y) / 2 - rect.top);
        }
      }
      p.x = event.clientX;
      p.y = event.clientY;
    });
    function release(event) {
      delete pointers[event.pointerId];
      if (!Object.keys(pointers).length) svg.classList.remove("dag-panning");
    }
    svg.addEventListener("pointerup", release);
    svg.addEventListener("pointercancel", release);
    svg.addEventListener(
      "click",
      function (event) {
        if (!dragged) return;
        event.preventDefault(); // the end of a drag, not a click on a node
        event.stopPropagation();
        dragged = false;
      },
      true
    );
    if (window.ResizeObserver) {
      var width = container.clientWidth;
      new ResizeObserver(function () {
        if (container.clientWidth === width || !svg.isConnected) return;
        width = container.clientWidth;
        setHeight();
        if (views[id]) apply();
        else fit();
      }).observe(container);
    }
  }

  function drawAll() {
    document.querySelectorAll("[data-dag]").forEach(function (container) {
      if (!container.querySelector("svg")) draw(container);
    });
  }

  document.addEventListener("DOMContentLoaded", drawAll);
  document.addEventListener("htmx:afterSettle", drawAll);
  if (document.readyState !== "loading") drawAll();
})();
