/* Small page behaviours: code highlighting (vendored highlight.js), a log that follows its
 * tail while the reader is at the bottom, a question before a destructive action, focus on
 * a form's errors. Pages work without it (then nothing asks first). */
(function () {
  "use strict";
  function highlight() {
    if (typeof hljs === "undefined") return;
    document.querySelectorAll(".code[data-lang] pre code").forEach(function (block) {
      var language = block.closest(".code").getAttribute("data-lang");
      if (block.dataset.highlighted || language === "plaintext") return;
      block.classList.add("language-" + language);
      hljs.highlightElement(block);
    });
  }
  var stick = true;
  document.addEventListener("scroll", function (event) {
    var log = event.target;
    if (log && log.id === "log-text") stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
  }, true);
  document.addEventListener("htmx:oobAfterSwap", function () {
    var log = document.getElementById("log-text");
    if (log && stick) log.scrollTop = log.scrollHeight;
  });
  // A destructive button asks first: data-confirm on the button (or its form) is the question.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var question = (button && button.dataset.confirm) || event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  }, true);
  // A form that came back with errors: move focus (and the view) to its summary.
  function focusErrors() {
    var summary = document.querySelector("[data-error-summary]");
    if (!summary) return;
    if (!summary.hasAttribute("tabindex")) summary.setAttribute("tabindex", "-1");
    summary.focus();
  }
  function start() {
    focusErrors();
    highlight();
    var log = document.getElementById("log-text");
    if (log) log.scrollTop = log.scrollHeight;
  }
  // Deferred, this runs before DOMContentLoaded, and the page's later scripts (hljs) after it.
  if (document.readyState === "complete") start();
  else document.addEventListener("DOMContentLoaded", start);
})();
