(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var app = document.getElementById("app");
  app.textContent = "";

  // ---------- helpers ----------
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (!Object.prototype.hasOwnProperty.call(attrs, k) || attrs[k] === null || attrs[k] === undefined) continue;
        if (k === "text") node.textContent = attrs[k];
        else if (k === "cls") node.className = attrs[k];
        else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), attrs[k]);
        else node.setAttribute(k, attrs[k]);
      }
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) c.forEach(function (x) { if (x) node.appendChild(typeof x === "string" ? document.createTextNode(x) : x); });
      else node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }
  function uniq(xs) { var seen = {}, out = []; xs.forEach(function (x) { var k = String(x); if (!seen[k]) { seen[k] = 1; out.push(x); } }); return out; }
  function pct(p) { return (100 * p).toFixed(p >= 0.995 ? 0 : 1) + "%"; }
  function select(id, label, options, value, onchange) {
    var s = el("select", { id: id, onchange: function () { onchange(s.value); } });
    options.forEach(function (o) { var opt = el("option", { value: o.value, text: o.label }); if (String(o.value) === String(value)) opt.selected = true; s.appendChild(opt); });
    return el("label", null, label, s);
  }
  function overlay(imgSrc, mapSrc, cls, alt, signed) {
    var box = el("div", { cls: "ov" + (cls ? " " + cls : "") + (mapSrc ? "" : " nomap") });
    box.appendChild(el("img", { cls: "base", src: imgSrc, alt: alt || "input image" }));
    if (mapSrc) box.appendChild(el("img", { cls: "heat" + (signed ? " signed" : ""), src: mapSrc, alt: alt ? alt + " map" : "map" }));
    return box;
  }
  function colourbar(signed) {
    var stops = D.colourbars[signed ? "signed" : "unsigned"];
    var bar = el("div", { cls: "bar", style: "background: linear-gradient(to right, " + stops.join(", ") + ")" });
    var conv = signed
      ? "signed map: blue = evidence against the target, white = 0, red = evidence for it (scaled by the largest |value|)"
      : "unsigned map: each map min–max scaled to [0, 1]; red = most relevant";
    return el("div", { cls: "cbar", "data-signed": signed ? "1" : "0" },
      el("span", { text: signed ? "−max" : "0" }), bar, el("span", { text: signed ? "+max" : "1" }),
      el("div", { cls: "conv", text: conv }));
  }
  function opacityControl() {
    var r = el("input", { id: "ctl-opacity", type: "range", min: "0", max: "1", step: "0.05", value: "0.5" });
    r.addEventListener("input", function () { document.documentElement.style.setProperty("--alpha", r.value); });
    return el("label", null, "Overlay opacity", r);
  }
  function header(title, extra) {
    var meta = [];
    if (D.model) meta.push(el("span", null, "model ", el("b", { text: D.model })));
    if (D.generated) meta.push(el("span", { text: "generated " + D.generated }));
    return el("header", { cls: "top" }, el("h1", null, el("span", { cls: "brand", text: "cnnlens " }), title),
      el("div", { cls: "meta" }, meta.map(function (m, i) { return i ? el("span", null, " · ", m) : m; })), extra || null);
  }

  // ---------- explanations ----------
  function explanations() {
    var byImage = {};
    D.maps.forEach(function (m) { (byImage[m.image] = byImage[m.image] || []).push(m); });
    var images = D.images.filter(function (im) { return byImage[im.id]; });
    var S = { image: images.length ? images[0].id : null, target: null, method: null, layer: null, view: "single" };
    var imageById = {}; images.forEach(function (im) { imageById[im.id] = im; });

    app.appendChild(header("explanations", D.command ? el("code", { text: D.command }) : null));
    if (!images.length) { app.appendChild(el("p", { text: "No explanations recorded." })); return; }
    var thumbs = el("div", { cls: "thumbs", id: "thumbs" });
    images.forEach(function (im) {
      var top = im.top5 && im.top5.length ? im.top5[0].name : "";
      var b = el("button", { cls: "thumb", "data-image": im.id, title: im.source, onclick: function () { S.image = im.id; S.target = null; render(); } },
        el("img", { src: im.src, alt: im.source }), el("span", { text: im.source }), el("span", { cls: "muted", text: top }));
      thumbs.appendChild(b);
    });
    if (images.length > 1) app.appendChild(thumbs);
    var controls = el("div", { cls: "controls", id: "controls" });
    var main = el("div", { cls: "explain-main" });
    var view = el("div", { id: "view" });
    var side = el("aside", { cls: "side card", id: "side" });
    main.appendChild(view); main.appendChild(side);
    app.appendChild(controls); app.appendChild(main);

    function mapsOf() { return byImage[S.image] || []; }
    // rows of the grid: "input" first, then the longest per-method layer list (a sweep, shallow → deep), then the rest
    function layerOrder(ms) {
      var per = {};
      ms.forEach(function (m) { (per[m.method] = per[m.method] || []).push(m.layer); });
      var ref = [];
      Object.keys(per).forEach(function (k) { if (per[k].length > ref.length) ref = per[k]; });
      var all = uniq(ms.map(function (m) { return m.layer; }));
      return uniq(all.filter(function (l) { return l === "input"; }).concat(ref, all));
    }
    function render() {
      var ms = mapsOf();
      var targets = uniq(ms.map(function (m) { return m.target; }));
      if (S.target === null || targets.indexOf(S.target) < 0) S.target = targets[0];
      var mt = ms.filter(function (m) { return m.target === S.target; });
      var methods = uniq(D.methods.filter(function (x) { return mt.some(function (m) { return m.method === x; }); }));
      if (methods.indexOf(S.method) < 0) S.method = methods[0];
      var layers = layerOrder(mt.filter(function (m) { return m.method === S.method; }));
      if (layers.indexOf(S.layer) < 0) S.layer = layers[0];
      var cur = mt.filter(function (m) { return m.method === S.method && m.layer === S.layer; })[0];
      var im = imageById[S.image];

      Array.prototype.forEach.call(thumbs.children, function (b) { b.classList.toggle("on", b.getAttribute("data-image") === S.image); });
      controls.textContent = "";
      controls.appendChild(select("ctl-method", "Method", methods.map(function (x) { return { value: x, label: x }; }), S.method, function (v) { S.method = v; render(); }));
      controls.appendChild(select("ctl-layer", "Layer", layers.map(function (x) { return { value: x, label: x }; }), S.layer, function (v) { S.layer = v; render(); }));
      var tnames = {}; ms.forEach(function (m) { tnames[m.target] = m.target_name; });
      controls.appendChild(select("ctl-target", "Target", targets.map(function (t) { return { value: t, label: tnames[t] + " (" + t + ")" }; }), S.target, function (v) { S.target = Number(v); render(); }));
      controls.appendChild(opacityControl.cached || (opacityControl.cached = opacityControl()));
      var seg = el("div", { cls: "seg", role: "group" },
        el("button", { id: "view-single", cls: S.view === "single" ? "on" : "", onclick: function () { S.view = "single"; render(); } }, "Single"),
        el("button", { id: "view-grid", cls: S.view === "grid" ? "on" : "", onclick: function () { S.view = "grid"; render(); } }, "Grid: layers × methods"));
      controls.appendChild(seg);

      view.textContent = "";
      if (S.view === "single") {
        var wide = im.width > 1.4 * im.height;
        var box = overlay(im.src, cur.src, wide ? "wide" : "", cur.method + " " + cur.layer, cur.signed);
        box.id = "main-overlay";
        box.querySelector("img.heat").id = "main-heat";
        view.appendChild(el("div", { cls: "single card" }, box,
          el("div", { cls: "caption" }, el("b", { text: cur.method }), " · layer ", el("code", { text: cur.layer }), " · target ",
            el("b", { text: cur.target_name }), cur.probability !== null && cur.probability !== undefined ? " (p = " + cur.probability.toFixed(3) + ")" : ""),
          colourbar(cur.signed)));
      } else {
        var gl = layerOrder(mt);
        var t = el("table", { cls: "grid", id: "grid" });
        // every method column fits the view's width (row labels ≈ 150 px, 6 px spacing); below 80 px it scrolls
        var avail = (view.clientWidth || 900) - 34 - 150;
        var cellW = Math.max(80, Math.min(200, Math.floor(avail / Math.max(1, methods.length)) - 6));
        t.style.setProperty("--cell", cellW + "px");
        t.appendChild(el("tr", null, el("th"), methods.map(function (x) { return el("th", { text: x }); })));
        gl.forEach(function (layer) {
          var tr = el("tr", null, el("th", { cls: "row", text: layer }));
          methods.forEach(function (x) {
            var m = mt.filter(function (q) { return q.method === x && q.layer === layer; })[0];
            if (!m) { tr.appendChild(el("td", { cls: "empty", text: "—" })); return; }
            var cell = el("td", { cls: (x === S.method && layer === S.layer) ? "sel" : "", title: x + " · " + layer + " (click: single view)",
              onclick: function () { S.method = x; S.layer = layer; S.view = "single"; render(); } }, overlay(im.src, m.src, "", x + " " + layer, m.signed));
            tr.appendChild(cell);
          });
          t.appendChild(tr);
        });
        var anySigned = mt.some(function (m) { return m.signed; }), anyUnsigned = mt.some(function (m) { return !m.signed; });
        view.appendChild(el("div", { cls: "card" }, el("div", { cls: "caption" }, "target ", el("b", { text: tnames[S.target] }), " · click a map to open it"),
          el("div", { cls: "gridwrap" }, t), el("div", { cls: "cbars" }, anyUnsigned ? colourbar(false) : null, anySigned ? colourbar(true) : null)));
      }

      side.textContent = "";
      side.appendChild(el("h3", { text: im.source }));
      side.appendChild(el("img", { cls: "input", src: im.src, alt: "input " + im.source }));
      if (im.top5 && im.top5.length) {
        var tb = el("table", { cls: "top5", id: "top5" });
        im.top5.forEach(function (c) {
          tb.appendChild(el("tr", { cls: c["class"] === S.target ? "target" : "" },
            el("td", null, c.name, el("div", { cls: "pbar" }, el("i", { style: "width:" + (100 * c.probability).toFixed(1) + "%" }))),
            el("td", { cls: "p", text: pct(c.probability) })));
        });
        side.appendChild(el("div", { cls: "small muted", style: "margin-top:10px", text: "Model's top-5 classes (softmax)" }));
        side.appendChild(tb);
      }
    }
    render();
  }

  // ---------- evaluation ----------
  function fmt(v, unit, digits) {
    if (v === null || v === undefined) return "n/a";
    if (digits === undefined) digits = unit === "%" ? 2 : 4;
    return v.toFixed(digits);
  }
  function evaluation() {
    var M = D.metrics, order = D.metric_order;
    function arrow(k) { return M[k] && M[k].higher_is_better ? "↑" : "↓"; }
    function headLabel(k) { return el("span", null, k + " ", el("span", { cls: "dir", text: arrow(k) }), M[k].unit ? " (" + M[k].unit + ")" : ""); }
    var id = D.identity || {}, ds = id.dataset || {};
    app.appendChild(header("evaluation", ds.name ? el("span", { cls: "meta" }, "data ", el("b", { text: ds.name }), ds.n !== undefined ? " (" + ds.n + " images)" : "") : null));
    app.appendChild(el("nav", { cls: "tabs" }, el("a", { href: "#summary", text: "Summary" }), el("a", { href: "#plots", text: "Plots" }), el("a", { href: "#per-image", text: "Per image" })));
    if (D.partial) app.appendChild(el("p", { cls: "card warn", id: "partial", text: "Partial results: " + D.partial.units_done + (D.partial.units_total ? " of " + D.partial.units_total : "") + " units (a block of images × one method) finished; the run was interrupted. Run the same command again to finish it." }));

    // summary table
    var sec = el("section", { id: "summary" }, el("h2", { text: "Summary (mean ± s.e.)" }));
    var t = el("table", { cls: "data", id: "summary-table" });
    t.appendChild(el("thead", null, el("tr", null, el("th", { cls: "l", text: "method" }), el("th", { cls: "l", text: "layer" }), el("th", { text: "n" }),
      order.map(function (k) { return el("th", { title: M[k].description || "" }, headLabel(k)); }), el("th", { text: "s/map" }))));
    var best = {};
    D.rows.forEach(function (r) {
      order.forEach(function (k) {
        var c = r[k]; if (!c || c.mean === null || c.mean === undefined) return;
        var key = r.layer + "|" + k, b = best[key];
        if (b === undefined || (M[k].higher_is_better ? c.mean > b : c.mean < b)) best[key] = c.mean;
      });
    });
    // a best value every row of the layer shares (all tied) is no winner: not highlighted
    var tied = {};
    Object.keys(best).forEach(function (key) {
      var parts = key.split("|"), layer = parts[0], k = parts.slice(1).join("|");
      tied[key] = D.rows.every(function (r) { var c = r[k]; return String(r.layer) !== layer || !c || c.mean === null || c.mean === undefined || c.mean === best[key]; });
    });
    // partial results: the methods' rows cover different images, so no row is marked best
    var multi = !D.partial && D.rows.length > 1 && uniq(D.rows.map(function (r) { return r.method; })).length > 1;
    var tb = el("tbody"), prevLayer = null;
    D.rows.slice().sort(function (a, b) { return D.layers.indexOf(String(a.layer)) - D.layers.indexOf(String(b.layer)) || D.methods.indexOf(a.method) - D.methods.indexOf(b.method); })
      .forEach(function (r) {
        var tr = el("tr", { cls: prevLayer !== null && prevLayer !== r.layer ? "grp" : "" }, el("td", { cls: "l", text: r.method }), el("td", { cls: "l" }, el("code", { text: String(r.layer) })), el("td", { text: String(r.n) }));
        prevLayer = r.layer;
        order.forEach(function (k) {
          var c = r[k];
          if (!c || c.mean === null || c.mean === undefined) { tr.appendChild(el("td", { cls: "na", text: c && c.na ? "n/a (" + c.na + ")" : "n/a" })); return; }
          var isBest = multi && best[r.layer + "|" + k] === c.mean && !tied[r.layer + "|" + k];
          tr.appendChild(el("td", { cls: isBest ? "best" : "", title: "n = " + c.n }, fmt(c.mean, M[k].unit), el("span", { cls: "se", text: " ± " + fmt(c.se, M[k].unit) })));
        });
        tr.appendChild(el("td", { text: r.seconds !== undefined && r.seconds !== null ? r.seconds.toPrecision(2) : "" }));
        tb.appendChild(tr);
      });
    t.appendChild(tb);
    sec.appendChild(el("div", { cls: "tablewrap card", style: "padding:0" }, t));
    var skipped = D.skipped, nSkipped = 0;
    if (typeof skipped === "number") nSkipped = skipped;
    else if (skipped && typeof skipped === "object") Object.keys(skipped).forEach(function (k) { nSkipped += Number(skipped[k]) || 0; });
    if (nSkipped > 0) {
      var why = typeof skipped === "object" ? " (" + Object.keys(skipped).filter(function (k) { return skipped[k]; }).map(function (k) { return k.replace(/_/g, " ") + ": " + skipped[k]; }).join(", ") + ")" : "";
      var bad = Object.keys(D.unreadable || {}).sort(), named = bad.slice(0, 3).map(function (k) { return String(D.unreadable[k]).replace(/\.$/, ""); });
      if (bad.length > 3) named.push((bad.length - 3) + " more in summary.json");
      why += named.length ? " — " + named.join("; ") : "";
      sec.appendChild(el("p", { cls: "small warn", id: "skipped", text: nSkipped + " image" + (nSkipped === 1 ? "" : "s") + " of the dataset skipped" + why + "." }));
    }
    sec.appendChild(el("p", { cls: "small muted" }, "↑ higher is better, ↓ lower is better; best per layer in bold green (none where all tie). Hover a column for its definition."));
    var conv = el("div", { cls: "card", id: "conventions" }, el("h3", { text: "Conventions" }), el("p", { cls: "small", style: "margin-top:0", text: D.conventions || "—" }));
    var dl = el("dl", { cls: "metrics" });
    order.forEach(function (k) { dl.appendChild(el("dt", null, headLabel(k))); dl.appendChild(el("dd", { text: M[k].description || "" })); });
    conv.appendChild(dl);
    if (id.config) {
      var cfg = el("table", { cls: "data", style: "width:auto" });
      Object.keys(id.config).forEach(function (k) { cfg.appendChild(el("tr", null, el("td", { cls: "l", text: k }), el("td", { cls: "l", text: JSON.stringify(id.config[k]) }))); });
      conv.appendChild(el("details", null, el("summary", { text: "Run configuration" }), cfg,
        el("p", { cls: "small muted", text: JSON.stringify({ model: id.model, dataset: id.dataset }) })));
    }
    sec.appendChild(conv);
    app.appendChild(sec);

    // plots
    var ps = el("section", { id: "plots" }, el("h2", { text: "Plots" }));
    var pg = el("div", { cls: "plots" });
    D.plots.forEach(function (p) { pg.appendChild(el("figure", null, el("img", { src: p.src, alt: p.title }), el("figcaption", { text: p.title }))); });
    if (!D.plots.length) ps.appendChild(el("p", { cls: "muted", text: D.partial ? "The plots are drawn when the run finishes." : "No plots in this folder (run without --no-plots)." }));
    ps.appendChild(pg);
    app.appendChild(ps);

    // per-image table. The records come as columns (D.table: numbers, indices into string lists, run-length encoded
    // runs); a row object is built only when a row is drawn or opened. Up to LIMIT rows are drawn at once; a longer
    // list (ImageNet val × methods: 450,000 rows) draws only the rows in view (the rest are two spacers).
    var T = D.table, N = T.n;
    function bytes(b64) { var s = atob(b64), u = new Uint8Array(s.length); for (var k = 0; k < s.length; k++) u[k] = s.charCodeAt(k); return u; }
    function column(c) {        // run-length runs, float32 / byte columns (base64), or a plain list
      if (c && c.f32 !== undefined) return new Float32Array(bytes(c.f32).buffer);
      if (c && c.u8 !== undefined) return bytes(c.u8);
      if (!c || !c.rle) return c;
      var out = new Array(N), k = 0, runs = c.rle;
      for (var a = 0; a < runs.length; a += 2) for (var b = 0; b < runs[a + 1]; b++) out[k++] = runs[a];
      return out;
    }
    var C = {};
    ["sample", "target", "target_name", "method", "layer", "notes", "flags", "image", "map"].forEach(function (k) { C[k] = column(T[k]); });
    var V = T.values.map(column);
    function value(col, i) { var v = col[i]; return v !== v ? null : v; }      // NaN: no value
    function rec(i) {
      return { i: i, sample: T.samples[C.sample[i]], target: C.target[i], target_name: T.target_names[C.target_name[i]],
        method: D.methods[C.method[i]], layer: D.layers[C.layer[i]], values: V.map(function (col) { return value(col, i); }),
        notes: T.note_sets[C.notes[i]] || {}, flags: T.flag_sets[C.flags[i]] || [],
        image: C.image[i] < 0 ? null : C.image[i], map: C.map[i] < 0 ? null : C.map[i], curves: T.curves[i] || {} };
    }
    // string columns sort by the rank of their value, computed once per distinct string on the first sort
    var collator = new Intl.Collator(undefined, { numeric: true });
    function ranks(list) {
      var idx = list.map(function (_, i) { return i; });
      idx.sort(function (a, b) { return collator.compare(String(list[a]), String(list[b])); });
      var r = new Int32Array(list.length); idx.forEach(function (v, k) { r[v] = k; }); return r;
    }
    var LISTS = { sample: T.samples, target_name: T.target_names, method: D.methods, layer: D.layers }, RANK = {};
    var pi = el("section", { id: "per-image" }, el("h2", { text: "Per image (" + N + " maps) — click a row to see that image's maps" }));
    var F = { method: "", layer: "", q: "" }, sortKey = null, sortDir = 1, selected = -1;
    var filters = el("div", { cls: "controls" },
      select("filter-method", "Method", [{ value: "", label: "all" }].concat(D.methods.map(function (x) { return { value: x, label: x }; })), "", function (v) { F.method = v; applyFilter(); }),
      select("filter-layer", "Layer", [{ value: "", label: "all" }].concat(D.layers.map(function (x) { return { value: x, label: x }; })), "", function (v) { F.layer = v; applyFilter(); }),
      el("label", null, "Sample", el("input", { type: "search", id: "filter-sample", placeholder: "filter…", oninput: function (e) { F.q = e.target.value.toLowerCase(); applyFilter(); } })),
      opacityControl.cached || (opacityControl.cached = opacityControl()));
    pi.appendChild(filters);
    var cols = [{ key: "sample", label: "sample", l: 1 }, { key: "target_name", label: "target", l: 1 }, { key: "method", label: "method", l: 1 }, { key: "layer", label: "layer", l: 1 }]
      .concat(order.map(function (k, i) { return { key: i, label: k, metric: k }; }));
    var rt = el("table", { cls: "data", id: "records" });
    var htr = el("tr");
    cols.forEach(function (c) {
      var th = el("th", { cls: c.l ? "l" : "", "data-key": String(c.key), title: c.metric ? (M[c.metric].description || "") + " — click to sort" : "click to sort" }, c.metric ? headLabel(c.metric) : c.label);
      th.addEventListener("click", function () { if (sortKey === c.key) sortDir = -sortDir; else { sortKey = c.key; sortDir = c.metric && !M[c.metric].higher_is_better ? 1 : (c.metric ? -1 : 1); } sortRows(); });
      htr.appendChild(th);
    });
    rt.appendChild(el("thead", null, htr));
    var body = el("tbody");
    rt.appendChild(body);
    function makeRow(i) {
      var r = rec(i);
      var tr = el("tr", { "data-index": String(i), "data-sample": r.sample, cls: i === selected ? "on" : null });
      tr.appendChild(el("td", { cls: "l", text: r.sample }));
      tr.appendChild(el("td", { cls: "l", text: r.target_name }));
      tr.appendChild(el("td", { cls: "l", text: r.method }));
      tr.appendChild(el("td", { cls: "l" }, el("code", { text: r.layer })));
      r.values.forEach(function (v, j) {
        var k = order[j];
        tr.appendChild(el("td", { cls: v === null ? "na" : "", title: v === null ? (r.notes[k] || "n/a") : "", text: v === null ? "n/a" : fmt(v, M[k].unit, M[k].unit === "%" ? 1 : 3) }));
      });
      tr.addEventListener("click", function () { showDetail(i); });
      return tr;
    }
    var LIMIT = 1500, WINDOW = 160, rowH = 0, drawnFrom = -1;
    var all = new Array(N); for (var q = 0; q < N; q++) all[q] = q;
    var view = all;
    var wrap = el("div", { cls: "tablewrap" }, rt);
    function spacer(h) { return el("tr", { cls: "spacer" }, el("td", { colspan: String(cols.length), style: "height:" + h + "px" })); }
    function draw(force) {
      var frag = document.createDocumentFragment();
      if (view.length <= LIMIT) {
        rt.classList.remove("virtual");
        body.textContent = "";
        view.forEach(function (i) { frag.appendChild(makeRow(i)); });
        body.appendChild(frag);
        return;
      }
      rt.classList.add("virtual");
      if (!rowH) { body.textContent = ""; var probe = makeRow(view[0]); body.appendChild(probe); rowH = probe.getBoundingClientRect().height || 27; }
      var top = Math.max(0, Math.floor((wrap.scrollTop - rt.tHead.offsetHeight) / rowH) - WINDOW / 4);
      top -= top % 20;
      if (!force && top === drawnFrom) return;
      drawnFrom = top;
      var end = Math.min(view.length, top + WINDOW);
      body.textContent = "";
      frag.appendChild(spacer(top * rowH));
      for (var k = top; k < end; k++) frag.appendChild(makeRow(view[k]));
      frag.appendChild(spacer((view.length - end) * rowH));
      body.appendChild(frag);
    }
    var pending = false;
    wrap.addEventListener("scroll", function () {
      if (view.length <= LIMIT || pending) return;
      pending = true; requestAnimationFrame(function () { pending = false; draw(false); });
    });
    var detail = el("aside", { id: "detail", cls: "card" }, el("div", { cls: "empty-hint", text: "Click a row of the table to see that image's maps for every method and layer, with their metric values." }));
    pi.appendChild(el("div", { cls: "split" }, wrap, detail));
    app.appendChild(pi);
    draw(true);

    function sortRows() {
      Array.prototype.forEach.call(htr.children, function (th) { th.removeAttribute("aria-sort"); if (th.getAttribute("data-key") === String(sortKey)) th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending"); });
      var cmp;
      if (typeof sortKey === "number") {
        var col = V[sortKey];
        cmp = function (a, b) {
          var x = col[a], y = col[b];
          if (x !== x || x === null || x === undefined) return (y !== y || y === null || y === undefined) ? a - b : 1;
          if (y !== y || y === null || y === undefined) return -1;
          return (x - y) * sortDir || a - b;
        };
      } else {
        var rk = RANK[sortKey] || (RANK[sortKey] = ranks(LISTS[sortKey])), ix = C[sortKey];
        cmp = function (a, b) { return (rk[ix[a]] - rk[ix[b]]) * sortDir || a - b; };
      }
      all.sort(cmp);
      applyFilter();
    }
    function applyFilter() {
      var okSample = null;
      if (F.q) {
        okSample = T.samples.map(function (s) { return String(s).toLowerCase().indexOf(F.q) >= 0; });
        var okName = T.target_names.map(function (s) { return String(s).toLowerCase().indexOf(F.q) >= 0; });
      }
      var mi = F.method ? D.methods.indexOf(F.method) : -1, li = F.layer ? D.layers.indexOf(F.layer) : -1;
      view = (mi < 0 && li < 0 && !okSample) ? all : all.filter(function (i) {
        return (mi < 0 || C.method[i] === mi) && (li < 0 || C.layer[i] === li) && (!okSample || okSample[C.sample[i]] || okName[C.target_name[i]]);
      });
      wrap.scrollTop = 0; drawnFrom = -1;
      draw(true);
    }
    function curvesSvg(recs, kind, dashed) {
      var W = 200, H = 120, P = 22;
      var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("class", "curves"); svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("viewBox", "0 0 " + W + " " + H);
      function add(tag, attrs, text) { var n = document.createElementNS("http://www.w3.org/2000/svg", tag); for (var k in attrs) n.setAttribute(k, attrs[k]); if (text) n.textContent = text; svg.appendChild(n); return n; }
      add("line", { x1: P, y1: H - P, x2: W - 6, y2: H - P, stroke: "#c5ccd8" }); add("line", { x1: P, y1: 6, x2: P, y2: H - P, stroke: "#c5ccd8" });
      add("text", { x: P + 4, y: 14 }, kind); add("text", { x: 2, y: H - P + 3 }, "0"); add("text", { x: 2, y: 12 }, "1");
      add("text", { x: W - 70, y: H - 6 }, "fraction of pixels");
      recs.forEach(function (r) {
        var c = r.curves[kind]; if (!c || c.length < 2) return;
        var pts = c.map(function (v, i) { return (P + (W - 6 - P) * i / (c.length - 1)).toFixed(1) + "," + (H - P - (H - P - 6) * Math.max(0, Math.min(1, v))).toFixed(1); }).join(" ");
        var line = { points: pts, fill: "none", stroke: PALETTE[D.methods.indexOf(r.method) % PALETTE.length], "stroke-width": "1.6" };
        if (dashed) line["stroke-dasharray"] = "4 2";
        add("polyline", line);
      });
      return svg;
    }
    var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
    // "n/a (no boxes): pointing-game, iou" — metrics without a value for this image, with the run's reason
    function naLine(recs) {
      var why = {};
      recs.forEach(function (r) { order.forEach(function (k, j) { if (r.values[j] === null) { var w = r.notes[k] || "n/a"; (why[w] = why[w] || []).push(k); } }); });
      var parts = Object.keys(why).map(function (w) { return w + ": " + uniq(why[w]).join(", "); });
      return parts.length ? el("div", { cls: "small na-note", text: parts.join("; ") }) : null;
    }
    var bySample = null;     // sample → its records, built on the first click
    function sameImage(i) {
      if (!bySample) {
        bySample = new Array(T.samples.length);
        for (var k = 0; k < N; k++) { var s0 = C.sample[k]; (bySample[s0] || (bySample[s0] = [])).push(k); }
      }
      var t = JSON.stringify(C.target[i]);
      return bySample[C.sample[i]].filter(function (k) { return C.target[k] === C.target[i] || JSON.stringify(C.target[k]) === t; }).map(rec);
    }
    function showDetail(i) {
      var r0 = rec(i);
      selected = i;
      Array.prototype.forEach.call(body.children, function (tr) { tr.classList.toggle("on", tr.getAttribute("data-index") === String(i)); });
      var same = sameImage(i);
      var img = null; same.forEach(function (r) { if (img === null && r.image !== null && r.image !== undefined) img = D.images[r.image]; });
      detail.textContent = "";
      detail.setAttribute("data-sample", r0.sample);
      var head = el("div", { cls: "detail-head" }, img ? el("img", { src: img, alt: "input " + r0.sample }) : null,
        el("div", null, el("h3", { text: r0.sample }), el("div", null, "target ", el("b", { text: r0.target_name }), " (" + r0.target + ")"),
          el("div", { cls: "small muted", text: same.length + " maps: " + uniq(same.map(function (r) { return r.method; })).length + " methods × " + uniq(same.map(function (r) { return r.layer; })).length + " layers" }),
          naLine(same),
          same.some(function (r) { return r.flags.length; }) ? el("div", { cls: "small muted", text: "flags: " + uniq([].concat.apply([], same.map(function (r) { return r.flags.map(function (f) { return r.method + "@" + r.layer + " " + f; }); }))).join(", ") }) : null));
      detail.appendChild(head);
      var methods = D.methods.filter(function (m) { return same.some(function (r) { return r.method === m; }); });
      var layers = D.layers.filter(function (l) { return same.some(function (r) { return r.layer === l; }); });
      var g = el("table", { cls: "detail-grid" });
      var cw = Math.max(100, Math.min(140, Math.floor((detail.clientWidth - 100) / Math.max(1, methods.length)) - 6));
      g.style.setProperty("--dcell", cw + "px");
      g.appendChild(el("tr", null, el("th"), methods.map(function (m) { return el("th", { text: m }); })));
      layers.forEach(function (l) {
        var tr = el("tr", null, el("th", { cls: "row", text: l }));
        methods.forEach(function (m) {
          var r = same.filter(function (q) { return q.method === m && q.layer === l; })[0];
          if (!r) { tr.appendChild(el("td", { cls: "detail-cell" }, "—")); return; }
          var pic = (img && r.map !== null && r.map !== undefined) ? overlay(img, D.maps[r.map], "", m + " " + l, D.signed[m])
            : el("div", { cls: "nomap-note", text: "map not stored (the run saved maps for its first --save-maps images)" });
          var mv = el("div", { cls: "mv" });
          order.forEach(function (k, j) {
            var v = r.values[j];
            mv.appendChild(el("div", { title: k + ": " + (v === null ? (r.notes[k] || "n/a") : M[k].description || "") }, el("span", { text: k + " " + arrow(k) }),
              el("b", { cls: v === null ? "na" : "", text: v === null ? "n/a" : fmt(v, M[k].unit, M[k].unit === "%" ? 1 : 3) + (M[k].unit === "%" ? "%" : "") })));
          });
          tr.appendChild(el("td", { cls: "detail-cell" + (r.i === i ? " sel" : "") }, pic, mv));
        });
        g.appendChild(tr);
      });
      detail.appendChild(el("div", { style: "overflow-x:auto" }, g));
      var signedAny = methods.some(function (m) { return D.signed[m]; }), unsignedAny = methods.some(function (m) { return !D.signed[m]; });
      if (img) { if (unsignedAny) detail.appendChild(colourbar(false)); if (signedAny) detail.appendChild(el("div", null, colourbar(true))); }
      var atLayer = same.filter(function (r) { return r.layer === r0.layer && (r.curves.deletion || r.curves.insertion); });
      var mean = false;
      if (!atLayer.length) {     // this image's curves are not kept (no saved map): the method's mean at this layer
        atLayer = methods.map(function (m) { var c = (T.curve_means || {})[m + "\t" + r0.layer]; return c ? { method: m, curves: c } : null; })
          .filter(function (r) { return r && (r.curves.deletion || r.curves.insertion); });
        mean = atLayer.length > 0;
      }
      if (atLayer.length) {
        var kinds = ["deletion", "insertion"].filter(function (k) { return atLayer.some(function (r) { return r.curves[k]; }); });
        var kindText = kinds.join(" / ");
        detail.appendChild(el("h3", { style: "margin-top:12px", text: kindText.charAt(0).toUpperCase() + kindText.slice(1) + " curve" + (kinds.length > 1 ? "s" : "") + " at " + r0.layer + (mean ? ", mean over " + atLayer[0].curves.n + " images (per-image curves are kept for the images with saved maps)" : " (class score vs fraction of pixels)") }));
        detail.appendChild(el("div", { style: "display:flex;gap:8px;flex-wrap:wrap" }, kinds.map(function (k) { return curvesSvg(atLayer, k, mean); })));
        detail.appendChild(el("div", { cls: "legend" }, atLayer.map(function (r) { return el("span", null, el("i", { style: "background:" + PALETTE[D.methods.indexOf(r.method) % PALETTE.length] }), r.method); })));
      }
    }
  }

  if (D.kind === "explanations") explanations(); else evaluation();
  document.body.setAttribute("data-ready-ms", String(Math.round(performance.now())));
  document.body.setAttribute("data-ready", "1");
})();
