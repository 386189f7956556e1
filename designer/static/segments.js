// The segment page: name, description and the condition builder edit a plain document; each
// edit (debounced) posts it with the file's text to /preview, which merges it into the text
// (only the changed lines move), lints it and counts the contacts it holds now. Save writes the
// last text, refused with 409 when the file changed on disk since the page loaded it.
(function () {
  "use strict";
  var node = document.getElementById("segment-data");
  if (!node) return;
  var data = JSON.parse(node.textContent), S = data.strings;
  var doc = data.doc || {}, text = data.yaml, hash = data.hash, dirty = false;
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var lang = document.documentElement.lang || "en";
  function $(sel) { return document.querySelector(sel); }
  function el(tag, cls, value) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (value != null) e.textContent = value;
    return e;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (b) { return { status: r.status, body: b }; },
        function () { return { status: r.status, body: { error: { message: S.save_failed } } }; });
    }, function () { return { status: 0, body: { error: { message: S.save_failed } } }; });
  }

  var status = $('[data-testid="save-status"]');
  function setStatus(cls, message) { status.className = "seg-status " + (cls || ""); status.textContent = message || ""; }

  // ------------------------------------------------------------------ what the page shows

  function showYaml() {
    var lines = text.split("\n");
    if (lines.length > 1 && lines[lines.length - 1] === "") lines.pop();
    $('[data-testid="yaml-text"]').textContent = lines.join("\n");
    $(".seg-yaml .ed-gutter").textContent = lines.map(function (l, i) { return i + 1; }).join("\n");
  }

  function showProblems(problems) {
    var list = $('[data-testid="problems"]');
    list.textContent = "";
    (problems || []).forEach(function (p) {
      var item = el("li", p.severity === "warning" ? "warning" : "error");
      var body = el("div");
      if (p.line) body.appendChild(el("span", "where", (p.line) + ":" + (p.column || 1)));
      body.appendChild(document.createTextNode(p.message + (p.hint ? " (" + p.hint + ")" : "")));
      item.appendChild(body);
      list.appendChild(item);
    });
    if (!list.children.length) list.appendChild(el("li", "ok", S.no_problems));
  }

  function showCount(r) {
    var count = $('[data-testid="live-count"]'), sample = $('[data-testid="live-sample"]');
    count.classList.remove("counting");
    count.textContent = "";
    if (r.count == null) count.textContent = "—";
    else {  // the number stands out: "<strong>2</strong> contacts match now"
      var words = (data.manual ? S.members_count : r.count === 1 ? S.match_one : S.match).split("{n}");
      count.appendChild(document.createTextNode(words[0]));
      count.appendChild(el("strong", null, Number(r.count).toLocaleString(lang)));
      count.appendChild(document.createTextNode(words.slice(1).join("{n}")));
    }
    $('[data-testid="live-reason"]').textContent = r.reason || "";
    sample.textContent = "";
    (r.sample || []).forEach(function (c) {
      var li = el("li"), a = el("a", null, c.id); a.href = c.url; li.appendChild(a); sample.appendChild(li);
    });
    if (r.count === 0) sample.appendChild(el("li", "muted small", data.manual ? S.no_members : S.no_sample));
  }

  // ------------------------------------------------------------------ live preview

  var timer = null, queued = false, seq = 0, pending = Promise.resolve();
  function refresh() {
    var mine = ++seq;
    queued = false;
    $('[data-testid="live-count"]').classList.add("counting");
    pending = post(data.urls.preview, { yaml: text, doc: doc }).then(function (r) {
      if (mine !== seq) return;
      if (typeof r.body.yaml === "string") { text = r.body.yaml; showYaml(); }
      if (r.body.error) { setStatus("error", r.body.error.message); return; }
      showProblems(r.body.problems);
      if (r.status === 200) showCount(r.body);
    });
    return pending;
  }
  function changed() {
    dirty = true;
    setStatus("dirty", S.unsaved);
    clearTimeout(timer);
    queued = true;
    timer = setTimeout(refresh, 300);
  }

  // ------------------------------------------------------------------ the form

  document.querySelectorAll(".seg-form [data-key]").forEach(function (box) {
    var key = box.getAttribute("data-key");
    box.value = typeof doc[key] === "string" ? doc[key] : "";
    box.addEventListener("input", function () {
      if (box.value || key === "name") doc[key] = box.value; else delete doc[key];
      if (key === "name") $('[data-testid="segment-name"]').textContent = box.value || data.id;
      changed();
    });
  });
  var container = $('[data-testid="builder"]');
  var builder = container && new window.ParcoursConditions.Builder(data, S.condition, draw);
  function draw() {
    container.textContent = "";
    builder.condition(container, "condition", doc, ["condition"], changed, "condition");
  }
  if (container) draw();

  // ------------------------------------------------------------------ saving

  var saveButton = $('[data-testid="save"]');
  function save() {
    if (!saveButton || saveButton.disabled) return;
    clearTimeout(timer);
    saveButton.disabled = true;
    setStatus("", S.saving);
    (queued ? refresh() : pending).then(function () {
      return post(data.urls.save, { yaml: text, hash: hash });
    }).then(function (r) {
      saveButton.disabled = false;
      if (r.status === 200) {
        hash = r.body.hash; dirty = false;
        showProblems(r.body.problems);
        setStatus(r.body.valid ? "saved" : "dirty", r.body.message);
      } else if (r.status === 409) {
        setStatus("conflict", r.body.error.message);
      } else {
        setStatus("error", (r.body.error && r.body.error.message) || S.save_failed);
      }
    });
  }
  if (saveButton) saveButton.addEventListener("click", save);
  document.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); save(); }
  });
  window.addEventListener("beforeunload", function (e) { if (dirty) { e.preventDefault(); e.returnValue = S.leave; } });

  showYaml();
  showProblems(data.problems);
  if (text) refresh(); else showCount({ count: null, reason: "" });
})();
