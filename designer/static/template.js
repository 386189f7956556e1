// The template editor: one text box per part, a preview rendered by the server as you type
// (the sandbox that sends), and saving with a conflict check. Words come translated from the
// page (config.strings); no inline script or handler (the CSP forbids them).
(function () {
  "use strict";
  var configEl = document.getElementById("template-config");
  if (!configEl) return;
  var C = JSON.parse(configEl.textContent), S = C.strings;
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var $ = function (id) { return document.getElementById(id); };
  var list = $("tpl-parts"), status = $("tpl-status"), saveButton = $("tpl-save");
  var previewBox = $("tpl-preview");
  var parts = {};            // part name → {box, area, issues, size}
  var hash = C.hash, channel = C.channel, bodyView = "html", lastFocus = null;
  var result = null, timer = null, sequence = 0, saved = "", shown = null;
  var encoder = new TextEncoder();

  function text(key, values) { return window.Parcours.format(S, key, values); }
  var el = window.Parcours.el;
  function names() { return C.allParts.concat(Object.keys(parts).filter(function (p) { return C.allParts.indexOf(p) < 0; })); }
  function current() {
    var out = {};
    names().forEach(function (p) { if (parts[p]) out[p] = parts[p].area.value; });
    return out;
  }
  function setStatus(message, kind) { status.textContent = message || ""; status.className = "tpl-status " + (kind || ""); }
  function isDirty() { return JSON.stringify(current()) !== saved; }
  function label(part) { return S["label." + part] || part; }
  function size(bytes) {
    return bytes < 1024 ? text("bytes", { n: bytes }) : text("kilobytes", { n: (bytes / 1024).toLocaleString(document.documentElement.lang, { maximumFractionDigits: 1 }) });
  }

  // --- parts ------------------------------------------------------------------------------------
  function addPart(name, value, focus) {
    var area = el("textarea", { "class": "code", spellcheck: name === "html" ? "false" : "true",
      rows: name === "html" ? 12 : name === "text" || name === "body" ? 6 : 1,
      id: "part-" + name, "data-part": name, "aria-describedby": "issues-" + name });
    area.value = value;
    if (C.readonly) area.readOnly = true;
    var sizeEl = el("span", { "class": "size" });
    var head = el("div", { "class": "part-head" }, [
      el("label", { "class": "name", "for": "part-" + name, text: label(name) }),
      el("span", { "class": "help", text: S["help." + name] || "" }), sizeEl,
    ]);
    if (!C.readonly) {
      var remove = el("button", { type: "button", "class": "danger", text: S.remove, "aria-label": S.remove + " " + label(name) });
      remove.addEventListener("click", function () { removePart(name); });
      head.appendChild(remove);
    }
    var issues = el("ul", { "class": "issues", id: "issues-" + name });
    var box = el("div", { "class": "part", "data-testid": "part-" + name }, [head, area, issues]);
    parts[name] = { box: box, area: area, issues: issues, size: sizeEl };
    var after = names().slice(names().indexOf(name) + 1).filter(function (p) { return parts[p] && p !== name; })[0];
    list.insertBefore(box, after ? parts[after].box : null);
    area.addEventListener("input", changed);
    area.addEventListener("focus", function () { lastFocus = area; });
    updateSize(name);
    if (focus) area.focus();
  }
  function removePart(name) {
    if (!window.confirm(text("removeConfirm", { part: label(name) }))) return;
    parts[name].box.remove();
    if (lastFocus === parts[name].area) lastFocus = null;
    delete parts[name];
    refreshAdd();
    changed();
  }
  function refreshAdd() {
    var select = $("tpl-add-part");
    if (!select) return;
    select.textContent = "";
    C.allParts.forEach(function (p) {
      if (!parts[p]) select.appendChild(el("option", { value: p, text: label(p), title: S["help." + p] || "" }));
    });
    $("tpl-add").hidden = select.options.length === 0;
  }
  function updateSize(name) {
    var bytes = encoder.encode(parts[name].area.value).length;
    parts[name].size.textContent = size(bytes);
    parts[name].size.style.color = bytes > C.maxBytes ? "var(--bad)" : "";
  }
  function changed(e) {
    if (e && e.target && e.target.dataset.part) updateSize(e.target.dataset.part);
    var dirty = isDirty();
    if (saveButton) saveButton.disabled = !dirty;
    setStatus(dirty ? S.unsaved : "", dirty ? "dirty" : "");
    schedule();
  }
  function goTo(name, line) {
    var area = parts[name] && parts[name].area;
    if (!area) return;
    var lines = area.value.split("\n"), start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    area.focus();
    area.setSelectionRange(start, start + (lines[line - 1] || "").length);
  }
  function showIssues(problems, errors) {
    Object.keys(parts).forEach(function (name) {
      var mine = (problems || []).filter(function (p) { return p.part === name; });
      var runtime = errors && errors[name];
      if (runtime && !mine.some(function (p) { return p.severity === "error"; })) {
        mine.push({ part: name, line: runtime.line, message: runtime.message, severity: "error" });
      }
      var box = parts[name].issues;
      box.textContent = "";
      mine.forEach(function (p) {
        var item = el("li", { "class": p.severity === "warning" ? "warning" : "" });
        if (p.line) {
          var link = el("button", { type: "button", "class": "link", text: text("line", { line: p.line }) });
          link.addEventListener("click", function () { goTo(name, p.line); });
          item.appendChild(link);
          item.appendChild(document.createTextNode(" · "));
        }
        item.appendChild(document.createTextNode(p.message));
        if (p.hint) item.appendChild(el("span", { "class": "hint", text: " — " + p.hint }));
        box.appendChild(item);
      });
      parts[name].area.setAttribute("aria-invalid", mine.some(function (p) { return p.severity === "error"; }) ? "true" : "false");
    });
  }

  // --- preview ----------------------------------------------------------------------------------
  function schedule() { clearTimeout(timer); timer = setTimeout(preview, 300); }
  function eventProperties() {
    var raw = $("tpl-event").value.trim();
    if (!raw) return {};
    try {
      var value = JSON.parse(raw);
      if (value && typeof value === "object" && !Array.isArray(value)) return value;
    } catch (ignored) { /* shown below */ }
    return null;
  }
  function preview() {
    var event = eventProperties(), mine = ++sequence;
    $("tpl-event").setAttribute("aria-invalid", event === null ? "true" : "false");
    previewBox.classList.add("busy");
    var body = { parts: current(), contact: $("tpl-contact").value.trim(), scenario: $("tpl-scenario").value, event: event || {} };
    request("POST", C.urls.preview, body).then(function (answer) {
      if (mine !== sequence) return;
      previewBox.classList.remove("busy");
      if (!answer.ok) {
        result = null;
        shown = null;
        previewBox.textContent = "";
        previewBox.appendChild(el("div", { "class": "error", text: (answer.body.error && answer.body.error.message) || S.failed }));
        return;
      }
      result = answer.body;
      result.sent = Object.keys(body.parts);
      if (event === null) result.badEvent = true;
      showIssues(result.problems, result.errors);
      draw();
    });
  }
  function request(method, url, body) {
    return fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) { return { ok: r.ok, status: r.status, body: b }; });
    }, function () { return { ok: false, status: 0, body: {} }; });
  }
  function missing(part) {
    var broken = result && result.errors && result.errors[part];
    return el("p", { "class": "muted plain", text: text(broken ? "brokenPart" : "noPart", { part: label(part) }) });
  }
  function emailView(r) {
    var p = r.parts, hasHtml = "html" in p, hasText = "text" in p, both = has("html") && has("text");
    var refs = { to: el("span"), subject: el("span", { "class": "subject", "data-testid": "preview-subject" }) };
    var head = el("div", { "class": "head" }, [
      el("div", {}, [el("span", { "class": "k", text: S.to }), refs.to]),
      el("div", {}, [el("span", { "class": "k", text: S.subject }), refs.subject]),
    ]);
    var box = el("div", { "class": "envelope" }, [head]);
    if (both) {
      var tabs = el("div", { "class": "mini-tabs", role: "group" });
      [["html", "HTML"], ["text", S.textTab]].forEach(function (t) {
        var b = el("button", { type: "button", "aria-pressed": String(bodyView === t[0]), text: t[1] });
        b.addEventListener("click", function () { bodyView = t[0]; shown = null; draw(); });
        tabs.appendChild(b);
      });
      box.appendChild(tabs);
    }
    if (bodyView === "html" && hasHtml) {
      // an empty sandbox: no script, no form, no navigation of this page
      refs.frame = el("iframe", { sandbox: "", title: S.htmlTitle, "data-testid": "preview-html" });
      box.appendChild(refs.frame);
    } else if (hasText) {
      refs.text = el("pre", { "data-testid": "preview-text" });
      box.appendChild(refs.text);
    } else {
      box.appendChild(missing("text"));
    }
    box.update = function (r) {
      refs.to.textContent = r.contact.email || r.contact.external_id;
      refs.subject.textContent = r.parts.subject || S.noSubject;
      if (refs.text) refs.text.textContent = r.parts.text;
      if (refs.frame) {
        var doc = '<!doctype html><meta charset="utf-8"><style>body{font:15px/1.55 system-ui,sans-serif;' +
          'color:#1f2333;margin:18px}img{max-width:100%}</style>' + r.parts.html;
        if (refs.frame.getAttribute("srcdoc") !== doc) refs.frame.setAttribute("srcdoc", doc);
      }
    };
    return box;
  }
  function smsView(r) {
    if (!("text" in r.parts)) return missing("text");
    var sms = r.sms, ucs = sms.encoding !== "GSM-7";
    var counter = el("div", { "class": "counter", "data-testid": "sms-counter" }, [
      el("span", { "class": "badge", text: text("characters", { n: sms.length }) }),
      el("span", { "class": "badge" + (ucs ? " warn" : ""), text: sms.encoding }),
      el("span", { "class": "badge" + (sms.segments > 1 ? " warn" : ""), text: text("segments", { n: sms.segments }) }),
      el("span", { "class": "muted small", text: text("perSegment", { n: sms.per_segment }) }),
      ucs ? el("span", { "class": "note", text: text("ucs2", { chars: (sms.outside || []).join(" ") }) }) : null,
    ]);
    return el("div", {}, [el("div", { "class": "phone" }, [el("div", { "class": "bubble", text: r.parts.text })]), counter]);
  }
  function notificationView(r) {
    var p = r.parts;
    if (!("title" in p) && !("body" in p)) return missing("body");
    return el("div", { "class": "notification" }, [el("div", { "class": "icon" }), el("div", {}, [
      el("div", { "class": "title", text: p.title || "" }), el("div", { text: p.body || p.text || "" }),
      p.url ? el("div", { "class": "url", text: p.url }) : null,
    ])]);
  }
  function has(part) { return !!(result && result.sent.indexOf(part) >= 0); }
  function draw() {
    if (!result) return;
    var r = result, errors = Object.keys(r.errors || {});
    var top = $("preview-top") || el("div", { id: "preview-top" });
    top.textContent = "";
    top.appendChild(el("div", { "class": "who-line" }, [
      document.createTextNode(text("renderedFor", { contact: r.contact.external_id })),
      r.contact.sample ? el("span", { "class": "pill", text: S.sample }) : null,
    ]));
    if (errors.length) {
      top.appendChild(el("div", { "class": "error render-errors", role: "alert" }, [el("ul", {}, errors.map(function (part) {
        var e = r.errors[part];
        return el("li", { text: label(part) + (e.line ? " · " + text("line", { line: e.line }) : "") + " — " + e.message });
      }))]));
    }
    if (r.badEvent) top.appendChild(el("div", { "class": "error", text: S.badEvent }));
    var p = r.parts;
    if (channel === "email") {
      if (!has("html")) bodyView = "text";
      else if (!has("text")) bodyView = "html";
    }
    // the email view is updated in place while its layout stays: the frame does not flash
    var key = [channel, bodyView, "html" in p, "text" in p, has("html"), has("text")].join("|");
    if (!(shown && shown.key === key && shown.node.update)) {
      var node = channel === "email" ? emailView(r)
        : channel === "sms" ? smsView(r)
        : channel === "push" || channel === "onsite" ? notificationView(r)
        : ("text" in p ? el("pre", { "class": "plain envelope", text: p.text }) : missing("text"));
      previewBox.textContent = "";
      previewBox.appendChild(top);
      previewBox.appendChild(node);
      shown = { key: key, node: node };
    }
    if (shown.node.update) shown.node.update(r);
  }
  function drawChannels() {
    var group = $("tpl-channels");
    group.textContent = "";
    C.channels.forEach(function (c) {
      var b = el("button", { type: "button", "aria-pressed": String(c.name === channel), text: c.label, "data-channel": c.name });
      b.addEventListener("click", function () { channel = c.name; shown = null; drawChannels(); draw(); });
      group.appendChild(b);
    });
  }

  // --- saving -----------------------------------------------------------------------------------
  function save() {
    if (!saveButton || saveButton.disabled) return;
    var sent = current();
    saveButton.disabled = true;
    setStatus(S.saving);
    request("PUT", C.urls.save, { parts: sent, hash: hash }).then(function (answer) {
      var b = answer.body;
      if (answer.ok) {
        hash = b.hash;
        saved = JSON.stringify(sent);
        showIssues(b.problems, null);
        setStatus(isDirty() ? S.unsaved : b.message || S.saved, isDirty() ? "dirty" : "ok");
      } else {
        if (b.problems) showIssues(b.problems, null);
        var message = answer.status === 409 ? S.conflict : (b.error && b.error.message) || S.failed;
        setStatus(message, "bad");
      }
      saveButton.disabled = !isDirty() && answer.ok;
    });
  }

  // --- start ------------------------------------------------------------------------------------
  Object.keys(C.parts).forEach(function (name) { addPart(name, C.parts[name], false); });
  saved = JSON.stringify(current());
  refreshAdd();
  drawChannels();
  C.contacts.forEach(function (id) { $("tpl-contacts").appendChild(el("option", { value: id })); });
  C.scenarios.forEach(function (s) { $("tpl-scenario").appendChild(el("option", { value: s.id, text: s.name })); });
  var chips = $("tpl-chips");
  if (chips) {
    ["contact.first_name", "contact.last_name", "contact.email"].concat(C.dataKeys.map(function (k) { return "data." + k; }))
      .forEach(function (name) {
        var chip = el("button", { type: "button", text: name });
        chip.addEventListener("mousedown", function (e) { e.preventDefault(); });  // keep the caret
        chip.addEventListener("click", function () {
          var area = lastFocus || (parts.text || parts[Object.keys(parts)[0]] || {}).area;
          if (!area) return;
          area.focus();
          area.setRangeText("{{ " + name + " }}", area.selectionStart, area.selectionEnd, "end");
          changed({ target: area });
        });
        chips.appendChild(chip);
      });
  }
  var addButton = $("tpl-add-button");
  if (addButton) addButton.addEventListener("click", function () {
    var name = $("tpl-add-part").value;
    if (!name || parts[name]) return;
    addPart(name, "", true);
    refreshAdd();
    changed();
  });
  if (saveButton) saveButton.addEventListener("click", save);
  document.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); save(); }
  });
  window.addEventListener("beforeunload", function (e) {
    if (!C.readonly && isDirty()) { e.preventDefault(); e.returnValue = S.leave; }
  });
  ["tpl-contact", "tpl-scenario", "tpl-event"].forEach(function (id) {
    $(id).addEventListener(id === "tpl-scenario" ? "change" : "input", schedule);
  });
  // a template reading the event shows blanks without one: offer the sample event at once
  if (Object.keys(C.parts).some(function (p) { return /\bevent\./.test(C.parts[p]); })) {
    $("tpl-event").closest("details").open = true;
  }
  preview();
})();
