// Small behaviours shared by every designer page (no inline scripts: the CSP forbids them).
(function () {
  "use strict";
  // Helpers the page scripts share (simulate.js, template.js...).
  window.Parcours = {
    // S[key] with {name} placeholders filled from `values`; the key itself when untranslated.
    format: function (S, key, values) {
      return (S[key] || key).replace(/\{(\w+)\}/g, function (all, name) {
        return values && name in values ? values[name] : all;
      });
    },
    // An element with attributes (`text` sets the text) and children (strings, nodes; falsy skipped).
    el: function (tag, attrs, children) {
      var node = document.createElement(tag);
      Object.keys(attrs || {}).forEach(function (k) {
        if (k === "text") node.textContent = attrs[k];
        else node.setAttribute(k, attrs[k]);
      });
      (children || []).forEach(function (c) {
        if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
      });
      return node;
    }
  };
  document.addEventListener("change", function (e) {
    var el = e.target;
    if (el.matches && el.matches("[data-autosubmit]") && el.form) el.form.requestSubmit();
  });
  document.addEventListener("submit", function (e) {
    var form = e.target, msg = form.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
})();
