// The inspector: a form for the selected step, generated from its type's JSON Schema (sent by
// the server from the node-type registry), and the scenario panel when nothing is selected.
// Edits call ctx.onChange(newValue, key); `key` lets the page merge keystrokes into one undo step.
(function () {
  "use strict";

  var DURATION = "#/$defs/duration", CONDITION = "#/$defs/condition", FILTERS = "#/$defs/filters";
  var uid = 0;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function isObj(v) { return v != null && typeof v === "object" && !Array.isArray(v); }
  function clone(v) { return v == null ? v : JSON.parse(JSON.stringify(v)); }
  function unwrap(prop) {
    if (!prop || !prop.anyOf) return { prop: prop || {}, nullable: false };
    var inner = prop.anyOf.filter(function (p) { return p.type !== "null"; })[0] || {};
    var out = Object.assign({}, inner, { description: prop.description, default: prop.default });
    if (prop["x-edge"]) out["x-edge"] = true;
    return { prop: out, nullable: true };
  }
  function kindOf(prop) {
    if (prop["x-edge"]) return "edge";
    if (prop.$ref === DURATION) return "duration";
    if (prop.$ref === CONDITION) return "condition";
    if (prop.$ref === FILTERS) return "filters";
    if (prop.enum) return "enum";
    if (prop.type === "array") {
      var items = prop.items || {};
      if (items.pattern && /mM\]\[oO/.test(items.pattern)) return "weekdays";
      if (items.type === "object" && items.properties) return "list";
      return "strings";
    }
    if (prop.type === "object" && prop.properties) return "object";
    if (prop.type === "object") return prop.propertyNames && prop.propertyNames.enum ? "parts" : "map";
    if (prop.type === "integer" || prop.type === "number") return "number";
    if (prop.type === "boolean") return "bool";
    if (prop.type === "string" && prop.pattern && prop.pattern.indexOf(":([0-5]") >= 0) return "time";
    return "text";
  }
  // Text typed in a key/value or condition value box: numbers, booleans and JSON stay typed.
  function parseValue(text) {
    var t = text.trim();
    if (t === "true" || t === "false") return t === "true";
    if (t !== "" && !isNaN(Number(t)) && /^-?[\d.]+$/.test(t)) return Number(t);
    if (/^[[{]/.test(t)) { try { return JSON.parse(t); } catch (e) { /* text as typed */ } }
    return text;
  }
  function showValue(v) { return v == null ? "" : typeof v === "string" ? v : JSON.stringify(v); }
  function datalist(id, values) {
    var list = document.getElementById(id);
    if (list) return id;
    list = el("datalist"); list.id = id;
    (values || []).forEach(function (v) { var o = el("option"); o.value = v; list.appendChild(o); });
    document.body.appendChild(list);
    return id;
  }

  // A labelled row; `testid` names the control for browser tests.
  function row(parent, label, help, control, testid) {
    var wrap = el("label", "in-field");
    var head = el("span", "in-label", label);
    wrap.appendChild(head);
    wrap.appendChild(control);
    if (testid) control.setAttribute("data-testid", "field-" + testid);
    if (help) wrap.appendChild(el("span", "in-help", help));
    parent.appendChild(wrap);
    return wrap;
  }
  function input(value, onInput, opts) {
    opts = opts || {};
    var i = el(opts.multiline ? "textarea" : "input");
    if (!opts.multiline) i.type = opts.type || "text";
    if (opts.placeholder) i.placeholder = opts.placeholder;
    if (opts.list) i.setAttribute("list", opts.list);
    if (opts.pattern) i.pattern = opts.pattern;
    i.value = value == null ? "" : String(value);
    i.addEventListener("input", function () { onInput(i.value, i); });
    return i;
  }
  function select(options, value, onChange) {
    var s = el("select");
    options.forEach(function (o) {
      var opt = el("option", null, o[1]); opt.value = o[0];
      if (String(o[0]) === String(value == null ? "" : value)) opt.selected = true;
      s.appendChild(opt);
    });
    s.addEventListener("change", function () { onChange(s.value); });
    return s;
  }
  function button(text, cls, onClick, testid) {
    var b = el("button", cls, text); b.type = "button";
    b.addEventListener("click", onClick);
    if (testid) b.setAttribute("data-testid", testid);
    return b;
  }

  // ------------------------------------------------------------------ the form builder

  function Builder(ctx, root, rebuild) {
    this.ctx = ctx; this.root = root; this.rebuild = rebuild;
    this.s = ctx.boot.strings;
  }

  // A field's label and help, translated by the server (the node type's `fields`), by its key:
  // `duration`, or `cases.next` for a field of a list item; the raw name when unknown.
  Builder.prototype.info = function (path) {
    var key = path.filter(function (p) { return typeof p === "string"; }).join(".");
    var fields = (this.ctx.nodeType && this.ctx.nodeType.fields) || {};
    return fields[key] || { label: String(path[path.length - 1]), help: "" };
  };

  // One field of `target` (an object edited in place); `path` is the undo key.
  Builder.prototype.field = function (parent, target, name, rawProp, path, changed) {
    var self = this, u = unwrap(rawProp), prop = u.prop, kind = kindOf(prop), value = target[name];
    var testid = path.join("-");
    function set(v) {
      if (v === "" || v == null) { if (u.nullable || prop.default !== undefined || kind === "edge") delete target[name]; else target[name] = v == null ? "" : v; }
      else target[name] = v;
      changed(path.join("."));
    }
    var info = self.info(path), label = info.label, help = info.help || prop.description || "";
    if (kind === "edge") {
      var options = [["", "— " + self.s.end + " —"]].concat(self.ctx.stepIds.map(function (id) { return [id, id]; }));
      return row(parent, label, help, select(options, value, function (v) { set(v || null); }), testid);
    }
    if (kind === "enum") {
      var opts = (u.nullable ? [["", self.s.none]] : []).concat(prop.enum.map(function (v) { return [v, v]; }));
      return row(parent, label, help, select(opts, value == null ? prop.default : value, function (v) { set(v); }), testid);
    }
    if (kind === "number") {
      return row(parent, label, help, input(value == null ? "" : value, function (v) { set(v === "" ? null : Number(v)); }, { type: "number" }), testid);
    }
    if (kind === "bool") {
      var c = el("input"); c.type = "checkbox"; c.checked = !!value;
      c.addEventListener("change", function () { set(c.checked); });
      return row(parent, label, help, c, testid);
    }
    if (kind === "duration") {
      return row(parent, label, help || self.s.duration_hint,  // the registry's help has an example
        input(value, function (v, i) {
          i.classList.toggle("in-bad", v !== "" && !/^\s*-?(\d+\s*[smhdw]\s*)+$|^\d+$/.test(v));
          set(/^\d+$/.test(v) ? Number(v) : v);
        }, { placeholder: "2d" }), testid);
    }
    if (kind === "time") {
      return row(parent, label, self.s.time_hint, input(value, function (v) { set(v); }, { placeholder: "09:00" }), testid);
    }
    if (kind === "weekdays") return this.weekdays(parent, label, value, set, testid, help);
    if (kind === "strings") {
      return row(parent, label, help, input(Array.isArray(value) ? value.join(", ") : "", function (v) {
        var list = v.split(",").map(function (x) { return x.trim(); }).filter(Boolean);
        set(list.length ? list : (prop.default !== undefined || u.nullable ? null : []));
      }, { placeholder: "a, b" }), testid);
    }
    if (kind === "condition") return this.condition(parent, name, target, path, changed, testid);
    if (kind === "filters") return this.filters(parent, name, target, path, changed, testid);
    if (kind === "map" || kind === "parts") return this.map(parent, name, target, prop, path, changed, testid, help);
    if (kind === "list") return this.list(parent, name, target, prop, path, changed, testid);
    if (kind === "object") return this.object(parent, name, target, prop, path, changed, testid, help, u.nullable);
    var listId = null;
    if (/^(event)$/.test(name)) listId = datalist("dl-events", self.ctx.boot.events);
    if (/^(attribute|anniversary)$/.test(name)) listId = datalist("dl-attributes", self.ctx.boot.attributes);
    if (/^(channel|fallback)$/.test(name)) {
      var channels = (u.nullable ? [["", self.s.none]] : []).concat(self.ctx.boot.channels.map(function (c) { return [c.name, c.label]; }));
      if (value && !self.ctx.boot.channels.some(function (c) { return c.name === value; })) channels.push([value, value]);
      return row(parent, label, help, select(channels, value, function (v) { set(v || null); }), testid);
    }
    if (name === "template") listId = datalist("dl-templates", self.ctx.boot.templates);
    if (name === "scenario") listId = datalist("dl-scenarios", self.ctx.boot.scenarios);
    var long = typeof value === "string" && (value.length > 40 || value.indexOf("\n") >= 0);
    return row(parent, label, help, input(value, function (v) { set(v); }, { list: listId, multiline: long }), testid);
  };

  Builder.prototype.weekdays = function (parent, label, value, set, testid, help) {
    var days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], names = this.s.weekdays.split(" ");
    var chosen = (Array.isArray(value) ? value : []).map(function (d) { return String(d).slice(0, 3).toLowerCase(); });
    var box = el("div", "in-chips");
    days.forEach(function (d, i) {
      var b = button(names[i] || d, "in-chip" + (chosen.indexOf(d) >= 0 ? " on" : ""), function () {
        var at = chosen.indexOf(d);
        if (at >= 0) chosen.splice(at, 1); else chosen.push(d);
        chosen.sort(function (a, b2) { return days.indexOf(a) - days.indexOf(b2); });
        b.classList.toggle("on", at < 0);
        set(chosen.length ? chosen.slice() : null);
      });
      b.setAttribute("aria-pressed", chosen.indexOf(d) >= 0 ? "true" : "false");
      box.appendChild(b);
    });
    return row(parent, label, help, box, testid);
  };

  // Key/value rows (set, payload) or part/text rows (content: keys from the schema's enum).
  Builder.prototype.map = function (parent, name, target, prop, path, changed, testid, help) {
    var self = this, keys = prop.propertyNames && prop.propertyNames.enum;
    var box = el("div", "in-map");
    var entries = Object.keys(isObj(target[name]) ? target[name] : {}).map(function (k) { return [k, target[name][k]]; });
    function write() {
      var out = {};
      entries.forEach(function (e) { if (e[0]) out[e[0]] = keys ? String(e[1]) : e[1]; });
      if (Object.keys(out).length) target[name] = out; else delete target[name];
      changed(path.join("."));
    }
    function draw() {
      box.textContent = "";
      entries.forEach(function (e, i) {
        var line = el("div", "in-map-row" + (keys ? " in-parts" : ""));
        var k = keys
          ? select([["", "…"]].concat(keys.map(function (x) { return [x, x]; })), e[0], function (v) { e[0] = v; write(); })
          : input(e[0], function (v) { e[0] = v; write(); }, { placeholder: self.s.key });
        var v = input(keys ? e[1] : showValue(e[1]), function (t) { e[1] = keys ? t : parseValue(t); write(); },
          { placeholder: self.s.value, multiline: !!keys });
        v.setAttribute("data-testid", "field-" + testid + "-" + (e[0] || i));
        line.appendChild(k); line.appendChild(v);
        line.appendChild(button("×", "in-x", function () { entries.splice(i, 1); write(); draw(); }));
        box.appendChild(line);
      });
      var add = button("+ " + self.s.add, "in-add", function () {
        var free = keys ? keys.filter(function (x) { return !entries.some(function (e) { return e[0] === x; }); })[0] || "" : "";
        entries.push([free, ""]); if (free) write(); draw();
      });
      box.appendChild(add);
    }
    draw();
    return row(parent, this.info(path).label, help, box, testid);
  };

  // A nested block (a split step's experiment): its own fields in a box; a field set back to its
  // default is dropped, and an empty block disappears from the file. A block whose presence means
  // something (the bandit: `bandit: {}` turns it on) gets an on/off box instead.
  Builder.prototype.object = function (parent, name, target, prop, path, changed, testid, help, optional) {
    var self = this, obj = isObj(target[name]) ? target[name] : {};
    var box = el("div", "in-item"), fields = el("div");
    if (optional) {
      var on = el("input"); on.type = "checkbox"; on.checked = isObj(target[name]);
      on.setAttribute("data-testid", "field-" + testid + "-on");
      on.addEventListener("change", function () {
        if (on.checked) target[name] = obj; else delete target[name];
        fields.hidden = !on.checked;
        changed(path.join("."));
      });
      box.appendChild(on);
      fields.hidden = !on.checked;
    }
    Object.keys(prop.properties).forEach(function (key) {
      var sub = prop.properties[key];
      self.field(fields, obj, key, sub, path.concat([key]), function (undoKey) {
        var d = unwrap(sub).prop.default;
        if (d !== undefined && JSON.stringify(obj[key]) === JSON.stringify(d)) delete obj[key];
        if (optional || Object.keys(obj).length) target[name] = obj; else delete target[name];
        changed(undoKey);
      });
    });
    box.appendChild(fields);
    var wrap = el("div", "in-field");  // not a label: it holds several controls
    wrap.appendChild(el("span", "in-label", self.info(path).label));
    wrap.appendChild(box);
    if (help) wrap.appendChild(el("span", "in-help", help));
    wrap.setAttribute("data-testid", "field-" + testid);
    parent.appendChild(wrap);
    return wrap;
  };

  // cases / branches: a card per item with its own fields, add and remove.
  Builder.prototype.list = function (parent, name, target, prop, path, changed, testid) {
    var self = this, items = prop.items, box = el("div", "in-list");
    if (!Array.isArray(target[name])) target[name] = [];
    target[name].forEach(function (item, i) {
      var card = el("div", "in-item");
      var head = el("div", "in-item-head", (name === "cases" ? self.s.case : self.s.branch) + " " + (i + 1));
      head.appendChild(button("×", "in-x", function () {
        target[name].splice(i, 1); changed(path.join(".") + ".remove"); self.rebuild();
      }, "remove-" + name + "-" + i));
      card.appendChild(head);
      Object.keys(items.properties).forEach(function (key) {
        self.field(card, item, key, items.properties[key], path.concat([i, key]), changed);
      });
      box.appendChild(card);
    });
    box.appendChild(button("+ " + (name === "cases" ? self.s.case : self.s.branch), "in-add", function () {
      var item = {};
      (items.required || []).forEach(function (k) {
        var p = items.properties[k] || {};
        item[k] = p.$ref === CONDITION ? { attribute: "", op: "eq", value: "" } : p.type === "integer" ? 10 : String.fromCharCode(97 + target[name].length);
      });
      target[name].push(item); changed(path.join(".") + ".add"); self.rebuild();
    }, "add-" + name));
    var wrap = el("div", "in-field");
    wrap.appendChild(el("span", "in-label", self.info(path).label));
    wrap.appendChild(box);
    wrap.setAttribute("data-testid", "field-" + testid);
    parent.appendChild(wrap);
    return wrap;
  };

  Builder.prototype.filters = function (parent, name, target, path, changed, testid) {
    var self = this, ops = this.ctx.boot.operators, box = el("div", "in-map");
    var list = Array.isArray(target[name]) ? target[name] : [];
    function write() { if (list.length) target[name] = list; else delete target[name]; changed(path.join(".")); }
    function draw() {
      box.textContent = "";
      list.forEach(function (f, i) {
        var line = el("div", "in-rule");
        line.appendChild(input(f.property, function (v) { f.property = v; write(); }, { placeholder: "property" }));
        line.appendChild(select(ops.map(function (o) { return [o, o]; }), f.op || "eq", function (v) { f.op = v; write(); }));
        line.appendChild(input(showValue(f.value), function (v) { f.value = parseValue(v); write(); }, { placeholder: self.s.value }));
        line.appendChild(button("×", "in-x", function () { list.splice(i, 1); write(); draw(); }));
        box.appendChild(line);
      });
      box.appendChild(button("+ " + self.s.add, "in-add", function () { list.push({ property: "", op: "eq", value: "" }); write(); draw(); }));
    }
    draw();
    return row(parent, self.info(path).label, self.info(path).help || null, box, testid);
  };

  // ------------------------------------------------------------------ conditions

  // condition, group and rule: the builder shared with the Segments page (conditions.js)
  window.ParcoursConditions.mixin(Builder.prototype);

  // ------------------------------------------------------------------ panels

  function stepPanel(container, ctx) {
    var s = ctx.boot.strings, t = ctx.nodeType, step = clone(ctx.step) || {};
    container.textContent = "";
    var rebuild = function () { stepPanel(container, Object.assign({}, ctx, { step: clone(step) })); };
    var b = new Builder(ctx, container, rebuild);
    var head = el("div", "in-head in-" + (t ? t.category : "unknown"));
    head.appendChild(el("span", "in-dot"));
    head.appendChild(el("strong", null, t ? t.label : step.type));
    container.appendChild(head);
    if (t) container.appendChild(el("p", "in-about", t.help));
    var form = el("fieldset", "in-form");
    form.disabled = !!ctx.readonly;
    var idInput = input(ctx.id, function () {}, { pattern: "[A-Za-z0-9][A-Za-z0-9_\\-]*" });
    var idError = el("span", "in-error");
    idInput.addEventListener("change", function () {
      var err = ctx.onRename(idInput.value.trim());
      idError.textContent = err || "";
      idInput.classList.toggle("in-bad", !!err);
    });
    var idRow = row(form, s.step_id, null, idInput, "id");
    idRow.appendChild(idError);
    var changed = function (key) { ctx.onChange(step, key); };
    if (t) {
      Object.keys(t.schema.properties).forEach(function (name) {
        if (name === "type") return;
        b.field(form, step, name, t.schema.properties[name], [name], changed);
      });
      Object.keys(step).forEach(function (name) {
        if (name !== "type" && !(name in t.schema.properties)) form.appendChild(el("p", "in-help", name + ": " + s.not_in_schema));
      });
    }
    container.appendChild(form);
    if (typeof step.template === "string" && /^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(step.template)) {
      var link = el("a", "in-template-link", s.edit_template + " → " + step.template);
      link.href = "/templates/" + encodeURIComponent(step.template);
      link.target = "_blank";
      link.rel = "noopener";
      link.setAttribute("data-testid", "edit-template");
      container.appendChild(link);
    }
    if (ctx.onPreview && (step.type === "send" || step.type === "webhook")) container.appendChild(previewBox(ctx));
    if (!ctx.readonly) {
      container.appendChild(button(s.delete_step, "danger in-delete", function () { ctx.onDelete(); }, "delete-step"));
    }
  }

  function previewBox(ctx) {
    var s = ctx.boot.strings, box = el("div", "in-preview");
    box.appendChild(el("div", "in-label", s.preview));
    var who = input("", function () {}, { placeholder: s.contact_id });
    who.setAttribute("data-testid", "preview-contact");
    var out = el("div", "in-preview-out");
    out.setAttribute("data-testid", "preview-out");
    var go = button(s.preview, "", function () {
      out.textContent = "…";
      ctx.onPreview(who.value.trim()).then(function (r) {
        out.textContent = "";
        if (r.error) { out.appendChild(el("div", "in-error", r.error.message)); return; }
        (r.errors || []).forEach(function (m) { out.appendChild(el("div", "in-error", m)); });
        Object.keys(r.parts || {}).forEach(function (part) {
          out.appendChild(el("div", "in-part-name", part));
          out.appendChild(el("pre", "in-part", r.parts[part]));
        });
        if (r.sms) {
          var meta = el("div", "in-sms", r.sms.encoding + " · " + r.sms.length + " " + s.characters + " · " + r.sms.segments + " " + (r.sms.segments === 1 ? s.segment : s.segments));
          meta.setAttribute("data-testid", "sms-meta");
          out.appendChild(meta);
        }
      });
    }, "preview");
    var line = el("div", "in-preview-row"); line.appendChild(who); line.appendChild(go);
    box.appendChild(line); box.appendChild(out);
    return box;
  }

  // ------------------------------------------------------------------ who enters, what counts
  // The entry block (triggers, entry rules, audience, kind and topic) and the goal/exit panel.
  // Each control carries `data-path`, the problem `field` it edits (`triggers.0.event`), so the
  // lint's problems show on the field itself (markProblems).

  var TRIGGER_KINDS = ["event", "schedule", "anniversary", "segment_entered", "segment_exited", "manual"];
  var CRON_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
  var TIME = /^([01]?\d|2[0-3]):([0-5]\d)$/;
  var DURATION_TEXT = /^\s*-?(\d+\s*[smhdw]\s*)+$|^\d+$/;

  function triggerKind(tr) {
    if (!isObj(tr)) return null;
    return TRIGGER_KINDS.filter(function (k) { return k in tr; })[0] || null;
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  // A cron expression read as the friendly form edits it: every day/week/month at a time.
  function parseCron(expr) {
    var m = /^\s*(\d{1,2})\s+(\d{1,2})\s+(\S+)\s+\*\s+(\S+)\s*$/.exec(expr || "");
    if (!m || +m[1] > 59 || +m[2] > 23) return { freq: "cron" };
    var out = { at: pad(+m[2]) + ":" + pad(+m[1]) }, day = m[4].toLowerCase();
    if (m[3] === "*" && day === "*") out.freq = "day";
    else if (m[3] === "*" && /^[0-7]$/.test(day)) { out.freq = "week"; out.weekday = CRON_DAYS[+day % 7]; }
    else if (m[3] === "*" && CRON_DAYS.indexOf(day) >= 0) { out.freq = "week"; out.weekday = day; }
    else if (/^\d{1,2}$/.test(m[3]) && +m[3] >= 1 && +m[3] <= 31 && day === "*") { out.freq = "month"; out.day = +m[3]; }
    else out.freq = "cron";
    return out;
  }
  function formatCron(c) {
    var t = TIME.exec(c.at || "") || [null, "9", "0"], head = (+t[2]) + " " + (+t[1]);
    if (c.freq === "week") return head + " * * " + (c.weekday || "mon");
    if (c.freq === "month") return head + " " + (c.day || 1) + " * *";
    return head + " * * *";
  }
  function freshTrigger(kind, boot) {
    if (kind === "schedule") return { schedule: "0 9 * * *", timezone: boot.timezone || "UTC" };
    if (kind === "anniversary") return { anniversary: "birthday", at: "09:00" };
    if (kind === "segment_entered" || kind === "segment_exited") { var t = {}; t[kind] = (boot.segments || [])[0] || ""; return t; }
    if (kind === "manual") return { manual: true };
    return { event: "" };
  }
  function conditionKind(c) {
    if (c == null) return "everyone";
    if (isObj(c) && Object.keys(c).length === 1 && typeof c.segment === "string") return "segment";
    return "conditions";
  }

  // One line per trigger, for the canvas block and the scenario panel.
  function triggerText(tr, s) {
    s = s || {};
    var kind = triggerKind(tr);
    if (kind === "event") {
      var n = Array.isArray(tr.where) ? tr.where.length : 0;
      return "⚡ " + (tr.event || "…") + (n ? " · " + n + " " + (n === 1 ? s.filter || "filter" : s.filters || "filters") : "");
    }
    if (kind === "schedule") {
      var c = parseCron(tr.schedule), at = c.at || "", day = c.weekday ? weekdayName(c.weekday, s) : "";
      var when = c.freq === "day" ? (s.every_day || "every day") + " " + at
        : c.freq === "week" ? (s.every_week || "every week") + " · " + day + " " + at
        : c.freq === "month" ? (s.every_month || "every month") + " · " + c.day + " · " + at
        : "cron " + tr.schedule;
      return "◷ " + when + " · " + (tr.timezone || "UTC");
    }
    if (kind === "anniversary") return "✦ " + (s.anniversary_of || "anniversary of") + " " + tr.anniversary + (tr.offset && tr.offset !== "0s" ? " " + tr.offset : "") + (tr.at ? " · " + tr.at : "");
    if (kind === "segment_entered") return "◎ " + (s.enters || "enters") + " " + tr.segment_entered;
    if (kind === "segment_exited") return "◌ " + (s.leaves || "leaves") + " " + tr.segment_exited;
    if (kind === "manual") return "✋ " + (s.manual || "manual");
    return JSON.stringify(tr);
  }
  function weekdayName(day, s) {
    var names = (s.weekdays || "mon tue wed thu fri sat sun").split(" ");
    var i = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].indexOf(day);
    return names[i] || day;
  }
  function entryText(entry, s) {
    var e = isObj(entry) ? entry : {}, r = e.reentry || "never";
    if (r === "cooldown") return "↻ " + (s.reentry_cooldown || "again after") + " " + (e.cooldown || "…");
    return "↻ " + (r === "always" ? s.reentry_always || "every time" : s.reentry_never || "once");
  }
  function audienceText(c, s) {
    var kind = conditionKind(c);
    if (kind === "everyone") return "◉ " + (s.everyone || "everyone");
    if (kind === "segment") return "◉ " + (s.member_of || "member of") + " " + c.segment;
    return "◉ " + ((window.ParcoursCanvas && window.ParcoursCanvas.conditionText(c)) || "…");
  }
  function exitText(rule, s) {
    if (isObj(rule) && typeof rule.segment_exited === "string") return (s.leaves || "leaves") + " " + rule.segment_exited;
    if (isObj(rule) && "event" in rule) return "⚡ " + (rule.event || "…");
    return JSON.stringify(rule);
  }

  function section(parent, title, path) {
    var box = el("div", "in-section");
    box.appendChild(el("div", "in-section-title", title));
    if (path) box.setAttribute("data-path", path);
    parent.appendChild(box);
    return box;
  }
  function at(wrap, path) { wrap.setAttribute("data-path", path); return wrap; }
  function segmentSelect(boot, value, onChange) {
    var ids = (boot.segments || []).slice();
    if (value && ids.indexOf(value) < 0) ids.push(value);
    return select([["", "— " + boot.strings.choose + " —"]].concat(ids.map(function (i) { return [i, i]; })), value || "", onChange);
  }
  function fieldsFor(s) {
    var f = {};
    ["triggers", "goal", "exit_on"].forEach(function (k) { f[k + ".where"] = { label: s.event_filters, help: "" }; });
    f.audience = { label: s.conditions, help: "" };
    return f;
  }

  function triggerCard(list, i, ctx, changed, rebuild, b) {
    var s = ctx.boot.strings, boot = ctx.boot, tr = list[i], kind = triggerKind(tr), p = "triggers." + i;
    var card = at(el("div", "in-item in-trigger-card"), p);
    card.setAttribute("data-testid", "trigger-" + i);
    var head = el("div", "in-item-head");
    var kinds = TRIGGER_KINDS.map(function (k) { return [k, s["trigger_" + k]]; });
    if (!kind) kinds.unshift(["", "…"]);
    var pick = select(kinds, kind || "", function (v) { list[i] = freshTrigger(v, boot); changed("trigger-kind"); rebuild(); });
    pick.setAttribute("data-testid", "field-trigger-" + i + "-kind");
    pick.classList.add("in-kind");
    head.appendChild(pick);
    head.appendChild(button("×", "in-x", function () { list.splice(i, 1); changed("trigger-remove"); rebuild(); }, "remove-trigger-" + i));
    card.appendChild(head);
    var id = "trigger-" + i + "-";
    if (kind === "event") {
      at(row(card, s.event_name, null, input(tr.event, function (v, box) {
        tr.event = v; box.classList.toggle("in-bad", !v.trim()); changed(id + "event");
      }, { list: datalist("dl-events", boot.events), placeholder: "order_placed" }), id + "event"), p + ".event");
      at(b.filters(card, "where", tr, ["triggers", i, "where"], function () { changed(id + "where"); }, id + "where"), p + ".where");
    } else if (kind === "schedule") {
      scheduleFields(card, tr, p, id, ctx, changed, rebuild);
    } else if (kind === "anniversary") {
      at(row(card, s.date_attribute, null, input(tr.anniversary, function (v) { tr.anniversary = v; changed(id + "anniversary"); },
        { list: datalist("dl-attributes", boot.attributes), placeholder: "birthday" }), id + "anniversary"), p + ".anniversary");
      var two = el("div", "in-two");
      at(row(two, s.offset, s.offset_hint, input(tr.offset, function (v, box) {
        box.classList.toggle("in-bad", v !== "" && !DURATION_TEXT.test(v));
        if (v) tr.offset = v; else delete tr.offset; changed(id + "offset");
      }, { placeholder: "-1d" }), id + "offset"), p + ".offset");
      at(row(two, s.at_time, null, input(tr.at, function (v, box) {
        box.classList.toggle("in-bad", v !== "" && !TIME.test(v));
        if (v) tr.at = v; else delete tr.at; changed(id + "at");
      }, { placeholder: "09:00" }), id + "at"), p + ".at");
      card.appendChild(two);
    } else if (kind === "segment_entered" || kind === "segment_exited") {
      at(row(card, s.segment_label, kind === "segment_entered" ? s.segment_entered_help : s.segment_exited_help,
        segmentSelect(boot, tr[kind], function (v) { tr[kind] = v; changed(id + "segment"); }), id + "segment"), p + "." + kind);
    } else if (kind === "manual") {
      card.appendChild(el("p", "in-help", s.manual_help));
    } else {
      var raw = el("code", "in-raw", JSON.stringify(tr)); raw.title = s.not_in_schema;
      card.appendChild(raw);
    }
    return card;
  }

  function scheduleFields(card, tr, p, id, ctx, changed, rebuild) {
    var s = ctx.boot.strings, c = parseCron(tr.schedule);
    function write() { tr.schedule = formatCron(c); cronBox.value = tr.schedule; changed(id + "schedule"); }
    var freq = select([["day", s.every_day], ["week", s.every_week], ["month", s.every_month], ["cron", s.cron_custom]], c.freq, function (v) {
      if (v !== "cron") { c = Object.assign(parseCron(tr.schedule), { freq: v }); if (!c.at) c.at = "09:00"; tr.schedule = formatCron(c); }
      else c = { freq: "cron" };
      changed(id + "frequency"); rebuild();
    });
    at(row(card, s.repeat, null, freq, id + "frequency"), p + ".schedule");
    var cronBox = input(tr.schedule, function (v) { tr.schedule = v; changed(id + "schedule"); }, { placeholder: "0 9 * * mon" });
    cronBox.classList.add("code");
    if (c.freq !== "cron") {
      var two = el("div", "in-two");
      if (c.freq === "week") {
        var names = s.weekdays.split(" "), days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        row(two, s.day, null, select(days.map(function (d, k) { return [d, names[k] || d]; }), c.weekday, function (v) { c.weekday = v; write(); }), id + "weekday");
      } else if (c.freq === "month") {
        var nums = []; for (var d = 1; d <= 31; d++) nums.push([d, String(d)]);
        row(two, s.day_of_month, null, select(nums, c.day, function (v) { c.day = +v; write(); }), id + "monthday");
      }
      row(two, s.at_time, null, input(c.at, function (v, box) {
        var ok = TIME.test(v); box.classList.toggle("in-bad", !ok);
        if (ok) { c.at = v; write(); }
      }, { placeholder: "09:00" }), id + "at");
      card.appendChild(two);
      var shown = el("div", "in-help in-cron", "cron ");
      cronBox.readOnly = true; cronBox.tabIndex = -1;
      shown.appendChild(cronBox); cronBox.setAttribute("data-testid", "field-" + id + "schedule");
      card.appendChild(shown);
    } else {
      row(card, s.cron_label, s.cron_help, cronBox, id + "schedule");
    }
    var zones = (ctx.boot.timezones || []).slice(), zone = tr.timezone || "UTC";
    if (zones.indexOf(zone) < 0) zones.unshift(zone);
    at(row(card, s.timezone, null, select(zones.map(function (z) { return [z, z]; }), zone, function (v) {
      if (v === "UTC" && !("timezone" in tr)) return;
      tr.timezone = v; changed(id + "timezone");
    }), id + "timezone"), p + ".timezone");
  }

  function entryRules(form, doc, ctx, changed, rebuild) {
    var s = ctx.boot.strings, box = section(form, s.entry_rules, "entry");
    var entry = isObj(doc.entry) ? doc.entry : {};
    function write(key) {
      var out = {};
      Object.keys(entry).forEach(function (k) { if (entry[k] != null) out[k] = entry[k]; });
      if (out.reentry !== "cooldown") delete out.cooldown;
      var keys = Object.keys(out);
      if (!keys.length || (keys.length === 1 && out.reentry === "never" && !isObj(ctx.doc.entry))) delete doc.entry;
      else doc.entry = out;
      changed(key);
    }
    var reentry = entry.reentry || "never";
    at(row(box, s.reentry, null, select([["never", s.reentry_never_long], ["always", s.reentry_always_long], ["cooldown", s.reentry_cooldown_long]], reentry, function (v) {
      entry.reentry = v;
      if (v === "cooldown" && !entry.cooldown) entry.cooldown = "30d";
      write("reentry"); rebuild();
    }), "reentry"), "entry.reentry");
    if (reentry === "cooldown") {
      at(row(box, s.cooldown, s.duration_hint, input(entry.cooldown, function (v, i) {
        i.classList.toggle("in-bad", !DURATION_TEXT.test(v));
        entry.cooldown = /^\d+$/.test(v) ? Number(v) : v; write("cooldown");
      }, { placeholder: "30d" }), "cooldown"), "entry.cooldown");
    }
    var c = el("input"); c.type = "checkbox"; c.checked = !!entry.concurrent;
    c.addEventListener("change", function () { if (c.checked) entry.concurrent = true; else delete entry.concurrent; write("concurrent"); });
    var line = at(row(box, s.concurrent, null, c, "concurrent"), "entry.concurrent");
    line.classList.add("in-check");
  }

  function audienceSection(form, doc, ctx, changed, rebuild, b) {
    var s = ctx.boot.strings, box = section(form, s.audience, "audience"), mode = conditionKind(doc.audience);
    box.appendChild(el("p", "in-help", s.audience_help));
    var seg = el("div", "in-seg in-seg-wide");
    [["everyone", s.everyone_cap], ["segment", s.a_segment], ["conditions", s.conditions]].forEach(function (m) {
      seg.appendChild(button(m[1], mode === m[0] ? "on" : "", function () {
        if (m[0] === mode) return;
        if (m[0] === "everyone") delete doc.audience;
        else if (m[0] === "segment") doc.audience = { segment: (ctx.boot.segments || [])[0] || "" };
        else doc.audience = { attribute: "", op: "eq", value: "" };
        changed("audience-mode"); rebuild();
      }, "audience-mode-" + m[0]));
    });
    box.appendChild(seg);
    if (mode === "segment") {
      at(row(box, s.segment_label, null, segmentSelect(ctx.boot, doc.audience.segment, function (v) {
        doc.audience = { segment: v }; changed("audience");
      }), "audience-segment"), "audience.segment");
    } else if (mode === "conditions") {
      at(b.condition(box, "audience", doc, ["audience"], function () { changed("audience"); }, "audience"), "audience");
    }
    var count = el("div", "in-count");
    count.setAttribute("data-testid", "audience-count");
    box.appendChild(count);
    showCount(box, ctx.count, s);
  }

  // The live count under the audience: "N contacts match now", or why it cannot be counted.
  function showCount(container, r, s) {
    var box = container.querySelector('[data-testid="audience-count"]');
    if (!box) return;
    s = s || {};
    box.textContent = ""; box.className = "in-count";
    if (!r) { box.textContent = s.counting || "…"; box.classList.add("in-count-wait"); return; }
    if (r.error) { box.appendChild(el("span", "in-error", r.error.message)); box.classList.add("in-count-bad"); return; }
    if (r.count == null) { box.appendChild(el("span", null, r.reason || "")); box.classList.add("in-count-none"); return; }
    var big = el("strong", null, Number(r.count).toLocaleString());
    box.appendChild(big);
    box.appendChild(document.createTextNode(" " + (r.count === 1 ? s.contact_matches : s.contacts_match)));
    if (r.sample && r.sample.length) box.appendChild(el("div", "in-sample", s.for_example + " " + r.sample.slice(0, 5).join(", ")));
  }

  function sendingSection(form, doc, ctx, changed, rebuild) {
    var s = ctx.boot.strings, box = section(form, s.sending, null), topics = ctx.boot.topics || {};
    at(row(box, s.kind, s.kind_help, select([["marketing", s.kind_marketing], ["transactional", s.kind_transactional]], doc.kind || "marketing", function (v) {
      if (v === "marketing" && !("kind" in ctx.doc)) delete doc.kind; else doc.kind = v;
      changed("kind");
    }), "kind"), "kind");
    // a topic the policy does not list is typed in; choosing "Other…" writes nothing until then
    var known = Object.keys(topics), other = (doc.topic != null && known.indexOf(doc.topic) < 0) || !!ctx.otherTopic;
    var opts = [["", s.none]].concat(known.map(function (t) { return [t, topics[t] + " (" + t + ")"]; })).concat([["__other", s.other_topic]]);
    var wrap = at(row(box, s.topic_label, s.topic_help, select(opts, other ? "__other" : doc.topic || "", function (v) {
      if (v === "__other") { rebuild({ otherTopic: true }); return; }
      if (v) doc.topic = v; else delete doc.topic;
      changed("topic"); if (other) rebuild({ otherTopic: false });
    }), "topic"), "topic");
    if (other) {
      var free = input(known.indexOf(doc.topic) < 0 ? doc.topic : "", function (v) {
        if (v.trim()) doc.topic = v.trim(); else delete doc.topic;
        changed("topic");
      }, { placeholder: "loyalty" });
      free.setAttribute("data-testid", "field-topic-other");
      wrap.appendChild(free);
    }
  }

  function entryPanel(container, ctx) {
    var s = ctx.boot.strings, doc = clone(ctx.doc) || {};
    container.textContent = "";
    var rebuild = function (extra) { entryPanel(container, Object.assign({}, ctx, extra || {}, { doc: clone(doc) })); };
    var b = new Builder(Object.assign({}, ctx, { nodeType: { fields: fieldsFor(s) }, stepIds: [] }), container, rebuild);
    var head = el("div", "in-head in-entry");
    head.appendChild(el("span", "in-dot"));
    head.appendChild(el("strong", null, s.entry_block));
    container.appendChild(head);
    container.appendChild(el("p", "in-about", s.entry_about));
    var form = el("fieldset", "in-form");
    form.disabled = !!ctx.readonly;
    form.setAttribute("data-testid", "entry-panel");
    function changed(key) { ctx.onChange(doc, key); }
    var box = section(form, s.triggers, "triggers");
    if (!Array.isArray(doc.triggers)) doc.triggers = [];
    doc.triggers.forEach(function (tr, i) { box.appendChild(triggerCard(doc.triggers, i, ctx, changed, rebuild, b)); });
    box.appendChild(button("+ " + s.add_trigger, "in-add", function () {
      doc.triggers.push({ event: "" }); changed("trigger-add"); rebuild();
    }, "add-trigger"));
    entryRules(form, doc, ctx, changed, rebuild);
    audienceSection(form, doc, ctx, changed, rebuild, b);
    sendingSection(form, doc, ctx, changed, rebuild);
    container.appendChild(form);
    markProblems(container, ctx.problems || []);
  }

  function exitCard(list, i, ctx, changed, rebuild, b) {
    var s = ctx.boot.strings, rule = list[i], p = "exit_on." + i, id = "exit-" + i + "-";
    var kind = isObj(rule) && "segment_exited" in rule ? "segment_exited" : isObj(rule) && "event" in rule ? "event" : null;
    var card = at(el("div", "in-item"), p);
    card.setAttribute("data-testid", "exit-" + i);
    var head = el("div", "in-item-head");
    var pick = select([["event", s.exit_event], ["segment_exited", s.exit_segment]], kind || "event", function (v) {
      list[i] = v === "event" ? { event: "" } : { segment_exited: (ctx.boot.segments || [])[0] || "" };
      changed("exit-kind"); rebuild();
    });
    pick.setAttribute("data-testid", "field-" + id + "kind"); pick.classList.add("in-kind");
    head.appendChild(pick);
    head.appendChild(button("×", "in-x", function () { list.splice(i, 1); changed("exit-remove"); rebuild(); }, "remove-exit-" + i));
    card.appendChild(head);
    if (kind === "segment_exited") {
      at(row(card, s.segment_label, null, segmentSelect(ctx.boot, rule.segment_exited, function (v) { rule.segment_exited = v; changed(id + "segment"); }), id + "segment"), p + ".segment_exited");
    } else if (kind === "event") {
      at(row(card, s.event_name, null, input(rule.event, function (v, box) {
        rule.event = v; box.classList.toggle("in-bad", !v.trim()); changed(id + "event");
      }, { list: datalist("dl-events", ctx.boot.events), placeholder: "unsubscribed" }), id + "event"), p + ".event");
      at(b.filters(card, "where", rule, ["exit_on", i, "where"], function () { changed(id + "where"); }, id + "where"), p + ".where");
    }
    return card;
  }

  function goalPanel(container, ctx) {
    var s = ctx.boot.strings, doc = clone(ctx.doc) || {};
    container.textContent = "";
    var rebuild = function () { goalPanel(container, Object.assign({}, ctx, { doc: clone(doc) })); };
    var b = new Builder(Object.assign({}, ctx, { nodeType: { fields: fieldsFor(s) }, stepIds: [] }), container, rebuild);
    var head = el("div", "in-head in-goal");
    head.appendChild(el("span", "in-dot"));
    head.appendChild(el("strong", null, s.goal_block));
    container.appendChild(head);
    container.appendChild(el("p", "in-about", s.goal_about));
    var form = el("fieldset", "in-form");
    form.disabled = !!ctx.readonly;
    form.setAttribute("data-testid", "goal-panel");
    function changed(key) { ctx.onChange(doc, key); }
    var box = section(form, s.goal, "goal");
    var on = el("input"); on.type = "checkbox"; on.checked = isObj(doc.goal);
    on.addEventListener("change", function () {
      if (on.checked) doc.goal = { event: "", within: "7d" }; else delete doc.goal;
      changed("goal-on"); rebuild();
    });
    row(box, s.has_goal, s.goal_help, on, "goal-on").classList.add("in-check");
    if (isObj(doc.goal)) {
      var goal = doc.goal;
      at(row(box, s.event_name, null, input(goal.event, function (v, i) {
        goal.event = v; i.classList.toggle("in-bad", !v.trim()); changed("goal-event");
      }, { list: datalist("dl-events", ctx.boot.events), placeholder: "order_placed" }), "goal-event"), "goal.event");
      at(row(box, s.within, s.within_help, input(goal.within, function (v, i) {
        i.classList.toggle("in-bad", v !== "" && !DURATION_TEXT.test(v));
        if (v) goal.within = /^\d+$/.test(v) ? Number(v) : v; else delete goal.within;
        changed("goal-within");
      }, { placeholder: "7d" }), "goal-within"), "goal.within");
      at(b.filters(box, "where", goal, ["goal", "where"], function () { changed("goal-where"); }, "goal-where"), "goal.where");
    }
    var exits = section(form, s.exit_rules, "exit_on");
    exits.appendChild(el("p", "in-help", s.exit_help));
    var list = Array.isArray(doc.exit_on) ? doc.exit_on : [];
    doc.exit_on = list;
    list.forEach(function (rule, i) { exits.appendChild(exitCard(list, i, ctx, function (key) {
      if (!list.length) delete doc.exit_on; changed(key);
    }, rebuild, b)); });
    exits.appendChild(button("+ " + s.add_exit, "in-add", function () {
      list.push({ event: "" }); doc.exit_on = list; changed("exit-add"); rebuild();
    }, "add-exit"));
    if (!list.length && !Array.isArray(ctx.doc.exit_on)) delete doc.exit_on;
    container.appendChild(form);
    markProblems(container, ctx.problems || []);
  }

  // Each problem shows once, on the control whose data-path is the longest prefix of its field.
  function markProblems(container, problems) {
    container.querySelectorAll(".in-problem").forEach(function (n) { n.parentNode.removeChild(n); });
    container.querySelectorAll(".in-has-problem").forEach(function (n) { n.classList.remove("in-has-problem"); });
    var spots = Array.prototype.slice.call(container.querySelectorAll("[data-path]"));
    if (!spots.length) return;
    (problems || []).forEach(function (p) {
      if (!p.field || p.step) return;
      var best = null, len = -1;
      spots.forEach(function (n) {
        var path = n.getAttribute("data-path");
        if ((p.field === path || p.field.indexOf(path + ".") === 0) && path.length > len) { best = n; len = path.length; }
      });
      if (!best) return;
      best.classList.add("in-has-problem");
      var note = el("span", "in-error in-problem" + (p.severity === "warning" ? " in-warning" : ""), p.message + (p.hint ? " (" + p.hint + ")" : ""));
      note.setAttribute("data-testid", "problem-at-" + p.field);
      best.appendChild(note);
    });
  }

  function scenarioPanel(container, ctx) {
    var s = ctx.boot.strings, doc = clone(ctx.doc) || {};
    container.textContent = "";
    var head = el("div", "in-head in-scenario");
    head.appendChild(el("span", "in-dot"));
    head.appendChild(el("strong", null, s.scenario));
    container.appendChild(head);
    var form = el("fieldset", "in-form");
    form.disabled = !!ctx.readonly;
    function changed(key) { ctx.onChange(doc, key); }
    row(form, s.name, null, input(doc.name, function (v) { doc.name = v; changed("name"); }), "name");
    row(form, s.description, null, input(doc.description, function (v) {
      if (v) doc.description = v; else delete doc.description; changed("description");
    }, { multiline: true }), "description");
    row(form, s.objective, null, select(ctx.boot.objectives.map(function (o) { return [o, o]; }), doc.objective, function (v) {
      doc.objective = v; changed("objective");
    }), "objective");
    row(form, s.priority, "0–100", input(doc.priority == null ? 50 : doc.priority, function (v) {
      doc.priority = v === "" ? 50 : Number(v); changed("priority");
    }, { type: "number" }), "priority");
    var ids = Object.keys(isObj(doc.steps) ? doc.steps : {});
    if (ids.length > 1) {
      row(form, s.start, null, select([["", ids[0]]].concat(ids.slice(1).map(function (i) { return [i, i]; })), doc.start || "", function (v) {
        if (v) doc.start = v; else delete doc.start; changed("start");
      }), "start");
    }
    container.appendChild(form);
    var tr = el("div", "in-triggers");
    tr.appendChild(el("div", "in-label", s.triggers));
    (Array.isArray(doc.triggers) ? doc.triggers : []).forEach(function (t) { tr.appendChild(el("div", "in-trigger", triggerText(t, s))); });
    if (ctx.onOpen) {
      var links = el("div", "in-open");
      links.appendChild(button(s.edit_entry, "", function () { ctx.onOpen("entry"); }, "open-entry"));
      links.appendChild(button(s.edit_goal, "", function () { ctx.onOpen("goal"); }, "open-goal"));
      tr.appendChild(links);
    }
    container.appendChild(tr);
  }

  window.ParcoursInspector = {
    step: stepPanel, scenario: scenarioPanel, entry: entryPanel, goal: goalPanel,
    markProblems: markProblems, showCount: showCount,
    triggerText: triggerText, entryText: entryText, audienceText: audienceText, exitText: exitText,
    parseCron: parseCron, formatCron: formatCron,
    parseValue: parseValue, kindOf: kindOf, uid: function () { return ++uid; }
  };
})();
