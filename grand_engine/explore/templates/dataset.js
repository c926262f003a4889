/* grand-engine explorer, dataset page: search the images shown by label or caption text, filter the error rows
 * by error type. Every image and error row is already in the page (data-* attributes); this only hides the ones
 * that do not match, so it works from file:// with no server. window.grandDataset exposes both for tests.
 */
(function () {
  "use strict";

  var hits = Array.prototype.slice.call(document.querySelectorAll("#search-results li.hit"));
  var errorRows = Array.prototype.slice.call(document.querySelectorAll("#error-table tr.error-row"));
  var searchBox = document.getElementById("search");
  var typeSelect = document.getElementById("error-type");

  function where() {
    var checked = document.querySelector("input[name='search-in']:checked");
    return checked ? checked.value : "labels";
  }

  // A label matches when one of the image's labels contains the query; caption text when any caption does.
  function matches(li, query, field) {
    if (!query) return true;
    var labels = (li.getAttribute("data-labels") || "").split("\n");
    var inLabels = labels.some(function (label) { return label.indexOf(query) >= 0; });
    var inText = (li.getAttribute("data-text") || "").indexOf(query) >= 0;
    return field === "labels" ? inLabels : field === "captions" ? inText : inLabels || inText;
  }

  function search(query, field) {
    var q = (query || "").trim().toLowerCase();
    var shown = [];
    hits.forEach(function (li) {
      var ok = matches(li, q, field || "labels");
      li.hidden = !ok;
      if (ok) shown.push(li.getAttribute("data-image-id"));
    });
    document.getElementById("search-count").textContent = shown.length + " of " + hits.length + " images";
    return shown;
  }

  function filterErrors(type) {
    var n = 0;
    errorRows.forEach(function (tr) {
      var ok = !type || tr.getAttribute("data-type") === type;
      tr.hidden = !ok;
      if (ok) n++;
    });
    document.getElementById("error-count").textContent = n + " of " + errorRows.length + " rows listed";
    return n;
  }

  function update() { search(searchBox.value, where()); }
  searchBox.addEventListener("input", update);
  document.querySelectorAll("input[name='search-in']").forEach(function (r) { r.addEventListener("change", update); });
  typeSelect.addEventListener("change", function () { filterErrors(typeSelect.value); });
  update();
  filterErrors(typeSelect.value);
  window.grandDataset = { search: search, filterErrors: filterErrors };
  document.body.setAttribute("data-dataset-ready", "1");
})();
