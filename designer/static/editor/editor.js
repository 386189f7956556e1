/*
 * The journey editor page: palette, canvas, inspector, YAML tab, validation, undo and saving.
 *
 * The scenario file is the source of truth. Canvas and inspector edits change a plain document
 * (the parsed YAML); it is posted to /render, which merges it into the file's text (comments and
 * quotes kept, minimal diff) and lints it. YAML tab edits go to /check and redraw the canvas.
 *
 * Reusable canvas (live view, simulation): load vendor/drawflow/drawflow.min.js, then this file
 * (it adds editor/editor.css and drawflow.min.css itself when the page lacks them), then
 *
 *   var canvas = window.ParcoursCanvas.mount(element, {
 *     doc,          // the parsed scenario (plain object: steps, layout, ...)
 *     nodeTypes,    // the registry as the editor page gets it (designer.editor.node_types())
 *     readonly,     // true: pan and zoom only, nodes cannot move or connect
 *     fit,          // true: fit the drawing in the view once mounted
 *     strings,      // optional translated texts (designer.editor.strings())
 *     onSelect,     // optional function (stepId | null)
 *     blocks,       // true: draw the entry block and the goal/exit block (the editor page)
 *     onBlock,      // optional function ("entry" | "goal" | null), a block clicked
 *   });
 *   canvas.showCounts({step_id: {label: number, ...}, ...});  // pills on the nodes
 *   canvas.clearCounts();
 *   canvas.fit(); canvas.zoomIn(); canvas.zoomOut(); canvas.select(stepId);
 *   canvas.setDoc(doc); canvas.setProblems(problems); canvas.destroy();
 *   canvas.selectBlock("entry" | "goal" | null); canvas.setAudienceLine(text);  // with blocks
 *
 * Test ids: palette-<type>, node-<step>, port-<step>-<exit> (exit: next, then, else, on_event,
 * on_timeout, default, cases.<i>, branches.<i>), in-<step>, field-<name>, save, save-status,
 * problems, tab-yaml, yaml-text, layout, undo, redo; entry-block, goal-block, entry-count,
 * problem-entry, problem-goal, audience-count, trigger-<i>, exit-<i>, add-trigger, add-exit,
 * audience-mode-<everyone|segment|conditions>, problem-at-<field> (a problem on its field).
 */

// ---------------------------------------------------------------- the canvas (ParcoursCanvas)
// Draws a scenario document as cards and links with Drawflow. Everything about step types comes
// from the node-type registry sent by the server (exits are the schema's `x-edge` properties);
// nothing here switches on a type name.
(function () {
  "use strict";

  var COL = 300, ROW_GAP = 40, ORIGIN = 60, DEFAULT_H = 110;
  var HERE = document.currentScript ? document.currentScript.src : "";

  // The canvas styles, when the page did not link them (a page that only loads this script).
  function ensureStyles() {
    if (!HERE) return;
    [["pc-styles", "editor.css"], ["df-styles", "../vendor/drawflow/drawflow.min.css"]].forEach(function (pair) {
      var href = new URL(pair[1], HERE).href;
      var linked = Array.prototype.some.call(document.querySelectorAll('link[rel="stylesheet"]'), function (l) { return l.href === href; });
      if (linked || document.getElementById(pair[0])) return;
      var link = document.createElement("link");
      link.id = pair[0]; link.rel = "stylesheet"; link.href = href;
      document.head.appendChild(link);
    });
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function clone(v) { return v == null ? v : JSON.parse(JSON.stringify(v)); }
  function isObj(v) { return v != null && typeof v === "object" && !Array.isArray(v); }
  function stepsOf(doc) { return doc && isObj(doc.steps) ? doc.steps : {}; }
  function startOf(doc) {
    var ids = Object.keys(stepsOf(doc));
    return doc && typeof doc.start === "string" && ids.indexOf(doc.start) >= 0 ? doc.start : ids[0];
  }

  // Exits of a step, in schema order: [{key, label, path}], path inside the step.
  function exitsOf(step, nodeType) {
    var out = [];
    if (!nodeType) return out;
    var props = nodeType.schema.properties || {};
    Object.keys(props).forEach(function (name) {
      if (nodeType.edges.indexOf(name) >= 0) {
        out.push({ key: name, label: name.replace(/^on_/, "").replace(/_/g, " "), path: [name] });
      } else if (nodeType.nested_edges[name]) {
        var inner = nodeType.nested_edges[name];
        (Array.isArray(step[name]) ? step[name] : []).forEach(function (item, i) {
          var label = (item && (item.name || "")) || name.replace(/s$/, "") + " " + (i + 1);
          if (item && typeof item.weight === "number") label += " · " + item.weight;
          out.push({ key: name + "." + i, label: String(label), path: [name, i, inner] });
        });
      }
    });
    return out;
  }
  function getPath(obj, path) {
    for (var i = 0; i < path.length; i++) { if (obj == null) return undefined; obj = obj[path[i]]; }
    return obj;
  }
  function setPath(obj, path, value) {
    for (var i = 0; i < path.length - 1; i++) obj = obj[path[i]];
    if (value == null) delete obj[path[path.length - 1]];
    else obj[path[path.length - 1]] = value;
  }

  // One line saying what a condition tests.
  function conditionText(c) {
    if (!isObj(c)) return "";
    if (Array.isArray(c.all) || Array.isArray(c.any)) {
      var list = c.all || c.any, word = c.all ? " & " : " | ";
      return list.map(conditionText).join(word);
    }
    if (c.not) return "not (" + conditionText(c.not) + ")";
    if (c.attribute != null) return c.attribute + " " + (c.op || "") + (c.value != null ? " " + JSON.stringify(c.value) : "");
    if (c.tag != null) return "#" + c.tag;
    if (c.event != null) return "⚡ " + c.event + (c.within ? " < " + c.within : "") + (c.since ? " · " + c.since : "");
    if (c.expr != null) return "ƒ " + c.expr;
    return Object.keys(c).join(", ");
  }
  // One line summing up a step: its non-edge fields that have a value, in schema order.
  function summary(step, nodeType) {
    if (!nodeType) return "";
    var props = nodeType.schema.properties || {}, parts = [];
    Object.keys(props).forEach(function (name) {
      if (name === "type" || name === "label" || nodeType.edges.indexOf(name) >= 0) return;
      var v = step[name];
      if (v == null || v === "" || (Array.isArray(v) && !v.length) || (isObj(v) && !Object.keys(v).length)) return;
      if (props[name].default !== undefined && JSON.stringify(props[name].default) === JSON.stringify(v)) return;
      if (nodeType.nested_edges[name]) parts.push(v.length + " " + name);
      else if (name === "if" || name === "when" || name === "audience") parts.push(conditionText(v));
      else if (Array.isArray(v)) parts.push(v.map(function (x) { return isObj(x) ? conditionText(x) || "…" : x; }).join(", "));
      else if (isObj(v)) parts.push(Object.keys(v).map(function (k) { return typeof v[k] === "string" && v[k].length < 24 ? k + ": " + v[k] : k; }).join(", "));
      else if (typeof v === "number" && v > 0 && name.indexOf("add") === 0) parts.push("+" + v);
      else parts.push(String(v));
    });
    return parts.join(" · ");
  }

  // Layered layout, left to right: a step's column is its longest path from the start step
  // (links back to an earlier step are ignored), so links flow rightwards; steps no path reaches
  // start a column-0 chain of their own, below the start step.
  function layout(doc, nodeTypes, heights) {
    var steps = stepsOf(doc), ids = Object.keys(steps), depth = {}, order = [], targets = {};
    ids.forEach(function (id) {
      targets[id] = exitsOf(steps[id] || {}, nodeTypes[(steps[id] || {}).type]).map(function (exit) {
        return getPath(steps[id], exit.path);
      }).filter(function (to) { return typeof to === "string" && steps[to]; });
    });
    var seen = {}, onPath = {}, post = [], forward = {};
    function dfs(id) {
      seen[id] = onPath[id] = true; forward[id] = [];
      targets[id].forEach(function (to) {
        if (onPath[to]) return;                     // a loop back: not a layer constraint
        forward[id].push(to);
        if (!seen[to]) dfs(to);
      });
      onPath[id] = false; post.push(id);
    }
    var start = startOf(doc);
    if (start) dfs(start);
    ids.forEach(function (id) { if (!seen[id]) dfs(id); });
    var topo = post.reverse();
    topo.forEach(function (id) { if (depth[id] === undefined) depth[id] = 0; });
    topo.forEach(function (id) {
      forward[id].forEach(function (to) { depth[to] = Math.max(depth[to], depth[id] + 1); });
    });
    topo.forEach(function (id) { order.push(id); });
    var columns = {}, pos = {}, parentsY = {};
    var rank = function (id) { return id === start ? -1 : ids.indexOf(id); };
    order.forEach(function (id) { (columns[depth[id]] = columns[depth[id]] || []).push(id); });
    Object.keys(columns).map(Number).sort(function (a, b) { return a - b; }).forEach(function (col) {
      var list = columns[col];
      list.sort(function (a, b) { return (parentsY[a] || 0) - (parentsY[b] || 0) || rank(a) - rank(b); });
      var y = ORIGIN;
      list.forEach(function (id) {
        pos[id] = [ORIGIN + col * COL, y];
        y += (heights[id] || DEFAULT_H) + ROW_GAP;
        exitsOf(steps[id], nodeTypes[steps[id].type]).forEach(function (exit, i) {
          var to = getPath(steps[id], exit.path);
          if (typeof to === "string" && parentsY[to] === undefined) parentsY[to] = pos[id][1] + i;
        });
      });
    });
    return pos;
  }

  function mount(element, options) {
    options = options || {};
    ensureStyles();
    var types = {};
    (options.nodeTypes || []).forEach(function (t) { types[t.type] = t; });
    var strings = options.strings || {};
    var readonly = !!options.readonly;
    var doc = clone(options.doc) || { steps: {} };
    var cache = {};        // positions of steps not (yet) in doc.layout
    var numOf = {}, stepOfNum = {};
    var selected = null, selectedLink = null, counts = null, problems = [];
    var heights = {};
    var blocksOn = !!options.blocks, block = null, audienceLine = "";

    element.classList.add("pc-canvas");
    var df = new window.Drawflow(element);
    df.reroute = false;
    df.curvature = 0.45;
    df.force_first_input = true;
    df.zoom_min = 0.3; df.zoom_max = 1.6; df.zoom_value = 0.1;
    df.editor_mode = readonly ? "fixed" : "edit";
    df.key = function () {};                                       // keys: handled by the page
    df.contextmenu = function (e) { e.preventDefault(); };         // no "x" bubble
    df.zoom_enter = function (e) { e.preventDefault(); if (e.deltaY > 0) df.zoom_out(); else df.zoom_in(); };
    df.start();

    function emit(name, a, b) { if (typeof options[name] === "function") options[name](a, b); }
    function positionOf(id) {
      var saved = isObj(doc.layout) ? doc.layout[id] : null;
      if (Array.isArray(saved) && saved.length === 2 && isFinite(saved[0]) && isFinite(saved[1])) return [+saved[0], +saved[1]];
      return cache[id];
    }

    function nodeHtml(id, step) {
      var t = types[step.type], category = t ? t.category : "unknown";
      var root = el("div", "pc-node pc-" + category);
      var head = el("div", "pc-head");
      head.appendChild(el("span", "pc-icon"));
      var title = el("span", "pc-title", step.label || (t ? t.label : step.type || "?"));
      head.appendChild(title);
      if (id === startOf(doc)) head.appendChild(el("span", "pc-start", strings.start || "Start"));
      head.appendChild(el("span", "pc-flag"));
      root.appendChild(head);
      var sub = summary(step, t);
      root.appendChild(el("div", "pc-sub", sub || (t ? t.label : "")));
      root.appendChild(el("div", "pc-id", id));
      var exits = exitsOf(step, t);
      if (exits.length > 1) {
        var list = el("div", "pc-exits");
        exits.forEach(function (exit) { list.appendChild(el("div", "pc-exit", exit.label)); });
        root.appendChild(list);
      }
      root.appendChild(el("div", "pc-counts"));
      return root.outerHTML;
    }

    function draw() {
      var steps = stepsOf(doc), ids = Object.keys(steps), data = {};
      numOf = {}; stepOfNum = {};
      ids.forEach(function (id, i) { numOf[id] = i + 1; stepOfNum[i + 1] = id; });
      var missing = ids.filter(function (id) { return !positionOf(id); });
      if (missing.length) {
        var auto = layout(doc, types, heights);
        missing.forEach(function (id) { cache[id] = auto[id]; });
      }
      ids.forEach(function (id) {
        var n = numOf[id], step = isObj(steps[id]) ? steps[id] : {}, t = types[step.type];
        var outputs = {};
        exitsOf(step, t).forEach(function (exit, i) {
          var to = getPath(step, exit.path);
          outputs["output_" + (i + 1)] = {
            connections: typeof to === "string" && numOf[to] ? [{ node: String(numOf[to]), output: "input_1" }] : []
          };
        });
        var p = positionOf(id) || [ORIGIN, ORIGIN];
        data[n] = {
          id: n, name: step.type || "unknown", data: {}, class: "pc-df pc-df-" + (t ? t.category : "unknown"),
          html: nodeHtml(id, step), typenode: false,
          inputs: { input_1: { connections: [] } }, outputs: outputs, pos_x: p[0], pos_y: p[1]
        };
      });
      Object.keys(data).forEach(function (n) {
        Object.keys(data[n].outputs).forEach(function (out) {
          data[n].outputs[out].connections.forEach(function (c) {
            data[c.node].inputs.input_1.connections.push({ node: String(n), input: out });
          });
        });
      });
      var x = df.canvas_x, y = df.canvas_y, z = df.zoom;
      // Drawflow's import lays out each node's connections in turn, reading positions between
      // writes: one page layout per step (seconds for 200 steps). Its per-node update is left
      // out of the import and every path laid out at once below.
      var perNode = df.updateConnectionNodes;
      df.updateConnectionNodes = function () {};
      try { df.import({ drawflow: { Home: { data: data } } }, false); }
      finally { df.updateConnectionNodes = perNode; }
      df.canvas_x = x; df.canvas_y = y; df.zoom = z; df.zoom_last_value = z;
      df.precanvas.style.transform = "translate(" + x + "px, " + y + "px) scale(" + z + ")";
      df.node_selected = null; df.connection_selected = null;
      decorate();
      layoutConnections();  // once the nodes are marked: their ports sit where they end up
      drawBlocks();
      element.classList.toggle("pc-is-empty", ids.length === 0);
    }

    // Every connection's path, as Drawflow's updateConnectionNodes draws it: all the ports'
    // positions read first (one layout), then all the paths written.
    function layoutConnections() {
      var pre = df.precanvas, z = df.zoom || 1, origin = pre.getBoundingClientRect();
      var ux = pre.clientWidth / (pre.clientWidth * z) || 0, uy = pre.clientHeight / (pre.clientHeight * z) || 0;
      function centre(port) {
        var r = port.getBoundingClientRect();
        return [port.offsetWidth / 2 + (r.x - origin.x) * ux, port.offsetHeight / 2 + (r.y - origin.y) * uy];
      }
      var paths = [];
      element.querySelectorAll("svg.connection").forEach(function (svg) {
        var c = svg.classList;  // connection node_in_node-A node_out_node-B output_N input_N
        var into = element.querySelector("#" + c[1].replace("node_in_", ""));
        var from = element.querySelector("#" + c[2].replace("node_out_", ""));
        var end = into && into.querySelector("." + c[4]), start = from && from.querySelector("." + c[3]);
        if (!end || !start || svg.querySelector(".point")) return;  // no reroute points here
        var a = centre(start), b = centre(end);
        paths.push([svg.children[0], df.createCurvature(a[0], a[1], b[0], b[1], df.curvature, "openclose")]);
      });
      paths.forEach(function (p) { p[0].setAttributeNS(null, "d", p[1]); });
    }

    // ---- the entry block (before the start step) and the goal/exit block (after the last one)
    // Plain cards in Drawflow's canvas, so they pan and zoom with the steps; not Drawflow nodes:
    // they have no ports, cannot be dragged and are never written to `layout`.
    var ENTRY_FIELDS = /^(triggers|entry|audience|kind|topic)(\.|$)/, GOAL_FIELDS = /^(goal|exit_on)(\.|$)/;
    function blockOf(p) { return p.step ? null : ENTRY_FIELDS.test(p.field || "") ? "entry" : GOAL_FIELDS.test(p.field || "") ? "goal" : null; }
    function blockCard(kind, title, lines) {
      var card = el("div", "pc-block pc-block-" + kind + (block === kind ? " selected" : ""));
      card.setAttribute("data-testid", kind + "-block");
      card.setAttribute("data-block", kind);
      var head = el("div", "pc-head");
      head.appendChild(el("span", "pc-icon"));
      head.appendChild(el("span", "pc-title", title));
      head.appendChild(el("span", "pc-flag"));
      card.appendChild(head);
      lines.forEach(function (line) {
        var row = el("div", "pc-line" + (line[1] ? " " + line[1] : ""), line[0]);
        if (line[2]) row.setAttribute("data-testid", line[2]);
        card.appendChild(row);
      });
      return card;
    }
    function drawBlocks() {
      if (!blocksOn) return;
      var I = window.ParcoursInspector || {}, s = strings;
      df.precanvas.querySelectorAll(".pc-block, .pc-entry-link").forEach(function (n) { n.parentNode.removeChild(n); });
      var nodes = element.querySelectorAll(".drawflow-node"), minX = Infinity, minY = Infinity, maxX = -Infinity;
      nodes.forEach(function (n) {
        minX = Math.min(minX, n.offsetLeft); minY = Math.min(minY, n.offsetTop);
        maxX = Math.max(maxX, n.offsetLeft + n.offsetWidth);
      });
      var start = startOf(doc), startNode = start && numOf[start] ? element.querySelector("#node-" + numOf[start]) : null;
      var triggers = Array.isArray(doc.triggers) ? doc.triggers : [];
      var lines = triggers.map(function (t) { return [I.triggerText ? I.triggerText(t, s) : JSON.stringify(t), "pc-trigger"]; });
      if (!lines.length) lines.push([s.no_trigger || "—", "pc-none"]);
      lines.push([I.entryText ? I.entryText(doc.entry, s) : "", "pc-rule"]);
      lines.push([I.audienceText ? I.audienceText(doc.audience, s) : "", "pc-rule"]);
      lines.push([audienceLine || "…", "pc-match", "entry-count"]);
      var entry = blockCard("entry", s.entry_block || "Entry", lines);
      var goalLines = [];
      if (isObj(doc.goal)) goalLines.push(["★ " + (doc.goal.event || "…") + (doc.goal.within ? " · " + (s.within || "within") + " " + doc.goal.within : ""), "pc-rule"]);
      else goalLines.push(["★ " + (s.no_goal || "no goal"), "pc-missing"]);
      (Array.isArray(doc.exit_on) ? doc.exit_on : []).forEach(function (r) { goalLines.push(["⏏ " + (I.exitText ? I.exitText(r, s) : JSON.stringify(r)), "pc-rule"]); });
      var goal = blockCard("goal", s.goal_block || "Goal and exits", goalLines);
      df.precanvas.appendChild(entry); df.precanvas.appendChild(goal);
      var ey = startNode ? startNode.offsetTop : ORIGIN;
      var ex = nodes.length ? minX - entry.offsetWidth - 70 : ORIGIN;
      entry.style.left = ex + "px"; entry.style.top = ey + "px";
      goal.style.left = (nodes.length ? maxX + 90 : ex + entry.offsetWidth + 340) + "px";
      goal.style.top = (nodes.length ? minY : ey) + "px";
      if (startNode) {
        var x1 = ex + entry.offsetWidth, y1 = ey + 26, x2 = startNode.offsetLeft - 8, y2 = startNode.offsetTop + 24;
        var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
        svg.setAttribute("class", "pc-entry-link");
        var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
        var mid = (x1 + x2) / 2;
        path.setAttribute("d", "M " + x1 + " " + y1 + " C " + mid + " " + y1 + " " + mid + " " + y2 + " " + x2 + " " + y2);
        svg.appendChild(path);
        df.precanvas.insertBefore(svg, df.precanvas.firstChild);
      }
      paintBlockProblems();
    }
    function paintBlockProblems() {
      if (!blocksOn) return;
      ["entry", "goal"].forEach(function (kind) {
        var card = df.precanvas.querySelector(".pc-block-" + kind);
        if (!card) return;
        var mine = problems.filter(function (p) { return blockOf(p) === kind; });
        var errors = mine.filter(function (p) { return p.severity !== "warning"; }).length;
        var flag = card.querySelector(".pc-flag");
        flag.textContent = mine.length ? String(errors || mine.length) : "";
        flag.title = mine.map(function (p) { return p.message; }).join("\n");
        flag.setAttribute("data-testid", mine.length ? "problem-" + kind : "");
        card.classList.toggle("pc-has-error", errors > 0);
        card.classList.toggle("pc-has-warning", !errors && mine.length > 0);
      });
    }
    function selectBlock(kind) {
      block = kind || null;
      if (block) select(null, false);
      df.precanvas.querySelectorAll(".pc-block").forEach(function (n) { n.classList.toggle("selected", n.getAttribute("data-block") === block); });
      emit("onBlock", block);
    }
    if (blocksOn) {
      var downAt = null;
      element.addEventListener("mousedown", function (e) { downAt = [e.clientX, e.clientY]; });
      element.addEventListener("click", function (e) {
        var card = e.target.closest && e.target.closest(".pc-block");
        var moved = downAt && Math.abs(e.clientX - downAt[0]) + Math.abs(e.clientY - downAt[1]) > 4;
        if (card) { selectBlock(card.getAttribute("data-block")); return; }
        if (!moved && block && !(e.target.closest && e.target.closest(".drawflow-node"))) selectBlock(null);
      });
    }

    function decorate() {
      var steps = stepsOf(doc);
      Object.keys(numOf).forEach(function (id) {
        var node = element.querySelector("#node-" + numOf[id]);
        if (!node) return;
        var step = steps[id] || {}, exits = exitsOf(step, types[step.type]);
        node.setAttribute("data-testid", "node-" + id);
        node.setAttribute("data-step-id", id);
        node.classList.toggle("pc-single", exits.length === 1);
        node.classList.toggle("pc-is-start", id === startOf(doc));
        var input = node.querySelector(".inputs .input");
        if (input) input.setAttribute("data-testid", "in-" + id);
        node.querySelectorAll(".outputs .output").forEach(function (port, i) {
          if (!exits[i]) return;
          port.setAttribute("data-testid", "port-" + id + "-" + exits[i].key);
          port.setAttribute("data-exit", exits[i].key);
          port.title = exits[i].label;
        });
        if (id === selected) { node.classList.add("selected"); df.node_selected = node; }
      });
      // heights read once every node is marked: reading between writes lays the page out per step
      Object.keys(numOf).forEach(function (id) {
        var node = element.querySelector("#node-" + numOf[id]);
        if (node) heights[id] = node.offsetHeight || DEFAULT_H;
      });
      paintProblems(); paintCounts();
    }

    function paintProblems() {
      paintBlockProblems();
      var by = {};
      problems.forEach(function (p) {
        if (!p.step) return;
        var b = by[p.step] = by[p.step] || { error: 0, warning: 0, messages: [] };
        b[p.severity === "warning" ? "warning" : "error"]++;
        b.messages.push(p.message);
      });
      Object.keys(numOf).forEach(function (id) {
        var node = element.querySelector("#node-" + numOf[id]);
        if (!node) return;
        var flag = node.querySelector(".pc-flag"), b = by[id];
        node.classList.toggle("pc-has-error", !!(b && b.error));
        node.classList.toggle("pc-has-warning", !!(b && !b.error && b.warning));
        flag.textContent = b ? String(b.error || b.warning) : "";
        flag.title = b ? b.messages.join("\n") : "";
        flag.setAttribute("data-testid", b ? "problem-" + id : "");
      });
    }

    var numberFormat = new Intl.NumberFormat(document.documentElement.lang || "en");
    function paintCounts() {
      Object.keys(numOf).forEach(function (id) {
        var node = element.querySelector("#node-" + numOf[id]);
        if (!node) return;
        var box = node.querySelector(".pc-counts"), c = counts && counts[id];
        box.textContent = "";
        node.classList.toggle("pc-counted", !!c);
        if (!c) return;
        Object.keys(c).forEach(function (label) {
          var pill = el("span", "pc-count");
          var n = c[label];  // written the page's way (10,002 / 10 002)
          pill.appendChild(el("b", null, typeof n === "number" ? numberFormat.format(n) : String(n)));
          pill.appendChild(document.createTextNode(" " + label));
          pill.setAttribute("data-testid", "count-" + id + "-" + label);
          box.appendChild(pill);
        });
      });
    }

    function changed(meta) { emit("onChange", clone(doc), meta || {}); }
    function allPositions() {
      var out = {};
      Object.keys(stepsOf(doc)).forEach(function (id) {
        var node = element.querySelector("#node-" + numOf[id]);
        var p = node ? [Math.round(node.offsetLeft), Math.round(node.offsetTop)] : positionOf(id);
        if (p) out[id] = [Math.round(p[0]), Math.round(p[1])];
      });
      return out;
    }
    function writeLayout(extra) {
      var positions = allPositions();
      Object.keys(extra || {}).forEach(function (id) { positions[id] = extra[id]; });
      doc.layout = positions;
      cache = {};
    }

    // Drawflow's events (deferred: Drawflow is still inside its mouse handler).
    df.on("nodeSelected", function (num) { setTimeout(function () { select(stepOfNum[num] || null, true); }, 0); });
    df.on("nodeUnselected", function () { setTimeout(function () { if (!df.node_selected) select(null, true); }, 0); });
    df.on("nodeMoved", function () {
      setTimeout(function () { writeLayout(); changed({ kind: "move" }); }, 0);
    });
    df.on("connectionCreated", function (c) {
      setTimeout(function () {
        var from = stepOfNum[c.output_id], to = stepOfNum[c.input_id], step = stepsOf(doc)[from];
        var exit = exitsOf(step, types[step.type])[parseInt(c.output_class.slice(7), 10) - 1];
        if (!exit) { draw(); return; }
        setPath(step, exit.path, to);
        draw(); changed({ kind: "connect" });
      }, 0);
    });
    df.on("connectionSelected", function (c) { selectedLink = c; emit("onSelectLink", c); });
    df.on("connectionUnselected", function () { selectedLink = null; emit("onSelectLink", null); });
    if (readonly) {
      element.addEventListener("click", function (e) {
        var node = e.target.closest && e.target.closest(".drawflow-node");
        select(node ? node.getAttribute("data-step-id") : null, true);
      });
    }

    function select(id, fromCanvas) {
      if (id && !stepsOf(doc)[id]) id = null;
      if (id === selected && fromCanvas) return;
      selected = id;
      if (id && block) {
        block = null;
        df.precanvas.querySelectorAll(".pc-block.selected").forEach(function (n) { n.classList.remove("selected"); });
      }
      element.querySelectorAll(".drawflow-node.selected").forEach(function (n) { n.classList.remove("selected"); });
      df.node_selected = null;
      if (id && numOf[id]) {
        var node = element.querySelector("#node-" + numOf[id]);
        if (node) { node.classList.add("selected"); df.node_selected = node; }
      }
      emit("onSelect", id);
    }

    function removeLink(link) {
      var from = stepOfNum[link.output_id], step = stepsOf(doc)[from];
      if (!step) return;
      var exit = exitsOf(step, types[step.type])[parseInt(link.output_class.slice(7), 10) - 1];
      if (exit) setPath(step, exit.path, null);
      selectedLink = null; draw(); changed({ kind: "disconnect" });
    }

    // Delete a step; a step with one way in and one way out is bridged (A → B → C becomes A → C).
    function removeStep(id) {
      var steps = stepsOf(doc), step = steps[id];
      if (!step) return;
      var own = exitsOf(step, types[step.type]);
      var successor = own.length === 1 ? getPath(step, own[0].path) : null;
      var incoming = [];
      Object.keys(steps).forEach(function (other) {
        exitsOf(steps[other], types[steps[other].type]).forEach(function (exit) {
          if (getPath(steps[other], exit.path) === id) incoming.push([other, exit]);
        });
      });
      delete steps[id];
      incoming.forEach(function (pair) {
        var bridge = incoming.length === 1 && typeof successor === "string" && successor !== id ? successor : null;
        setPath(steps[pair[0]], pair[1].path, bridge);
      });
      if (doc.start === id) delete doc.start;
      if (isObj(doc.layout)) delete doc.layout[id];
      delete cache[id];
      if (selected === id) selected = null;
      draw(); changed({ kind: "delete" }); emit("onSelect", selected);
    }

    function freshId(type) {
      var steps = stepsOf(doc), n = 1, base = type.replace(/[^A-Za-z0-9_-]/g, "_");
      while (steps[base + "_" + n]) n++;
      return base + "_" + n;
    }

    // A new step of `type` at canvas position (x, y) (default: right of the selection).
    function addStep(type, x, y) {
      var t = types[type];
      if (!t || readonly) return null;
      if (!isObj(doc.steps)) doc.steps = {};
      var id = freshId(type), step = { type: type }, props = t.schema.properties || {};
      (t.schema.required || []).forEach(function (name) {
        if (name === "type" || step[name] !== undefined) return;
        var p = props[name] || {};
        if (p.default !== undefined) step[name] = clone(p.default);
        else if (p.$ref === "#/$defs/duration") step[name] = "1d";
        else if (p.$ref === "#/$defs/condition") step[name] = { attribute: "", op: "eq", value: "" };
        else if (p.type === "array" && p.items && p.items.properties) {
          var item = {};
          (p.items.required || []).forEach(function (k) {
            var ip = p.items.properties[k] || {};
            item[k] = ip.$ref === "#/$defs/condition" ? { attribute: "", op: "eq", value: "" } : ip.type === "integer" ? 50 : "a";
          });
          step[name] = [item];
          if (item.weight !== undefined) step[name].push({ name: "b", weight: 50 });
        } else if (p.type === "integer") step[name] = 0;
        else step[name] = "";
      });
      if (x == null) {
        var near = selected && positionOf(selected) ? positionOf(selected) : null;
        var all = allPositions(), maxX = 0;
        Object.keys(all).forEach(function (k) { maxX = Math.max(maxX, all[k][0]); });
        // the first step goes right of the entry block, which sits before the start step
        x = near ? near[0] + COL : (Object.keys(all).length ? maxX + COL : ORIGIN + (blocksOn ? COL + 40 : 0));
        y = near ? near[1] : ORIGIN;
      }
      // the selected step's free single exit leads to the new one: drawing a chain is quick
      var from = selected && stepsOf(doc)[selected];
      doc.steps[id] = step;
      if (from) {
        var exits = exitsOf(from, types[from.type]);
        if (exits.length === 1 && !getPath(from, exits[0].path)) setPath(from, exits[0].path, id);
      }
      var at = {}; at[id] = [Math.round(x), Math.round(y)];
      draw(); writeLayout(at); draw();
      selected = id; select(id, false);
      changed({ kind: "add", step: id });
      return id;
    }

    function clientToCanvas(clientX, clientY) {
      var r = df.precanvas.getBoundingClientRect();
      return [(clientX - r.x) / df.zoom, (clientY - r.y) / df.zoom];
    }

    function fit() {
      var nodes = element.querySelectorAll(".drawflow-node, .pc-block");
      if (!nodes.length) return;
      var minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
      nodes.forEach(function (n) {
        minX = Math.min(minX, n.offsetLeft); minY = Math.min(minY, n.offsetTop);
        maxX = Math.max(maxX, n.offsetLeft + n.offsetWidth); maxY = Math.max(maxY, n.offsetTop + n.offsetHeight);
      });
      var W = element.clientWidth, H = element.clientHeight, pad = 60;
      var z = Math.min(1, (W - pad * 2) / (maxX - minX), (H - pad * 2) / (maxY - minY));
      z = Math.max(0.75, z);  // readable first: a long journey scrolls rather than shrinks
      var cx = (minX + maxX) / 2, cy = (minY + maxY) / 2;
      // too wide or tall at this zoom: show the start (top left) rather than the middle
      if ((maxX - minX) * z > W - pad * 2) cx = minX + (W / 2 - pad) / z;
      if ((maxY - minY) * z > H - pad * 2) cy = minY + (H / 2 - pad) / z;
      // Drawflow scales around the middle of the canvas element
      df.zoom = z; df.zoom_last_value = z;
      df.canvas_x = z * (W / 2 - cx); df.canvas_y = z * (H / 2 - cy);
      df.precanvas.style.transform = "translate(" + df.canvas_x + "px, " + df.canvas_y + "px) scale(" + z + ")";
      emit("onZoom", z);
    }

    draw();
    if (options.fit) requestAnimationFrame(fit);  // after the page laid the element out
    return {
      drawflow: df,
      getDoc: function () { return clone(doc); },
      setDoc: function (next) {
        doc = clone(next) || { steps: {} };
        if (selected && !stepsOf(doc)[selected]) { selected = null; emit("onSelect", null); }
        draw();
      },
      setProblems: function (list) { problems = list || []; paintProblems(); },
      showCounts: function (map) { counts = map || {}; paintCounts(); },
      clearCounts: function () { counts = null; paintCounts(); },
      select: function (id) { select(id, false); },
      selected: function () { return selected; },
      selectBlock: selectBlock,
      selectedBlock: function () { return block; },
      setAudienceLine: function (text) {
        audienceLine = text || "";
        var line = df.precanvas.querySelector('[data-testid="entry-count"]');
        if (line) line.textContent = audienceLine || "…";
      },
      selectedLink: function () { return selectedLink; },
      removeLink: removeLink,
      removeStep: removeStep,
      addStep: addStep,
      clientToCanvas: clientToCanvas,
      autoLayout: function () {
        var pos = layout(doc, types, heights);
        doc.layout = pos; cache = {};
        draw(); changed({ kind: "layout" }); fit();
      },
      zoomIn: function () { df.zoom_in(); },
      zoomOut: function () { df.zoom_out(); },
      fit: fit,
      exitsOf: function (id) { var s = stepsOf(doc)[id]; return s ? exitsOf(s, types[s.type]) : []; },
      destroy: function () { element.innerHTML = ""; element.classList.remove("pc-canvas", "parent-drawflow"); }
    };
  }

  window.ParcoursCanvas = {
    mount: mount,
    exitsOf: exitsOf, summary: summary, conditionText: conditionText, startOf: startOf, layout: layout
  };
})();

// ---------------------------------------------------------------- the editor page
(function () {
  "use strict";
  var data = document.getElementById("editor-data");
  if (!data) return;
  var boot = JSON.parse(data.textContent);
  var S = boot.strings;
  var root = document.getElementById("editor");
  var $ = function (sel) { return root.querySelector(sel); };
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var types = {};
  boot.nodeTypes.forEach(function (t) { types[t.type] = t; });

  function clone(v) { return v == null ? v : JSON.parse(JSON.stringify(v)); }
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }
  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (j) { j._status = r.status; return j; }, function () { return { _status: r.status, error: { message: S.save_failed } }; });
    });
  }

  // ------------------------------------------------------------------ state
  var state = {
    yaml: boot.yaml,            // the text the YAML tab shows
    good: boot.yaml,            // the last text that parsed (base of /render)
    saved: boot.yaml,           // the text on disk
    hash: boot.hash,
    doc: boot.doc || { steps: {} },
    problems: boot.problems || [],
    conflict: false,
    yamlBroken: !boot.doc && !!boot.yaml,
  };
  var history = [{ doc: clone(state.doc), yaml: state.yaml }], at = 0, lastKey = null, lastTime = 0;

  // ------------------------------------------------------------------ canvas
  var canvas = window.ParcoursCanvas.mount($(".ed-canvas"), {
    doc: state.doc, nodeTypes: boot.nodeTypes, readonly: boot.readonly, strings: S, blocks: true,
    onChange: function (doc, meta) { commit(doc, { source: "canvas", key: meta.kind === "move" ? null : meta.kind }); },
    onSelect: function () { inspect(); },
    onBlock: function () { inspect(); },
    onSelectLink: function () {}
  });
  canvas.setProblems(state.problems);

  // ------------------------------------------------------------------ palette
  (function palette() {
    var box = $(".ed-palette");
    box.appendChild(el("div", "ed-palette-title", S.palette));
    var groups = {};
    boot.nodeTypes.forEach(function (t) {
      if (!groups[t.category]) {
        groups[t.category] = el("div", "ed-group-list");
        var g = el("div", "ed-palette-group ed-" + t.category);
        g.appendChild(groups[t.category]);
        box.appendChild(g);
      }
      var item = el("div", "ed-item ed-" + t.category);
      item.setAttribute("data-testid", "palette-" + t.type);
      item.setAttribute("data-type", t.type);
      item.title = t.help;
      item.appendChild(el("span", "ed-item-dot"));
      var text = el("span", "ed-item-text");
      text.appendChild(el("span", "ed-item-label", t.label));
      text.appendChild(el("span", "ed-item-help", t.help));
      item.appendChild(text);
      if (!boot.readonly) {
        item.draggable = true;
        item.tabIndex = 0;
        item.addEventListener("dragstart", function (e) {
          e.dataTransfer.setData("application/x-parcours-step", t.type);
          e.dataTransfer.setData("text/plain", t.type);
          e.dataTransfer.effectAllowed = "copy";
        });
        item.addEventListener("dblclick", function () { canvas.addStep(t.type); });
        item.addEventListener("keydown", function (e) { if (e.key === "Enter") canvas.addStep(t.type); });
      } else {
        item.classList.add("ed-disabled");
      }
      groups[t.category].appendChild(item);
    });
    var stage = $(".ed-canvas");
    stage.addEventListener("dragover", function (e) { if (!boot.readonly) { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; } });
    stage.addEventListener("drop", function (e) {
      e.preventDefault();
      var type = e.dataTransfer.getData("application/x-parcours-step") || e.dataTransfer.getData("text/plain");
      if (!types[type] || boot.readonly) return;
      var p = canvas.clientToCanvas(e.clientX, e.clientY);
      canvas.select(null);
      canvas.addStep(type, p[0] - 110, p[1] - 30);
    });
    var hint = $(".ed-empty");
    hint.appendChild(el("div", "ed-empty-icon", "+"));
    hint.appendChild(el("strong", null, S.drag_hint));
    hint.appendChild(el("span", "muted", S.drag_sub));
  })();

  // ------------------------------------------------------------------ history and sync
  function commit(doc, opts) {
    opts = opts || {};
    state.doc = clone(doc);
    var now = Date.now();
    if (opts.key && opts.key === lastKey && now - lastTime < 1500 && at === history.length - 1) {
      history[at].doc = clone(doc);                       // typing in one field: one undo step
    } else {
      history = history.slice(0, at + 1);
      history.push({ doc: clone(doc), yaml: null });
      if (history.length > 200) history.shift();
      at = history.length - 1;
    }
    lastKey = opts.key || null; lastTime = now;
    countAudience();
    if (opts.source !== "canvas") canvas.setDoc(state.doc);
    if (opts.source !== "inspector") inspect();
    scheduleRender();
    paintEmpty(); paintButtons();
  }

  var renderTimer = null, renderSeq = 0, pending = null;
  function scheduleRender() {
    clearTimeout(renderTimer);
    renderTimer = setTimeout(renderNow, 300);
    markStatus();
  }
  function renderNow() {
    clearTimeout(renderTimer); renderTimer = null;
    var seq = ++renderSeq, entry = history[at];
    pending = post(boot.urls.render, { yaml: state.good, doc: state.doc }).then(function (r) {
      if (seq !== renderSeq) return;
      if (r._status === 200) {
        state.yaml = state.good = r.yaml; state.yamlBroken = false;
        entry.yaml = r.yaml;
        showYaml();
      }
      setProblems(r.problems || (r.error ? [{ message: r.error.message, severity: "error" }] : []));
      markStatus();
    }).catch(function () { markStatus(S.save_failed); });
    return pending;
  }
  function flush() {
    if (renderTimer) return renderNow();
    return pending || Promise.resolve();
  }

  function undo() { go(at - 1); }
  function redo() { go(at + 1); }
  function go(index) {
    if (index < 0 || index >= history.length || boot.readonly) return;
    at = index; lastKey = null;
    var entry = history[at];
    state.doc = clone(entry.doc);
    canvas.setDoc(state.doc); inspect(); paintEmpty(); paintButtons(); countAudience();
    if (entry.yaml != null) {
      state.yaml = state.good = entry.yaml; state.yamlBroken = false; showYaml();
      post(boot.urls.check, { yaml: entry.yaml }).then(function (r) { setProblems(r.problems || []); });
      markStatus();
    } else {
      scheduleRender();
    }
  }

  // ------------------------------------------------------------------ YAML tab
  var area = $('[data-testid="yaml-text"]'), gutter = $(".ed-gutter"), yamlPanel = $(".ed-yaml");
  area.readOnly = !!boot.readonly;
  function showYaml() {
    if (document.activeElement !== area || area.value !== state.yaml) {
      if (document.activeElement !== area) area.value = state.yaml;
    }
    paintGutter();
  }
  function paintGutter() {
    var lines = area.value.split("\n").length, out = [];
    var bad = {};
    state.problems.forEach(function (p) { if (p.line) bad[p.line] = p.severity === "warning" ? "w" : "e"; });
    for (var i = 1; i <= lines; i++) out.push(bad[i] ? (bad[i] === "e" ? "● " : "○ ") + i : String(i));
    gutter.textContent = out.join("\n");
    gutter.scrollTop = area.scrollTop;
  }
  area.addEventListener("scroll", function () { gutter.scrollTop = area.scrollTop; });
  var checkTimer = null, checkSeq = 0;
  area.addEventListener("input", function () {
    state.yaml = area.value; paintGutter(); markStatus();
    clearTimeout(checkTimer);
    checkTimer = setTimeout(function () {
      var seq = ++checkSeq, text = area.value;
      post(boot.urls.check, { yaml: text }).then(function (r) {
        if (seq !== checkSeq) return;
        if (r.doc) {
          state.good = text; state.yamlBroken = false;
          history = history.slice(0, at + 1);
          history.push({ doc: clone(r.doc), yaml: text }); at = history.length - 1; lastKey = null;
          state.doc = r.doc; canvas.setDoc(r.doc); inspect(); paintEmpty(); paintButtons(); countAudience();
        } else {
          state.yamlBroken = true;
        }
        setProblems(r.problems || []);
        $(".ed-yaml-state").textContent = state.yamlBroken ? S.yaml_invalid : "";
        root.classList.toggle("ed-yaml-broken", state.yamlBroken);
        markStatus();
      });
    }, 400);
  });
  function toggleYaml(on) {
    yamlPanel.hidden = !on;
    var tab = $('[data-testid="tab-yaml"]');
    tab.setAttribute("aria-pressed", on ? "true" : "false");
    tab.classList.toggle("on", on);
    root.classList.toggle("ed-with-yaml", on);
    if (on) showYaml();
  }
  function jumpToLine(line) {
    toggleYaml(true);
    var lines = area.value.split("\n"), start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    area.focus();
    area.setSelectionRange(start, start + (lines[line - 1] || "").length);
    area.scrollTop = Math.max(0, (line - 5) * 19);
    gutter.scrollTop = area.scrollTop;
  }

  // ------------------------------------------------------------------ problems
  function setProblems(list) {
    state.problems = list || [];
    canvas.setProblems(state.problems);
    var errors = state.problems.filter(function (p) { return p.severity !== "warning"; }).length;
    var warnings = state.problems.length - errors;
    var toggle = $(".ed-problems-toggle");
    toggle.classList.toggle("bad", errors > 0);
    toggle.classList.toggle("warn", !errors && warnings > 0);
    $(".ed-problems-count").textContent = state.problems.length ? S.problems + " · " + state.problems.length : S.no_problems;
    var box = $(".ed-problems");
    box.textContent = "";
    var head = el("div", "ed-problems-head", S.problems);
    head.appendChild(el("button", "ed-close", "×")).addEventListener("click", function () { box.hidden = true; });
    box.appendChild(head);
    var ul = el("ul");
    state.problems.forEach(function (p) {
      var li = el("li", p.severity === "warning" ? "warn" : "bad");
      li.appendChild(el("span", "ed-sev"));
      var text = el("span", "ed-msg", p.message + (p.hint ? " (" + p.hint + ")" : ""));
      li.appendChild(text);
      var where = el("span", "ed-where", (p.step ? p.step : "") + (p.line ? " · L" + p.line : ""));
      li.appendChild(where);
      li.tabIndex = 0;
      li.addEventListener("click", function () {
        var where = blockOf(p);
        if (where) canvas.selectBlock(where);
        else if (p.step && state.doc.steps && state.doc.steps[p.step]) canvas.select(p.step);
        else if (p.line) jumpToLine(p.line);
        if (p.line && !yamlPanel.hidden) jumpToLine(p.line);
      });
      ul.appendChild(li);
    });
    box.appendChild(ul);
    if (!state.problems.length) box.hidden = true;
    paintGutter();
    window.ParcoursInspector.markProblems(panel, state.problems);
  }
  var ENTRY_FIELDS = /^(triggers|entry|audience|kind|topic)(\.|$)/, GOAL_FIELDS = /^(goal|exit_on)(\.|$)/;
  function blockOf(p) { return p.step ? null : ENTRY_FIELDS.test(p.field || "") ? "entry" : GOAL_FIELDS.test(p.field || "") ? "goal" : null; }

  // ------------------------------------------------------------------ audience count
  // The audience as edited, counted by the server (debounced): on the entry block and its panel.
  var countTimer = null, countSeq = 0, counted, lastCount = null;
  function countText(r) {
    if (!r) return "…";
    if (r.error) return "⚠ " + r.error.message;
    if (r.count == null) return S.not_counted;
    return Number(r.count).toLocaleString() + " " + (r.count === 1 ? S.contact_matches : S.contacts_match);
  }
  function countAudience() {
    var audience = state.doc.audience == null ? null : state.doc.audience, key = JSON.stringify(audience);
    if (key === counted) return;
    counted = key;
    clearTimeout(countTimer);
    countTimer = setTimeout(function () {
      var seq = ++countSeq;
      post(boot.urls.audience, { audience: audience }).then(function (r) {
        if (seq !== countSeq) return;
        lastCount = r._status === 200 ? r : { error: (r.error || { message: S.save_failed }) };
        canvas.setAudienceLine(countText(lastCount));
        window.ParcoursInspector.showCount(panel, lastCount, S);
      }).catch(function () {});
    }, 350);
  }
  $(".ed-problems-toggle").addEventListener("click", function () {
    var box = $(".ed-problems");
    box.hidden = !box.hidden || !state.problems.length;
  });

  // ------------------------------------------------------------------ inspector
  var panel = $(".ed-inspector");
  function inspect() {
    var id = canvas.selected(), steps = state.doc.steps || {};
    var ctxBase = { boot: Object.assign({}, boot), readonly: boot.readonly, stepIds: Object.keys(steps) };
    if (id && steps[id]) {
      window.ParcoursInspector.step(panel, Object.assign(ctxBase, {
        id: id, step: steps[id], nodeType: types[steps[id].type],
        onChange: function (step, key) {
          var doc = clone(state.doc); doc.steps[id] = clone(step);
          commit(doc, { source: "inspector", key: key ? id + ":" + key : null });
          canvas.setDoc(state.doc);
        },
        onRename: rename.bind(null, id),
        onDelete: function () { canvas.removeStep(id); },
        onPreview: function (contact) {
          return flush().then(function () {
            return post(boot.urls.preview, { step: id, contact: contact || null, yaml: state.yaml });
          });
        }
      }));
    } else if (canvas.selectedBlock()) {
      var which = canvas.selectedBlock();
      window.ParcoursInspector[which](panel, Object.assign(ctxBase, {
        doc: state.doc, problems: state.problems, count: lastCount,
        onChange: function (doc, key) { commit(doc, { source: "inspector", key: which + ":" + key }); }
      }));
    } else {
      window.ParcoursInspector.scenario(panel, Object.assign(ctxBase, {
        doc: state.doc,
        onChange: function (doc, key) { commit(doc, { source: "inspector", key: "scenario:" + key }); },
        onOpen: function (which) { canvas.selectBlock(which); }
      }));
    }
  }

  // Renaming a step rewrites every link to it, `start` and its layout entry; order is kept.
  function rename(oldId, newId) {
    if (newId === oldId) return null;
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/.test(newId)) return S.id_invalid;
    var doc = clone(state.doc);
    if (doc.steps[newId]) return S.id_taken;
    var steps = {};
    Object.keys(doc.steps).forEach(function (k) { steps[k === oldId ? newId : k] = doc.steps[k]; });
    doc.steps = steps;
    Object.keys(steps).forEach(function (k) {
      var step = steps[k];
      window.ParcoursCanvas.exitsOf(step, types[step.type]).forEach(function (exit) {
        var holder = step;
        for (var i = 0; i < exit.path.length - 1; i++) holder = holder[exit.path[i]];
        if (holder[exit.path[exit.path.length - 1]] === oldId) holder[exit.path[exit.path.length - 1]] = newId;
      });
    });
    if (doc.start === oldId) doc.start = newId;
    if (doc.layout && typeof doc.layout === "object" && doc.layout[oldId]) {
      var layout = {};
      Object.keys(doc.layout).forEach(function (k) { layout[k === oldId ? newId : k] = doc.layout[k]; });
      doc.layout = layout;
    }
    commit(doc, { source: "rename" });
    canvas.select(newId);
    return null;
  }

  // ------------------------------------------------------------------ saving
  var statusEl = $('[data-testid="save-status"]');
  function dirty() { return state.yaml !== state.saved || renderTimer !== null; }
  function markStatus(text) {
    var cls = "saved", msg = S.saved;
    if (state.conflict) { cls = "conflict"; msg = S.conflict; }
    else if (text) { cls = "error"; msg = text; }
    else if (dirty()) { cls = "dirty"; msg = S.unsaved; }
    statusEl.textContent = msg;
    statusEl.className = "ed-status " + cls;
    statusEl.setAttribute("data-state", cls);
  }
  function save() {
    if (boot.readonly || state.conflict) return;
    statusEl.textContent = S.saving;
    flush().then(function () {
      var text = state.yaml;
      return post(boot.urls.save, { yaml: text, hash: state.hash }).then(function (r) {
        if (r._status === 409) { state.conflict = true; markStatus(); return; }
        if (r._status !== 200) { markStatus((r.error && r.error.message) || S.save_failed); return; }
        state.hash = r.hash; state.saved = text;
        setProblems(r.problems || []);
        markStatus();
        if (!r.publishable) statusEl.title = S.blocked;
        else statusEl.title = "";
      });
    });
  }
  window.addEventListener("beforeunload", function (e) {
    if (!boot.readonly && dirty()) { e.preventDefault(); e.returnValue = S.leave; return S.leave; }
  });

  // ------------------------------------------------------------------ toolbar and keys
  root.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("[data-action]");
    if (!b) return;
    var action = b.getAttribute("data-action");
    if (action === "undo") undo();
    else if (action === "redo") redo();
    else if (action === "save") save();
    else if (action === "layout" && !boot.readonly) canvas.autoLayout();
    else if (action === "yaml") toggleYaml(yamlPanel.hidden);
    else if (action === "zoom-in") canvas.zoomIn();
    else if (action === "zoom-out") canvas.zoomOut();
    else if (action === "fit") canvas.fit();
  });
  function typing(target) {
    return target && (/^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName) || target.isContentEditable);
  }
  document.addEventListener("keydown", function (e) {
    var mod = e.ctrlKey || e.metaKey, key = e.key.toLowerCase();
    if (mod && key === "s") { e.preventDefault(); save(); return; }
    if (typing(e.target)) return;
    if (mod && key === "z" && !e.shiftKey) { e.preventDefault(); undo(); }
    else if (mod && ((key === "z" && e.shiftKey) || key === "y")) { e.preventDefault(); redo(); }
    else if ((e.key === "Delete" || e.key === "Backspace") && !boot.readonly) {
      var link = canvas.selectedLink();
      if (link) { e.preventDefault(); canvas.removeLink(link); }
      else if (canvas.selected()) { e.preventDefault(); canvas.removeStep(canvas.selected()); }
    } else if (e.key === "Escape") canvas.select(null);
  });

  function paintEmpty() {
    var empty = !Object.keys(state.doc.steps || {}).length;
    root.classList.toggle("ed-is-empty", empty);
  }
  function paintButtons() {
    $('[data-testid="undo"]').disabled = at <= 0 || boot.readonly;
    $('[data-testid="redo"]').disabled = at >= history.length - 1 || boot.readonly;
    $('[data-testid="layout"]').disabled = boot.readonly;
  }

  showYaml(); setProblems(state.problems); inspect(); paintEmpty(); paintButtons(); markStatus(); countAudience();
  if (state.yamlBroken) toggleYaml(true);
  requestAnimationFrame(function () { canvas.fit(); });
  window.ParcoursEditor = { canvas: canvas, state: state, save: save, flush: flush };
})();
