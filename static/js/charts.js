/* Draw our own plotly figures: every element with data-plotly="ID" gets the figure in
 * <script id="ID"> (json_script). Figures come from runs_app/charts.py, never from users.
 *
 * Two ways to load plotly (4.6 MB of script):
 * - the page includes vendor/plotly.min.js itself: every figure is drawn at once;
 * - this script's tag names it in data-plotly-src: nothing is fetched or drawn until a
 *   figure comes near the viewport (IntersectionObserver); plotly is then loaded once, and
 *   each figure is drawn when it is scrolled into view. A page whose first screen holds no
 *   figure then shows in the time of its HTML; plotly is fetched once the page has loaded
 *   and the browser is idle, and figures nobody scrolls to are never drawn.
 * A drawn figure's element gets data-drawn="1"; performance marks "plotly:loaded" and
 * "figure:ID" say when (bench/bench_pages.py reads them).
 */
(function () {
  "use strict";
  var self = document.currentScript;
  var plotlySrc = self ? self.getAttribute("data-plotly-src") : null;
  var waiting = [];
  var requested = false;
  // Start a little before the figure shows, so it is usually drawn by the time it does.
  var AHEAD = "300px 0px";

  function colours() {
    var style = getComputedStyle(document.body);
    return { text: style.color || "#333", grid: "rgba(128,128,128,0.25)" };
  }

  function withPlotly(callback) {
    if (typeof Plotly !== "undefined") {
      callback();
      return;
    }
    if (!plotlySrc) return; // the page loads plotly itself (a deferred tag before this one)
    waiting.push(callback);
    if (requested) return;
    requested = true;
    var tag = document.createElement("script");
    tag.src = plotlySrc;
    tag.addEventListener("load", function () {
      mark("plotly:loaded");
      var callbacks = waiting;
      waiting = [];
      callbacks.forEach(function (fn) {
        fn();
      });
    });
    document.head.appendChild(tag);
  }

  function mark(name) {
    if (window.performance && performance.mark) performance.mark(name);
  }

  function draw(el) {
    if (el.getAttribute("data-drawn") || !el.isConnected) return;
    var id = el.getAttribute("data-plotly");
    var source = document.getElementById(id);
    if (!source) return;
    var figure = JSON.parse(source.textContent);
    var c = colours();
    var layout = Object.assign({}, figure.layout || {}, {
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: c.text },
    });
    ["xaxis", "yaxis"].forEach(function (axis) {
      layout[axis] = Object.assign({ gridcolor: c.grid, zerolinecolor: c.grid }, layout[axis] || {});
    });
    el.replaceChildren();
    el.setAttribute("data-drawn", "1");
    Promise.resolve(
      Plotly.newPlot(el, figure.data || [], layout, { responsive: true, displaylogo: false })
    ).then(function () {
      mark("figure:" + id);
    });
  }

  // Figures that came into view together are drawn one per frame, so the page paints (and
  // answers) between them: a parallel-coordinates figure alone can take a second.
  var queue = [];
  var draining = false;
  function soon(callback) {
    // After the next frame is painted: a figure drawn is a figure shown.
    requestAnimationFrame(function () {
      setTimeout(callback, 0);
    });
  }
  function next() {
    var el = queue.shift();
    try {
      draw(el);
    } finally {
      draining = queue.length > 0;
      if (draining) soon(next);
    }
  }
  function drawSoon(el) {
    queue.push(el);
    if (draining) return;
    draining = true;
    withPlotly(function () {
      soon(next);
    });
  }

  var observer =
    plotlySrc && "IntersectionObserver" in window
      ? new IntersectionObserver(
          function (entries) {
            entries.forEach(function (entry) {
              if (!entry.isIntersecting) return;
              observer.unobserve(entry.target);
              drawSoon(entry.target);
            });
          },
          { rootMargin: AHEAD }
        )
      : null;

  // Once the page has loaded and the browser is idle, fetch and run plotly, so a figure
  // scrolled to later is drawn at once rather than after 4.6 MB of script.
  function prefetch() {
    if (!document.querySelector("[data-plotly]")) return;
    withPlotly(function () {});
  }
  if (observer) {
    window.addEventListener("load", function () {
      if (window.requestIdleCallback) requestIdleCallback(prefetch, { timeout: 2000 });
      else setTimeout(prefetch, 200);
    });
  }

  function drawAll() {
    document.querySelectorAll("[data-plotly]").forEach(function (el) {
      if (el.getAttribute("data-drawn") || el.getAttribute("data-watched")) return;
      if (observer) {
        el.setAttribute("data-watched", "1");
        observer.observe(el);
      } else {
        withPlotly(function () {
          draw(el);
        });
      }
    });
  }

  document.addEventListener("DOMContentLoaded", drawAll);
  document.addEventListener("htmx:afterSettle", drawAll);
  if (document.readyState !== "loading") drawAll();
})();
