/* Inside the sandboxed frame only (opaque origin, CSP sandbox allow-scripts): draw the
 * user's plotly figure from <script id="figure">. */
(function () {
  "use strict";
  function draw() {
    var source = document.getElementById("figure");
    var target = document.getElementById("plot");
    if (!source || !target || typeof Plotly === "undefined") return;
    var figure = JSON.parse(source.textContent) || {};
    var layout = Object.assign({ autosize: true }, figure.layout || {});
    Plotly.newPlot(target, figure.data || [], layout, { responsive: true, displaylogo: false });
  }
  document.addEventListener("DOMContentLoaded", draw);
})();
