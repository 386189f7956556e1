// KPI reports: daily charts from the page's data, and live counts polled from a small endpoint.
(function () {
  "use strict";
  var dataEl = document.getElementById("kpi-chart-data");
  if (!dataEl) return;
  var data = JSON.parse(dataEl.textContent);
  var lang = document.documentElement.lang || data.lang || "en";
  var fmt = new Intl.NumberFormat(lang, { maximumFractionDigits: 2 });
  var dayFmt = new Intl.DateTimeFormat(lang, { day: "numeric", month: "short", timeZone: "UTC" });
  var days = data.days.map(function (d) { return dayFmt.format(new Date(d + "T00:00:00Z")); });
  var colours = ["#4f6bed", "#2bb673", "#f5a623", "#d0021b", "#9013fe", "#50e3c2", "#8b572a"];

  function chart(id, config) {
    var el = document.getElementById(id);
    if (!el || !window.Chart) return;
    window.Chart.defaults.locale = lang;  // the axes' figures, written the page's way
    config.options = Object.assign({
      responsive: true, maintainAspectRatio: false, animation: { duration: 300 },
      plugins: { legend: { position: "bottom" }, tooltip: { mode: "index", intersect: false,
        callbacks: { label: function (c) { return c.dataset.label + ": " + fmt.format(c.parsed.y); } } } },
      scales: { y: { beginAtZero: true, ticks: { callback: function (v) { return fmt.format(v); } } } },
    }, config.options || {});
    new window.Chart(el, config);
  }
  var s = data.series, L = data.labels;
  chart("kpi-daily-chart", { type: "bar", data: { labels: days, datasets: [
    { label: L.entries, data: s.entries, backgroundColor: colours[0], yAxisID: "y" },
    { label: L.conversions, data: s.conversions, backgroundColor: colours[1], yAxisID: "y" },
    { label: L.revenue, data: s.revenue, type: "line", borderColor: colours[2], yAxisID: "money" },
    { label: L.cost, data: s.cost, type: "line", borderColor: colours[3], yAxisID: "money" },
  ] }, options: { scales: {
    y: { beginAtZero: true, position: "left" },
    money: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } } } } });
  var channels = Object.keys(data.channels);
  chart("kpi-sends-chart", { type: "bar", data: { labels: days, datasets: channels.map(function (c, i) {
    return { label: c, data: data.channels[c], backgroundColor: colours[i % colours.length] };
  }) }, options: { plugins: { title: { display: true, text: data.sendsLabel } },
    scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } } });

  var live = document.querySelector("[data-live-url]");
  if (!live) return;
  function refresh() {
    fetch(live.getAttribute("data-live-url"), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) return;
        Object.keys(body.counts).forEach(function (m) {
          var el = live.querySelector('[data-live="' + m + '"]');
          if (el) el.textContent = body.counts[m];
        });
        var at = document.querySelector("[data-live-at]");
        if (at) at.textContent = "(" + body.at + ")";
      })
      .catch(function () {});
  }
  refresh();
  setInterval(refresh, 1000 * Number(live.getAttribute("data-live-seconds") || 15));
})();
