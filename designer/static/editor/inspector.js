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

  function triggerText(tr) {
    if (!isObj(tr)) return String(tr);
    if (tr.event) return "⚡ " + tr.event + (Array.isArray(tr.where) && tr.where.length ? " (" + tr.where.length + ")" : "");
    if (tr.schedule) return "cron " + tr.schedule + (tr.timezone ? " · " + tr.timezone : "");
    if (tr.anniversary) return "anniversary · " + tr.anniversary;
    if (tr.manual) return "manual";
    return JSON.stringify(tr);
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
    (Array.isArray(doc.triggers) ? doc.triggers : []).forEach(function (t) { tr.appendChild(el("div", "in-trigger", triggerText(t))); });
    container.appendChild(tr);
  }

  window.ParcoursInspector = { step: stepPanel, scenario: scenarioPanel, parseValue: parseValue, kindOf: kindOf, uid: function () { return ++uid; } };
})();
