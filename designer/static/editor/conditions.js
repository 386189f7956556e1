// The condition builder: groups (all of / any of) of rules on an attribute (computed ones too:
// rfm.*, lifecycle, customer_value), a tag, an event (count or sum, within a span), membership
// of a segment, consent or the pressure barometer; an expression mode for the rest. Shared by the
// inspector (mixed into its Builder) and the Segments page (ParcoursConditions.Builder).
// A builder edits `target[name]` in place and calls changed(key) after each edit; `this.ctx.boot`
// holds the choices (operators, events, attributes, computed, segments, channels, topics...).
(function () {
  "use strict";

  var UNARY = ["exists", "not_exists"], LISTS = ["in", "not_in"];
  var MEASURES = ["eq", "ne", "gt", "gte", "lt", "lte"];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function isObj(v) { return v != null && typeof v === "object" && !Array.isArray(v); }
  // Text typed in a value box: numbers, booleans and JSON stay typed.
  function parseValue(text) {
    var t = text.trim();
    if (t === "true" || t === "false") return t === "true";
    if (t !== "" && !isNaN(Number(t)) && /^-?[\d.]+$/.test(t)) return Number(t);
    if (/^[[{]/.test(t)) { try { return JSON.parse(t); } catch (e) { /* text as typed */ } }
    return text;
  }
  function showValue(v) { return v == null ? "" : typeof v === "string" ? v : JSON.stringify(v); }
  function datalist(id, values) {
    if (document.getElementById(id)) return id;
    var list = el("datalist"); list.id = id;
    (values || []).forEach(function (v) { var o = el("option"); o.value = v; list.appendChild(o); });
    document.body.appendChild(list);
    return id;
  }
  function input(value, onInput, opts) {
    opts = opts || {};
    var i = el(opts.multiline ? "textarea" : "input");
    if (!opts.multiline) i.type = opts.type || "text";
    if (opts.placeholder) i.placeholder = opts.placeholder;
    if (opts.list) i.setAttribute("list", opts.list);
    if (opts.testid) i.setAttribute("data-testid", opts.testid);
    if (opts.title) i.title = opts.title;
    i.value = value == null ? "" : String(value);
    i.addEventListener("input", function () { onInput(i.value, i); });
    return i;
  }
  function select(options, value, onChange, testid) {
    var s = el("select");
    options.forEach(function (o) {
      var opt = el("option", null, o[1]); opt.value = o[0];
      if (String(o[0]) === String(value == null ? "" : value)) opt.selected = true;
      s.appendChild(opt);
    });
    if (value != null && value !== "" && !options.some(function (o) { return String(o[0]) === String(value); })) {
      var kept = el("option", null, String(value)); kept.value = value; kept.selected = true;
      s.appendChild(kept);  // a value the choices do not list stays as written
    }
    s.addEventListener("change", function () { onChange(s.value); });
    if (testid) s.setAttribute("data-testid", testid);
    return s;
  }
  function button(text, cls, onClick, testid) {
    var b = el("button", cls, text); b.type = "button";
    b.addEventListener("click", onClick);
    if (testid) b.setAttribute("data-testid", testid);
    return b;
  }
  function pairs(list) { return list.map(function (v) { return Array.isArray(v) ? v : [v, v]; }); }

  function isGroup(c) { return isObj(c) && (Array.isArray(c.all) || Array.isArray(c.any)) && Object.keys(c).length === 1; }
  function only(c, keys) { return Object.keys(c).every(function (k) { return keys.indexOf(k) >= 0; }); }
  function ruleKind(c) {
    if (!isObj(c)) return null;
    if (isGroup(c)) return "group";
    if ("attribute" in c) return "attribute";
    if ("tag" in c && Object.keys(c).length === 1) return "tag";
    if ("segment" in c && Object.keys(c).length === 1) return "segment";
    if (isObj(c.consent) && Object.keys(c).length === 1) return "consent";
    if (isObj(c.pressure) && Object.keys(c).length === 1) return "pressure";
    if ("event" in c && only(c, ["event", "within", "since", "count", "sum"]) && !(c.count && c.sum)) return "event";
    return null;
  }

  // ------------------------------------------------------------------ the builder's methods

  var methods = {};

  // True on pages where "since the journey's entry" means nothing (segments).
  methods.segmentScope = function () { return this.ctx.boot.conditionScope === "segment"; };

  methods.freshRule = function (kind) {
    var boot = this.ctx.boot;
    if (kind === "tag") return { tag: "" };
    if (kind === "event") return this.segmentScope() ? { event: "" } : { event: "", since: "entry" };
    if (kind === "segment") return { segment: (this.segmentChoices()[0] || [""])[0] };
    if (kind === "consent") {
      var channel = (boot.channels || []).some(function (c) { return c.name === "email"; }) ? "email" : ((boot.channels || [])[0] || {}).name || "email";
      return { consent: { channel: channel, topic: (boot.conditionTopics || [["*"]])[0][0] || "*", state: "opted_in" } };
    }
    if (kind === "pressure") return { pressure: { state: "over" } };
    return { attribute: "", op: "eq", value: "" };
  };

  methods.segmentChoices = function () {
    var boot = this.ctx.boot, list = boot.segments || [];
    return list.filter(function (id) { return id !== boot.segmentId; }).map(function (id) { return [id, id]; });
  };

  // The condition field `target[name]`: a group of rules, or an expression.
  methods.condition = function (parent, name, target, path, changed, testid) {
    var self = this, s = this.s, wrap = el("div", "in-field in-cond");
    wrap.setAttribute("data-testid", "field-" + testid);
    var head = el("div", "in-cond-head");
    head.appendChild(el("span", "in-label", self.info(path).label));
    var exprMode = isObj(target[name]) && "expr" in target[name];
    if (!this.segmentScope() || exprMode) {  // a segment is counted in SQL: expressions cannot be
      var toggle = el("div", "in-seg");
      [["form", s.form], ["expr", s.expression]].forEach(function (m) {
        toggle.appendChild(button(m[1], (exprMode === (m[0] === "expr")) ? "on" : "", function () {
          if (m[0] === "expr" && !exprMode) target[name] = { expr: "" };
          if (m[0] === "form" && exprMode) target[name] = self.freshRule("attribute");
          changed(path.join(".") + ".mode"); self.rebuild();
        }, "mode-" + testid + "-" + m[0]));
      });
      head.appendChild(toggle);
    }
    wrap.appendChild(head);
    function write() { changed(path.join(".")); }
    if (exprMode) {
      var t = input(target[name].expr, function (v) { target[name].expr = v; write(); }, { multiline: true, placeholder: "contact.score > 10" });
      t.classList.add("code"); t.setAttribute("data-testid", "field-" + testid + "-expr");
      wrap.appendChild(t);
    } else {
      var wasGroup = isGroup(target[name]);
      // the root shows as a group; a single rule is written back as itself
      var group = wasGroup ? target[name] : { all: target[name] == null ? [] : [target[name]] };
      var commit = function () {
        var list = group.all || group.any;
        target[name] = (!wasGroup && list.length === 1) ? list[0] : group;
        if (list.length > 1) wasGroup = true;
        write();
      };
      wrap.appendChild(this.group(group, commit, 0, testid));
    }
    parent.appendChild(wrap);
    return wrap;
  };

  methods.group = function (group, commit, depth, testid) {
    var self = this, s = this.s, box = el("div", "in-group");
    var word = group.all ? "all" : "any";
    var list = group[word];
    var top = el("div", "in-group-head");
    top.appendChild(select([["all", s.all], ["any", s.any]], word, function (v) {
      if (v === word) return;
      group[v] = group[word]; delete group[word]; word = v; commit();
    }, "group-" + testid));
    box.appendChild(top);
    function draw() {
      while (box.children.length > 1) box.removeChild(box.lastChild);
      list.forEach(function (rule, i) {
        var line = self.rule(rule, function (next) { list[i] = next; commit(); }, depth, testid + "-" + i, function () { draw(); });
        line.appendChild(button("×", "in-x", function () { list.splice(i, 1); commit(); draw(); }, "remove-rule-" + testid + "-" + i));
        box.appendChild(line);
      });
      var actions = el("div", "in-group-actions");
      actions.appendChild(button("+ " + s.add_rule, "in-add", function () {
        list.push(self.freshRule("attribute")); commit(); draw();
      }, "add-rule-" + testid));
      if (depth < 2) actions.appendChild(button("+ " + s.add_group, "in-add", function () {
        list.push({ any: [self.freshRule("attribute")] }); commit(); draw();
      }, "add-group-" + testid));
      box.appendChild(actions);
    }
    draw();
    return box;
  };

  methods.rule = function (rule, set, depth, testid, redraw) {
    var self = this, s = this.s, kind = ruleKind(rule), line = el("div", "in-rule");
    var id = "rule-" + testid;
    line.setAttribute("data-testid", id);
    if (kind === "group") {
      line.classList.add("in-rule-group");
      line.appendChild(this.group(rule, function () { set(rule); }, depth + 1, testid));
      return line;
    }
    if (kind === null) {
      var raw = el("code", "in-raw", JSON.stringify(rule));
      raw.title = s.other_form;
      line.appendChild(raw);
      return line;
    }
    var kinds = [["attribute", s.attribute], ["tag", s.tag], ["event", s.event],
      ["segment", s.member_of || "segment"], ["consent", s.consent || "consent"], ["pressure", s.pressure || "pressure"]];
    line.appendChild(select(kinds, kind, function (v) { set(self.freshRule(v)); redraw(); }, id + "-kind"));
    this[kind + "Rule"](line, rule, set, redraw, id);
    return line;
  };

  methods.attributeRule = function (line, rule, set, redraw, id) {
    var self = this, s = this.s, boot = this.ctx.boot;
    var names = (boot.attributes || []).concat(boot.computed || []);
    var ops = (boot.operators || []).map(function (o) { return [o, o]; });
    function valueList() {
      var known = (boot.computedValues || {})[rule.attribute];
      return known ? datalist("dl-values-" + rule.attribute, known) : null;
    }
    line.appendChild(input(rule.attribute, function (v) {
      rule.attribute = v; set(rule);
      var list = valueList();
      if (list) value.setAttribute("list", list); else value.removeAttribute("list");
    }, { list: datalist("dl-attributes-all", names), placeholder: s.attribute, testid: id + "-attribute" }));
    var value = input(LISTS.indexOf(rule.op) >= 0 && Array.isArray(rule.value) ? rule.value.join(", ") : showValue(rule.value), function (v) {
      rule.value = LISTS.indexOf(rule.op) >= 0 ? v.split(",").map(function (x) { return parseValue(x.trim()); }) : parseValue(v);
      set(rule);
    }, { placeholder: s.value, list: valueList(), testid: id + "-value" });
    value.hidden = UNARY.indexOf(rule.op) >= 0;
    line.appendChild(select(ops, rule.op || "eq", function (v) {
      rule.op = v; value.hidden = UNARY.indexOf(v) >= 0;
      if (value.hidden) delete rule.value;
      set(rule);
    }, id + "-op"));
    line.appendChild(value);
  };

  methods.tagRule = function (line, rule, set, redraw, id) {
    line.appendChild(input(rule.tag, function (v) { rule.tag = v; set(rule); }, { placeholder: this.s.tag, testid: id + "-tag" }));
  };

  // An event: at least once, a number of times or a sum of a property, within a span (a
  // journey's condition may count since the contact entered instead).
  methods.eventRule = function (line, rule, set, redraw, id) {
    var s = this.s, segment = this.segmentScope();
    var ops = MEASURES.map(function (o) { return [o, o]; });
    line.appendChild(input(rule.event, function (v) { rule.event = v; set(rule); },
      { list: datalist("dl-events", this.ctx.boot.events), placeholder: s.event, testid: id + "-event" }));
    line.appendChild(input(rule.within || "", function (v, box) {
      box.classList.toggle("in-bad", v !== "" && !/^\s*(\d+\s*[smhdw]\s*)+$/.test(v));
      if (v) { rule.within = v; delete rule.since; } else { delete rule.within; if (!segment) rule.since = "entry"; }
      set(rule);
    }, { placeholder: segment ? (s.within_ever || "within: 90d") : "within: 30d", testid: id + "-within",
      title: segment ? s.within_help || "" : "" }));
    var measure = isObj(rule.sum) ? "sum" : isObj(rule.count) ? "count" : "";
    line.appendChild(select([["", s.at_least_once || "≥ 1"], ["count", s.times || "count"], ["sum", s.sum_of || "sum"]], measure, function (v) {
      var old = rule.count || rule.sum || {};
      delete rule.count; delete rule.sum;
      if (v === "count") rule.count = { op: old.op || "gte", value: typeof old.value === "number" ? old.value : 1 };
      if (v === "sum") rule.sum = { property: "", op: old.op || "gte", value: typeof old.value === "number" ? old.value : 0 };
      set(rule); redraw();
    }, id + "-measure"));
    var body = rule.count || rule.sum;
    if (!body) return;
    if (rule.sum) {
      line.appendChild(input(rule.sum.property, function (v) { rule.sum.property = v; set(rule); },
        { placeholder: s.property || "property", testid: id + "-property" }));
    }
    line.appendChild(select(ops, body.op || "gte", function (v) { body.op = v; set(rule); }, id + "-op"));
    line.appendChild(input(body.value, function (v) { body.value = v === "" ? 0 : Number(v); set(rule); },
      { type: "number", testid: id + "-value" }));
  };

  methods.segmentRule = function (line, rule, set, redraw, id) {
    var choices = this.segmentChoices();
    if (this.ctx.boot.segments) {
      line.appendChild(select(choices, rule.segment, function (v) { rule.segment = v; set(rule); }, id + "-segment"));
    } else {  // a page that did not send the workspace's segments: typed, with no list
      line.appendChild(input(rule.segment, function (v) { rule.segment = v; set(rule); }, { testid: id + "-segment" }));
    }
  };

  function channelChoices(boot, overall) {
    var list = (boot.channels || []).map(function (c) { return [c.name, c.label || c.name]; });
    return overall ? [["*", overall]].concat(list) : list;
  }

  // The values the JSON Schema of a condition form allows for one of its keys.
  function formEnum(boot, form, key) {
    var body = ((((boot.conditionForms || {})[form] || {}).properties || {})[form] || {}).properties || {};
    return (body[key] || {}).enum || [];
  }

  methods.consentRule = function (line, rule, set, redraw, id) {
    var s = this.s, boot = this.ctx.boot, body = rule.consent;
    line.appendChild(select(channelChoices(boot), body.channel, function (v) { body.channel = v; set(rule); }, id + "-channel"));
    var topics = boot.conditionTopics ? pairs(boot.conditionTopics) : [];
    if (topics.length) {
      line.appendChild(select(topics, body.topic, function (v) { body.topic = v; set(rule); }, id + "-topic"));
    } else {
      line.appendChild(input(body.topic, function (v) { body.topic = v; set(rule); }, { placeholder: s.topic || "topic", testid: id + "-topic" }));
    }
    var states = boot.consentStates || formEnum(boot, "consent", "state");
    line.appendChild(select(pairs(states), body.state || "opted_in", function (v) { body.state = v; set(rule); }, id + "-state"));
  };

  methods.pressureRule = function (line, rule, set, redraw, id) {
    var s = this.s, boot = this.ctx.boot, body = rule.pressure;
    var states = boot.pressureStates || formEnum(boot, "pressure", "state");
    line.appendChild(select(pairs(states), body.state, function (v) { body.state = v; set(rule); }, id + "-state"));
    line.appendChild(select(channelChoices(boot, s.all_channels || "*"), body.channel || "*", function (v) {
      if (v === "*") delete body.channel; else body.channel = v;
      set(rule);
    }, id + "-channel"));
  };

  function mixin(proto) {
    Object.keys(methods).forEach(function (k) { proto[k] = methods[k]; });
    return proto;
  }

  // A builder of conditions alone, for pages without the inspector: `boot` as above (strings
  // included), `label` the condition field's label, `rebuild` redraws the whole form.
  function Builder(boot, label, rebuild) {
    this.ctx = { boot: boot }; this.s = boot.strings; this.label = label; this.rebuild = rebuild;
  }
  Builder.prototype.info = function () { return { label: this.label, help: "" }; };
  mixin(Builder.prototype);

  window.ParcoursConditions = { mixin: mixin, Builder: Builder, ruleKind: ruleKind, parseValue: parseValue };
})();
