// The simulation page: posts the form as JSON, then draws the answer without a reload.
// Texts come translated from the page (config.strings); no inline script (the CSP forbids it).
(function () {
  "use strict";
  var configEl = document.getElementById("simulate-config");
  var form = document.getElementById("simulate-form");
  if (!configEl || !form) return;
  var config = JSON.parse(configEl.textContent);
  var S = JSON.parse(document.getElementById("simulate-strings").textContent);
  var lang = document.documentElement.lang || "en";
  var number = new Intl.NumberFormat(lang);
  var percent = new Intl.NumberFormat(lang, { style: "percent", maximumFractionDigits: 1 });
  var signed = new Intl.NumberFormat(lang, { signDisplay: "exceptZero" });
  var dayLabel = new Intl.DateTimeFormat(lang, { day: "numeric", month: "short", timeZone: "UTC" });
  var COLORS = { email: "#4f46e5", sms: "#0f9d6b", push: "#c77700", call: "#0e8fd6", mail: "#7c5cff", onsite: "#d4334a" };
  var SPARE = ["#64748b", "#db2777", "#0891b2", "#65a30d"];
  var charts = {};
  var canvas = null;
  var $ = function (id) { return document.getElementById(id); };
  var button = $("simulate-run"), status = $("simulate-status"), results = $("simulate-results");

  function text(key, values) { return window.Parcours.format(S, key, values); }
  var el = window.Parcours.el;
  function ratio(part, whole) { return whole ? percent.format(part / whole) : "–"; }
  function humanRule(reason) {
    var parts = reason.split(":"), name = S["rule." + parts[0]];
    return name ? name + (parts.length > 1 ? " · " + parts.slice(1).join(":") : "") : reason;
  }
  function humanOutcome(key) {
    var parts = key.split(":"), name = S["outcome." + parts[0]] || parts[0];
    return parts.length > 1 ? name + " · " + parts.slice(1).join(" · ") : name;
  }

  // --- the form -------------------------------------------------------------------------------
  function syncPopulation() {
    var sample = form.elements.population.value === "sample";
    form.querySelectorAll("[data-show=sample]").forEach(function (n) { n.hidden = !sample; });
  }
  form.addEventListener("change", syncPopulation);
  syncPopulation();

  function options() {
    var f = form.elements, body = {
      population: f.population.value,
      contacts: Number(f.contacts.value),
      sample: f.sample.value,
      days: Number(f.days.value),
      policy: f.policy.checked,
      alone: f.alone.checked,
      seed: Number(f.seed.value),
    };
    if (f.start.value) body.start = f.start.value;
    return body;
  }
  function clearErrors() {
    form.querySelectorAll(".field-error").forEach(function (n) { n.remove(); });
    form.querySelectorAll("[aria-invalid]").forEach(function (n) { n.removeAttribute("aria-invalid"); });
  }
  function showError(error) {
    status.replaceChildren(el("div", { class: "error", role: "alert", text: error.message || S.failed }));
    var input = error.field && form.elements[error.field];
    if (input && input.setAttribute) {
      input.setAttribute("aria-invalid", "true");
      input.insertAdjacentElement("afterend", el("span", { class: "field-error", text: error.message }));
      if (input.closest("details")) input.closest("details").open = true;
      input.focus();
    }
    if (error.problems && error.problems.length) {
      status.firstChild.appendChild(el("ul", { class: "problems" }, error.problems.map(function (p) {
        return el("li", { text: (p.line ? p.line + ": " : "") + p.message });
      })));
    }
  }

  function outOfRange() {
    var wrong = null;
    ["contacts", "days", "seed"].forEach(function (name) {
      var input = form.elements[name], value = Number(input.value);
      var low = Number(input.min), high = Number(input.max);
      if (!wrong && (input.value === "" || !Number.isInteger(value) || value < low || value > high)) {
        wrong = { field: name, message: text("range", { low: number.format(low), high: number.format(high) }) };
      }
    });
    return wrong;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearErrors();
    var wrong = outOfRange();
    if (wrong) { showError(wrong); return; }
    var began = Date.now();
    var tick = function () {
      status.replaceChildren(el("span", { class: "spinner", "aria-hidden": "true" }),
        el("span", { text: text("running", { s: Math.round((Date.now() - began) / 1000) }) }));
    };
    tick();
    var timer = window.setInterval(tick, 1000);
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    fetch(config.url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRF-Token": document.querySelector("meta[name=csrf-token]").content,
      },
      body: JSON.stringify(options()),
    })
      .then(function (response) {
        return response.json().then(function (data) { return { ok: response.ok, data: data }; },
          function () { return { ok: false, data: { error: { message: S.failed } } }; });
      })
      .then(function (answer) {
        if (answer.ok) render(answer.data);
        else showError(answer.data.error || {});
      }, function () { showError({ message: S.network }); })
      .finally(function () {
        window.clearInterval(timer);
        button.disabled = false;
        form.removeAttribute("aria-busy");
      });
  });

  // --- the answer -----------------------------------------------------------------------------
  function render(data) {
    var o = data.options, t = data.totals;
    status.replaceChildren(el("span", { text: text("done", {
      contacts: number.format(data.contacts), days: number.format(o.days),
      start: data.start_label, s: number.format(data.elapsed),
    }) }));
    $("simulate-empty").hidden = true;
    results.hidden = false;
    setTile("entered", t.entered, t.not_entered ? text("notEntered", { n: number.format(t.not_entered) })
      : text("ofPopulation", { p: ratio(t.entered, data.contacts) }));
    setTile("converted", t.converted, text("ofEntered", { p: ratio(t.converted, t.entered) }));
    setTile("sent", t.sent, text("perDay", { n: number.format(Math.round(t.sent / Math.max(o.days, 1))) }));
    setTile("removed", t.removed, o.policy ? text("delayed", { n: number.format(t.delayed), m: number.format(t.rerouted) })
      : S.policyOff);
    renderSteps(data.steps);
    renderSends(data.sends);
    renderOutcomes(data.outcomes, data.not_entered);
    renderPolicy(data.policy, o.policy);
    renderCompetition(data.competition, t, o.alone);
  }
  function setTile(name, value, sub) {
    results.querySelector("[data-total=" + name + "]").textContent = number.format(value);
    results.querySelector("[data-sub=" + name + "]").textContent = sub;
  }

  function renderSteps(steps) {
    var most = Math.max.apply(null, steps.map(function (s) { return s.reached; }).concat([1]));
    $("steps-table").tBodies[0].replaceChildren.apply($("steps-table").tBodies[0], steps.map(function (s) {
      var bar = el("span");
      bar.style.width = (100 * s.reached / most).toFixed(1) + "%";
      var name = el("td", {}, [el("strong", { text: s.label })]);
      if (s.label !== s.id) name.appendChild(el("code", { text: " " + s.id }));
      return el("tr", {}, [
        name,
        el("td", {}, [el("span", { class: "steptype", text: s.type_label || s.type })]),
        el("td", { class: "num", text: number.format(s.reached) }),
        el("td", {}, [el("div", { class: "bar", "aria-hidden": "true" }, [bar])]),
        el("td", { class: "num", text: number.format(s.waiting) }),
        el("td", { class: "num", text: number.format(s.ended) }),
      ]);
    }));
    var box = $("simulate-canvas");
    if (!window.ParcoursCanvas || !config.nodeTypes) return;
    try {
      if (!canvas) {
        box.hidden = false;
        canvas = window.ParcoursCanvas.mount(box, { doc: config.doc, nodeTypes: config.nodeTypes, readonly: true, fit: true, strings: config.canvasStrings || {} });
      }
      var counts = {};
      steps.forEach(function (s) {
        counts[s.id] = {};
        counts[s.id][S.reached] = s.reached;
        if (s.waiting) counts[s.id][S.waitingShort] = s.waiting;
      });
      canvas.clearCounts();
      canvas.showCounts(counts);
    } catch (err) {  // the table above already says everything the canvas would
      box.hidden = true;
      if (window.console) console.warn("canvas unavailable", err);
    }
  }

  function chart(id, options) {
    if (charts[id]) charts[id].destroy();
    window.Chart.defaults.locale = lang;
    charts[id] = new window.Chart($(id), options);
  }
  function baseOptions() {
    return {
      responsive: true, maintainAspectRatio: false, animation: { duration: 300 },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12, boxHeight: 12, usePointStyle: true } },
        tooltip: { mode: "index", intersect: false } },
    };
  }

  function renderSends(sends) {
    var channels = Object.keys(sends.channels), labels = sends.days.map(function (d) { return dayLabel.format(new Date(d + "T00:00:00Z")); });
    var table = $("sends-table");
    var box = $("sends-chart").parentNode;
    box.querySelectorAll(".empty").forEach(function (n) { n.remove(); });
    if (!channels.length) {
      if (charts["sends-chart"]) { charts["sends-chart"].destroy(); delete charts["sends-chart"]; }
      box.appendChild(el("div", { class: "empty", text: S.noSends }));
      table.replaceChildren();
      return;
    }
    var options = baseOptions();
    options.scales = { x: { stacked: true, grid: { display: false } }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } };
    chart("sends-chart", {
      type: "bar",
      data: { labels: labels, datasets: channels.map(function (ch, i) {
        return { label: ch, data: sends.channels[ch], backgroundColor: COLORS[ch] || SPARE[i % SPARE.length], borderRadius: 3, maxBarThickness: 28 };
      }) },
      options: options,
    });
    var head = el("tr", {}, [el("th", { text: S.day })].concat(channels.map(function (ch) { return el("th", { class: "num", text: ch }); })));
    var rows = sends.days.map(function (d, i) {
      return el("tr", {}, [el("td", { text: labels[i] })].concat(channels.map(function (ch) {
        return el("td", { class: "num", text: number.format(sends.channels[ch][i]) });
      })));
    });
    table.replaceChildren(el("thead", {}, [head]), el("tbody", {}, rows));
  }

  function renderOutcomes(outcomes, notEntered) {
    var rows = Object.keys(outcomes).sort(function (a, b) { return outcomes[b] - outcomes[a]; }).map(function (k) {
      return el("tr", {}, [el("td", { text: humanOutcome(k) }), el("td", { class: "num", text: number.format(outcomes[k]) })]);
    });
    Object.keys(notEntered).forEach(function (reason) {
      rows.push(el("tr", {}, [el("td", { class: "muted", text: S.notEnteredRow + " · " + reason }),
        el("td", { class: "num", text: number.format(notEntered[reason]) })]));
    });
    $("outcomes-table").tBodies[0].replaceChildren.apply($("outcomes-table").tBodies[0], rows);
  }

  function renderPolicy(policy, applied) {
    var box = $("policy-chart-box"), body = $("policy-table").tBodies[0];
    box.querySelectorAll(".empty").forEach(function (n) { n.remove(); });
    body.replaceChildren.apply(body, policy.map(function (p) {
      return el("tr", {}, [
        el("td", {}, [document.createTextNode(humanRule(p.reason) + " "), el("code", { text: p.reason })]),
        el("td", { class: "num", text: number.format(p.removed) }),
        el("td", { class: "num", text: number.format(p.delayed) }),
        el("td", { class: "num", text: number.format(p.rerouted) }),
      ]);
    }));
    if (!policy.length) {
      if (charts["policy-chart"]) { charts["policy-chart"].destroy(); delete charts["policy-chart"]; }
      box.style.height = "";
      box.appendChild(el("div", { class: "empty", text: applied ? S.noPolicy : S.policyOff }));
      return;
    }
    box.style.height = Math.max(180, 38 * policy.length + 70) + "px";
    var options = baseOptions();
    options.indexAxis = "y";
    options.scales = { x: { stacked: true, beginAtZero: true, ticks: { precision: 0 } }, y: { stacked: true, grid: { display: false } } };
    var series = [["removed", S.removed, "#d4334a"], ["delayed", S.delayedShort, "#e0a030"], ["rerouted", S.rerouted, "#0e8fd6"]];
    chart("policy-chart", {
      type: "bar",
      data: { labels: policy.map(function (p) { return humanRule(p.reason); }), datasets: series.map(function (s) {
        return { label: s[1], data: policy.map(function (p) { return p[s[0]]; }), backgroundColor: s[2], borderRadius: 3, maxBarThickness: 22 };
      }) },
      options: options,
    });
  }

  // What the other journeys took: the run with them against the run alone, rule by rule.
  function renderCompetition(c, totals, asked) {
    var note = $("competition-note"), tables = $("competition-tables"), leftOut = $("left-out");
    leftOut.hidden = !c.left_out.length;
    leftOut.textContent = c.left_out.length ? text("leftOut", { list: c.left_out.map(function (j) {
      return j.name + " (" + (S["status." + j.status] || j.status) + ")";
    }).join(", ") }) : "";
    tables.hidden = c.alone;
    if (c.alone) { note.textContent = asked ? S.ranAlone : S.noRivals; return; }
    var alone = c.alone_totals;
    note.textContent = text("withOthers", { alone: number.format(alone.sent), sent: number.format(totals.sent) });
    var rivals = $("rivals-table").tBodies[0], lost = $("lost-table").tBodies[0];
    rivals.replaceChildren.apply(rivals, c.journeys.map(function (j) {
      return el("tr", {}, [
        el("td", {}, [el("strong", { text: j.name }), el("div", { class: "hint", text: S["source." + j.source] || j.source })]),
        el("td", { class: "num", text: number.format(j.entered) }),
        el("td", { class: "num", text: number.format(j.sent) }),
        el("td", { class: "num", text: number.format(j.removed + j.delayed + j.rerouted) }),
      ]);
    }));
    function row(label, code, together, byItself) {
      var name = el("td", {}, [document.createTextNode(label + " ")]);
      if (code) name.appendChild(el("code", { text: code }));
      return el("tr", {}, [name, el("td", { class: "num", text: number.format(together) }),
        el("td", { class: "num", text: number.format(byItself) }),
        el("td", { class: "num", text: signed.format(together - byItself) })]);
    }
    var rows = [row(S.sentRow, "", totals.sent, alone.sent)];
    var verbs = [["removed", S.removed], ["delayed", S.delayedShort], ["rerouted", S.rerouted]];
    c.reasons.forEach(function (r) {
      verbs.forEach(function (v) {
        if (r[v[0]] !== r["alone_" + v[0]]) rows.push(row(v[1] + " · " + humanRule(r.reason), r.reason, r[v[0]], r["alone_" + v[0]]));
      });
    });
    if (!c.reasons.length) rows.push(el("tr", {}, [el("td", { colspan: "4", class: "muted", text: S.sameAlone })]));
    lost.replaceChildren.apply(lost, rows);
  }

  if (window.Chart) {
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    window.Chart.defaults.color = "#6b7285";
  }
})();
