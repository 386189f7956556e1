// The Health card (templates/_pressure_health.html): each channel's daily rates as lines.
// The data comes from a <script type="application/json"> block: the CSP forbids inline scripts.
(function () {
  "use strict";

  var COLORS = {
    open_rate: "#4f46e5", click_rate: "#0e8fd6", unsubscribe_rate: "#e08a00",
    complaint_rate: "#d4334a", bounce_rate: "#6b7285", over_pressured: "#e5566b"
  };

  function draw() {
    var block = document.getElementById("health-data");
    if (!block || typeof Chart === "undefined") return;
    var data = JSON.parse(block.textContent);
    var lang = document.documentElement.lang || data.lang || "en";
    var fmt = new Intl.NumberFormat(lang, { maximumFractionDigits: 2 });
    var dayFmt = new Intl.DateTimeFormat(lang, { day: "numeric", month: "short", timeZone: "UTC" });
    Chart.defaults.locale = lang;
    data.cards.forEach(function (card) {
      var canvas = document.getElementById("chart-health-" + card.channel);
      if (!canvas) return;
      var sets = Object.keys(card.series).map(function (name) {
        return {
          label: data.labels[name], data: card.series[name], borderColor: COLORS[name],
          backgroundColor: COLORS[name], spanGaps: true, pointRadius: 0, borderWidth: 2,
          tension: 0.25, hidden: name === "over_pressured"
        };
      });
      new Chart(canvas, {
        type: "line",
        data: { labels: data.days.map(function (d) { return dayFmt.format(new Date(d + "T00:00:00Z")); }), datasets: sets },
        options: {
          animation: false,
          interaction: { mode: "index", intersect: false },
          scales: { y: { beginAtZero: true, ticks: { callback: function (v) { return fmt.format(v) + "%"; } } } },
          plugins: {
            legend: { position: "bottom" },
            tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + (c.raw === null ? "—" : fmt.format(c.raw) + "%"); } } }
          }
        }
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
