/* Sort a table by a column: a click on the button in a `table.sortable th[data-sort]`
 * ("text" or "number") orders the body's rows by that column, then the other way on the
 * next click. A number comes from the cell's data-value (the exact figure, not the one
 * printed), text from the cell; cells without a value sort last either way, and equal ones
 * keep their order. The header says how it is sorted (aria-sort), for screen readers too.
 * The rows are the page's own: nothing is fetched. */
(function () {
  "use strict";

  function key(row, index, kind) {
    var cell = row.cells[index];
    if (!cell) return null;
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
    raw = raw.trim();
    if (raw === "") return null;
    if (kind !== "number") return raw;
    var number = parseFloat(raw);
    return isNaN(number) ? null : number;
  }

  function compare(a, b, kind) {
    if (kind === "number") return a - b;
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }

  function sortBy(header) {
    var table = header.closest("table");
    var body = table.tBodies[0];
    var index = header.cellIndex;
    var kind = header.getAttribute("data-sort");
    // First click: text A to Z, numbers highest first; then the other way.
    var current = header.getAttribute("aria-sort");
    var ascending = current ? current !== "ascending" : kind !== "number";
    var rows = Array.prototype.slice.call(body.rows).map(function (row, position) {
      return { row: row, position: position, key: key(row, index, kind) };
    });
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        if (a.key === b.key) return a.position - b.position;
        return a.key === null ? 1 : -1;
      }
      var order = compare(a.key, b.key, kind);
      if (order === 0) return a.position - b.position;
      return ascending ? order : -order;
    });
    rows.forEach(function (item) {
      body.appendChild(item.row);
    });
    table.querySelectorAll("th[aria-sort]").forEach(function (other) {
      other.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("table.sortable th[data-sort] button.sort");
    if (button) sortBy(button.closest("th"));
  });
})();
