// Live view: the scenario's canvas, read only, with the per-step counts on the nodes.
(function () {
  "use strict";
  var el = document.getElementById("canvas");
  var data = JSON.parse(document.getElementById("canvas-data").textContent);
  if (!el || !window.ParcoursCanvas || !data.doc || !data.doc.steps) { if (el) el.hidden = true; return; }
  var canvas = window.ParcoursCanvas.mount(el, {
    doc: data.doc, nodeTypes: data.nodeTypes, readonly: true, fit: true, strings: data.strings || {}
  });
  canvas.showCounts(data.counts || {});
})();
