// Live status of the batch list: while any batch is open, ask /portal/batches.json every 2 s and update the
// rows in place. The page works without this script (reload it to see the status).
(function () {
  "use strict";
  var table = document.getElementById("batches");
  if (!table || table.dataset.live !== "True") { return; }
  var FIELDS = ["status", "success", "error", "anomaly", "ineligible"];

  function update(batches) {
    var open = false;
    batches.forEach(function (batch) {
      var row = document.getElementById("batch-" + batch.number);
      if (!row) { return; }
      FIELDS.forEach(function (field) {
        var cell = row.querySelector('[data-field="' + field + '"]');
        if (!cell) { return; }
        var value = field === "status" ? batch.status : (batch.counts[field] === undefined ? "" : String(batch.counts[field]));
        if (cell.textContent !== value) { cell.textContent = value; }  // textContent: never markup
      });
      open = open || batch.open;
    });
    return open;
  }

  function poll() {
    fetch("/portal/batches.json", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) { if (body && update(body.batches)) { window.setTimeout(poll, 2000); } })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 2000);
}());
