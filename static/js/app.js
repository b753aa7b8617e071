/* Small page behaviours: code highlighting (vendored highlight.js) and a log that follows
 * its tail while the reader is at the bottom. Pages work without it. */
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
  function start() {
    highlight();
    var log = document.getElementById("log-text");
    if (log) log.scrollTop = log.scrollHeight;
  }
  document.addEventListener("DOMContentLoaded", start);
  if (document.readyState !== "loading") start();
})();
