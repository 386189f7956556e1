// Contacts and pressure pages: timeline filters and the dashboard's charts.
// The data comes from a <script type="application/json"> block: the CSP forbids inline scripts.
(function () {
  "use strict";

  var CHANNEL_COLORS = {
    "*": "#151936", email: "#4f46e5", sms: "#0e8fd6", push: "#7c5cff", onsite: "#0f9d6b",
    mail: "#c77700", call: "#d4334a", webhook: "#6b7285"
  };
  var STATE_COLORS = { under: "#7fb6ea", equilibrium: "#34c28a", over: "#e5566b" };
  var REASON_COLORS = {
    consent: "#d4334a", suppression: "#b4233a", address: "#9aa0b5", cap: "#e08a00",
    quiet: "#7c5cff", blackout: "#4c3fa8", pressure: "#e5566b", spacing: "#0e8fd6"
  };
  var EXTRA = ["#14b8a6", "#f59e0b", "#ec4899", "#84cc16", "#64748b"];

  function short(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function colorOf(channel, i) {
    return CHANNEL_COLORS[channel] || EXTRA[i % EXTRA.length];
  }

  // ------------------------------------------------------------ timeline filter
  function timelineFilter() {
    var bar = document.querySelector("[data-timeline-filter]");
    if (!bar) return;
    bar.hidden = false;
    bar.addEventListener("click", function (e) {
      var chip = e.target.closest(".chip");
      if (!chip) return;
      chip.classList.toggle("on");
      chip.setAttribute("aria-pressed", chip.classList.contains("on") ? "true" : "false");
      var shown = {};
      bar.querySelectorAll(".chip").forEach(function (c) { shown[c.dataset.type] = c.classList.contains("on"); });
      document.querySelectorAll(".feed .item").forEach(function (li) { li.hidden = !shown[li.dataset.type]; });
    });
    bar.querySelectorAll(".chip").forEach(function (c) { c.setAttribute("aria-pressed", "true"); });
  }

  // ------------------------------------------------------------ dashboard
  function dashboard() {
    var block = document.getElementById("pressure-data");
    if (!block || typeof Chart === "undefined") return;
    var data = JSON.parse(block.textContent);
    var lang = document.documentElement.lang || data.lang || "en";
    var fmt = new Intl.NumberFormat(lang);
    var labels = data.labels;

    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.font.size = 12;
    Chart.defaults.color = "#6b7285";
    Chart.defaults.borderColor = "#eceef4";
    Chart.defaults.plugins.legend.labels.usePointStyle = true;
    Chart.defaults.plugins.legend.labels.boxWidth = 8;
    Chart.defaults.plugins.tooltip.backgroundColor = "#151936";
    Chart.defaults.plugins.tooltip.padding = 10;
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.locale = lang;

    barometerChart(data, labels);
    sendsChart(data, labels, fmt, lang);
    reasonsChart(data, labels);
  }

  function barometerChart(data, labels) {
    var canvas = document.getElementById("chart-barometer");
    if (!canvas) return;
    var b = data.barometer;
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: b.channels.map(function (c) { return labels.channels[c] || c; }),
        datasets: b.states.map(function (s) {
          return {
            label: labels.states[s],
            data: b.channels.map(function (c) { return b.counts[c][s]; }),
            backgroundColor: STATE_COLORS[s],
            borderRadius: 4, borderSkipped: false, barPercentage: 0.7
          };
        })
      },
      options: {
        indexAxis: "y",
        scales: {
          x: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: labels.contacts } },
          y: { stacked: true, grid: { display: false } }
        },
        plugins: { legend: { position: "bottom" } }
      }
    });
  }

  function sendsChart(data, labels, fmt, lang) {
    var canvas = document.getElementById("chart-sends");
    if (!canvas) return;
    var s = data.sends;
    var dayFmt = new Intl.DateTimeFormat(lang, { day: "numeric", month: "short", timeZone: "UTC" });
    var days = s.days.map(function (d) { return dayFmt.format(new Date(d + "T12:00:00Z")); });
    var peak = Math.max.apply(null, s.totals.concat([1]));
    var datasets = s.channels.map(function (c, i) {
      return {
        type: "bar", label: labels.channels[c] || c, data: s.series[c], stack: "sends",
        backgroundColor: colorOf(c, i), borderRadius: 3, order: 2
      };
    });
    s.caps.forEach(function (cap, i) {
      var marketing = cap.channels.indexOf("marketing") >= 0;
      var color = marketing || cap.channels.length !== 1 ? "#151936" : colorOf(cap.channels[0], i);
      datasets.push({
        type: "line", label: labels.ceiling.replace("%(cap)s", cap.id),
        data: s.days.map(function () { return Math.round(cap.ceiling * 10) / 10; }),
        borderColor: color, backgroundColor: color, borderDash: [6, 5], borderWidth: 2,
        pointRadius: 0, pointHoverRadius: 0, pointStyle: "line", fill: false, order: 1,
        stack: "cap-" + i, // its own stack: a ceiling never piles on the bars
        // A ceiling far above the volumes would flatten the bars: it starts hidden.
        hidden: cap.ceiling > peak * 4
      });
    });
    new Chart(canvas, {
      data: { labels: days, datasets: datasets },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: labels.sends } }
        },
        plugins: {
          legend: { position: "bottom", labels: { sort: function (a, b) { return a.datasetIndex - b.datasetIndex; } } },
          tooltip: {
            callbacks: {
              label: function (ctx) { return " " + ctx.dataset.label + ": " + fmt.format(ctx.parsed.y); }
            }
          }
        }
      }
    });
  }

  function reasonsChart(data, labels) {
    var canvas = document.getElementById("chart-reasons");
    if (!canvas || !data.reasons.length) return;
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.reasons.map(function (r) { return r.label; }),
        datasets: [{
          label: labels.blocked,
          data: data.reasons.map(function (r) { return r.count; }),
          backgroundColor: data.reasons.map(function (r) {
            return REASON_COLORS[r.reason.split(":")[0]] || "#6b7285";
          }),
          borderRadius: 4, barPercentage: 0.75
        }]
      },
      options: {
        indexAxis: "y",
        scales: {
          x: { beginAtZero: true, ticks: { precision: 0 } },
          y: {
            grid: { display: false },
            ticks: {
              autoSkip: false,
              callback: function (value) { return short(this.getLabelForValue(value), 30); }
            }
          }
        },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { afterLabel: function (ctx) { return data.reasons[ctx.dataIndex].reason; } } }
        }
      }
    });
  }

  timelineFilter();
  dashboard();
})();
