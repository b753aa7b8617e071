/* Draw our own plotly figures: every element with data-plotly="ID" gets the figure in
 * <script id="ID"> (json_script). Figures come from runs_app/charts.py, never from users. */
(function () {
  "use strict";
  function colours() {
    var style = getComputedStyle(document.body);
    return { text: style.color || "#333", grid: "rgba(128,128,128,0.25)" };
  }
  function drawAll() {
    if (typeof Plotly === "undefined") return;
    var c = colours();
    document.querySelectorAll("[data-plotly]").forEach(function (el) {
      if (el.getAttribute("data-drawn")) return;
      var source = document.getElementById(el.getAttribute("data-plotly"));
      if (!source) return;
      var figure = JSON.parse(source.textContent);
      var layout = Object.assign({}, figure.layout || {}, {
        paper_bgcolor: "rgba(0,0,0,0)",
        plot_bgcolor: "rgba(0,0,0,0)",
        font: { color: c.text },
      });
      ["xaxis", "yaxis"].forEach(function (axis) {
        layout[axis] = Object.assign({ gridcolor: c.grid, zerolinecolor: c.grid }, layout[axis] || {});
      });
      el.replaceChildren();
      Plotly.newPlot(el, figure.data || [], layout, { responsive: true, displaylogo: false });
      el.setAttribute("data-drawn", "1");
    });
  }
  document.addEventListener("DOMContentLoaded", drawAll);
  document.addEventListener("htmx:afterSettle", drawAll);
  if (document.readyState !== "loading") drawAll();
})();
