// hiper viewer. Reads the JSON payload of hiper.viz.data from #hiper-data and builds the learning
// curves (SVG made with DOM calls), the metric picker and the trajectory browser. Every piece of
// model or environment text, and every metric or run name, goes into the page through textContent
// or setAttribute, never as markup, so a response holding HTML shows as text.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("hiper-data").textContent);
  const S = D.strings;
  const TF = {}, UF = {};
  D.traj_fields.forEach((k, i) => (TF[k] = i));
  D.turn_fields.forEach((k, i) => (UF[k] = i));
  const T = D.trajectories;
  const PAGE = 50;
  const LEVELS = {switch: ["adv_switch", "A^S"], subgoal: ["adv_subgoal", "A^H"], action: ["adv_action", "A^L"]};
  const SATURATE = 2.0; // |advantage| at which the colour is fully saturated (advantages are standardised)
  const $ = (id) => document.getElementById(id);
  const RUNS = D.runs;
  const MANY = RUNS.length > 1;
  const MODE_LABEL = {success: "success", loop: "loop", noop: "no-op", timeout: "timeout", malformed: "malformed"};

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmt(x, d) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(d === undefined ? 3 : d);
  }
  function advColour(a) {
    if (a === null || a === undefined) return "";
    const s = Math.min(Math.abs(a) / SATURATE, 1);
    const alpha = (0.12 + 0.68 * s).toFixed(3);
    return a >= 0 ? `rgba(26, 152, 80, ${alpha})` : `rgba(215, 48, 39, ${alpha})`;
  }


  // ---- learning curves -----------------------------------------------------------------------
  // One drawing rule for every chart. Colour: with one run, what a series is (train blue, eval red,
  // any other key its own colour, the same in every chart); with several runs, the run, and the
  // line style tells train (solid) from eval (dashed) and the other series apart.
  const SVGNS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
  const KEY_COLOUR = new Map([["train", PALETTE[0]], ["eval", PALETTE[1]]]);
  const DASHES = ["", "6,3", "2,2", "8,3,2,3"];
  const KEY_DASH = new Map([["train", 0], ["eval", 1]]);
  function keyColour(key) {
    if (!KEY_COLOUR.has(key)) KEY_COLOUR.set(key, PALETTE[2 + ((KEY_COLOUR.size - 2) % (PALETTE.length - 2))]);
    return KEY_COLOUR.get(key);
  }
  function keyDash(key) {
    if (!KEY_DASH.has(key)) KEY_DASH.set(key, KEY_DASH.size % DASHES.length);
    return DASHES[KEY_DASH.get(key)];
  }
  function lineStyle(key, run) {
    return MANY ? {colour: PALETTE[run % PALETTE.length], dash: keyDash(key)} : {colour: keyColour(key), dash: ""};
  }
  // the style key of a metric plotted on its own: its split prefix, else its name
  function metricKey(name) {
    const head = name.split("/")[0];
    return head === "train" || head === "eval" ? head : name;
  }

  // about n round ticks covering [lo, hi]: the step is the one of 1, 2, 5 x 10^k nearest (in
  // ratio) to (hi - lo) / (n - 1), at least minStep
  function niceTicks(lo, hi, n, minStep) {
    n = n || 5;
    if (hi < lo) [lo, hi] = [hi, lo];
    if (hi === lo) { const pad = Math.abs(lo) * 0.1 || 1; lo -= pad; hi += pad; }
    const raw = (hi - lo) / Math.max(n - 1, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = mag, best = Infinity;
    for (const m of [1, 2, 5, 10]) {
      const d = Math.abs(Math.log((m * mag) / raw));
      if (d < best) { best = d; step = m * mag; }
    }
    if (minStep && step < minStep) step = minStep;
    const first = Math.floor(lo / step + 1e-9) * step;
    const ticks = [];
    for (let k = 0; k < 100; k++) {
      const t = first + k * step;
      ticks.push(Number(t.toPrecision(12)));
      if (t >= hi - 1e-9 * step) break;
    }
    return ticks;
  }
  // one formatting rule per axis: fixed decimals from the tick step (0.05 -> 2 decimals), or, when
  // the values are huge (>= 1e5) or the step tiny (< 1e-4), exponents with the same mantissa digits
  function tickFormat(ticks) {
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
    const big = Math.max(...ticks.map(Math.abs));
    if (big >= 1e5 || step < 1e-4) {
      const digits = Math.max(0, Math.floor(Math.log10(big || 1)) - Math.floor(Math.log10(step)));
      return (v) => (v === 0 ? "0" : v.toExponential(Math.min(digits, 6)));
    }
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return (v) => v.toFixed(decimals);
  }
  function fmtValue(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a >= 1e5 || a < 1e-4 ? v.toExponential(3) : String(Number(v.toPrecision(4)));
  }
  // exponential moving average over a series' points: s0 = y0, s_t = w s_{t-1} + (1 - w) y_t
  function smooth(pts, w) {
    const out = [];
    let s = null;
    for (const [x, y] of pts) {
      s = s === null ? y : w * s + (1 - w) * y;
      out.push([x, s]);
    }
    return out;
  }
  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  // lines: [{label, colour, dash, pts: [[x, y]], std: Map(x -> s) | null}]
  function chart(title, lines) {
    const W = 440, left = 58, right = 14, top = 26, PH = 170, pw = W - left - right;
    const drawn = lines.filter((l) => l.pts.length);
    const cols = drawn.every((l) => l.label.length <= 30) ? 2 : 1;
    const legendTop = top + PH + 46;
    const H = legendTop + 14 * Math.ceil(drawn.length / cols) + 4;
    const svg = svgEl("svg", {class: "plot", role: "img", width: W, height: H, viewBox: `0 0 ${W} ${H}`});
    svg.setAttribute("aria-label", title);
    svg.dataset.title = title;
    svg.dataset.series = String(drawn.length);
    svg.appendChild(svgEl("text", {class: "plot-title", x: W / 2, y: 16, "text-anchor": "middle"}, title));
    if (!drawn.length) {
      svg.appendChild(svgEl("text", {x: W / 2, y: top + PH / 2, "text-anchor": "middle"}, "no data"));
      return svg;
    }
    const w = state.smooth;
    for (const l of drawn) l.smoothed = w > 0 ? smooth(l.pts, w) : l.pts;
    const xs = [], ys = [];
    for (const l of drawn) {
      for (const [x, y] of l.pts) {
        xs.push(x); ys.push(y);
        const s = l.std ? l.std.get(x) : undefined;
        if (s !== undefined) ys.push(y - s, y + s);
      }
    }
    const xt = niceTicks(Math.min(...xs), Math.max(...xs), 6, 1);
    const yt = niceTicks(Math.min(...ys), Math.max(...ys), 5);
    const x0 = xt[0], x1 = xt[xt.length - 1], y0 = yt[0], y1 = yt[yt.length - 1];
    const sx = (x) => left + ((x - x0) / (x1 - x0 || 1)) * pw;
    const sy = (y) => top + PH - ((y - y0) / (y1 - y0 || 1)) * PH;
    const fy = tickFormat(yt), fx = tickFormat(xt);
    for (const t of yt) {
      svg.appendChild(svgEl("line", {class: "grid", x1: left, x2: left + pw, y1: sy(t).toFixed(1), y2: sy(t).toFixed(1)}));
      svg.appendChild(svgEl("text", {class: "tick ytick", x: left - 4, y: (sy(t) + 3.5).toFixed(1), "text-anchor": "end"}, fy(t)));
    }
    for (const t of xt) {
      svg.appendChild(svgEl("text", {class: "tick xtick", x: sx(t).toFixed(1), y: top + PH + 14, "text-anchor": "middle"}, fx(t)));
    }
    svg.appendChild(svgEl("rect", {class: "frame", x: left, y: top, width: pw, height: PH, fill: "none"}));
    svg.appendChild(svgEl("text", {class: "axis", x: left + pw / 2, y: top + PH + 30, "text-anchor": "middle"}, "iteration"));
    drawn.forEach((l, i) => {
      const g = svgEl("g", {class: "series-group"});
      g.dataset.name = l.label;
      const path = (pts) => pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
      if (w > 0) g.appendChild(svgEl("polyline", {class: "raw", fill: "none", stroke: l.colour, "stroke-width": 1, "stroke-opacity": 0.3, "stroke-dasharray": l.dash, points: path(l.pts)}));
      const line = svgEl("polyline", {class: "series", fill: "none", stroke: l.colour, "stroke-width": 1.8, "stroke-dasharray": l.dash, points: path(l.smoothed)});
      line.dataset.name = l.label;
      g.appendChild(line);
      for (const [x, y] of l.pts) {
        const s = l.std ? l.std.get(x) : undefined;
        if (s !== undefined && s > 0) {
          const cx = sx(x).toFixed(1);
          g.appendChild(svgEl("path", {class: "errbar", stroke: l.colour, "stroke-opacity": 0.7, fill: "none",
            d: `M${cx - 3},${sy(y - s).toFixed(1)}h6M${cx},${sy(y - s).toFixed(1)}V${sy(y + s).toFixed(1)}M${cx - 3},${sy(y + s).toFixed(1)}h6`}));
        }
        const c = svgEl("circle", {cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: w > 0 ? 1.5 : 2.2, fill: l.colour});
        c.appendChild(svgEl("title", {}, `${l.label}: ${fmtValue(y)}${s !== undefined ? " ± " + fmtValue(s) : ""} at ${x}`));
        g.appendChild(c);
      }
      svg.appendChild(g);
      const lx = left + (i % cols) * (pw / 2), ly = legendTop + 14 * Math.floor(i / cols);
      svg.appendChild(svgEl("line", {x1: lx, x2: lx + 16, y1: ly - 4, y2: ly - 4, stroke: l.colour, "stroke-width": 2.5, "stroke-dasharray": l.dash}));
      svg.appendChild(svgEl("text", {class: "legend", x: lx + 20, y: ly}, l.label));
    });
    return svg;
  }

  function seriesOf(run, metric, transform) {
    const pts = run.metrics[metric];
    if (!pts || !pts.length) return null;
    if (transform === "square") return {pts: pts.map(([x, y]) => [x, y * y]), std: null};
    const sname = run.metric_std[metric];
    const std = sname && run.metrics[sname] ? new Map(run.metrics[sname]) : null;
    return {pts, std};
  }
  function panelLines(series) {
    const lines = [];
    RUNS.forEach((run, k) => {
      for (const s of series) {
        const got = seriesOf(run, s.metric, s.transform);
        if (!got) continue;
        const st = lineStyle(s.key, k);
        lines.push({label: MANY ? `${run.name} · ${s.label}` : s.label, colour: st.colour, dash: st.dash, pts: got.pts, std: got.std});
      }
    });
    return lines;
  }
  function renderCurves() {
    const box = $("curves");
    if (!box) return;
    box.replaceChildren();
    for (const p of D.panels) box.appendChild(chart(p.title, panelLines(p.series)));
    renderPicked();
  }
  function renderPicked() {
    const box = $("picked");
    if (!box) return;
    box.replaceChildren();
    const m = state.metric;
    if (m) box.appendChild(chart(m, panelLines([{metric: m, label: m, key: metricKey(m)}])));
  }
  function initCurves() {
    const pick = $("metric-pick");
    if (!pick) return;
    pick.appendChild(new Option("pick any logged metric…", ""));
    const names = new Set();
    for (const r of RUNS) for (const k in r.metrics) names.add(k);
    const groups = new Map();
    for (const k of Array.from(names).sort()) {
      const g = k.includes("/") ? k.split("/")[0] : "(other)";
      if (!groups.has(g)) { const og = document.createElement("optgroup"); og.label = g; groups.set(g, og); pick.appendChild(og); }
      groups.get(g).appendChild(new Option(k, k));
    }
    pick.addEventListener("change", (e) => { state.metric = e.target.value; renderPicked(); });
    $("smooth").addEventListener("input", (e) => {
      state.smooth = Math.min(0.99, Math.max(0, Number(e.target.value) || 0));
      $("smooth-value").textContent = state.smooth.toFixed(2);
      renderCurves();
    });
    renderCurves();
  }

  // ---- filters -------------------------------------------------------------------------------
  const state = {run: "", split: "", type: "", outcome: "", mode: "", iteration: "", query: "", page: 0, rows: [], selected: -1, lens: "all", smooth: 0, metric: ""};

  function options(select, values, label) {
    select.appendChild(new Option(label, ""));
    values.forEach((v) => select.appendChild(new Option(String(v), String(v))));
  }
  function uniq(f) {
    const seen = new Set();
    for (const t of T) seen.add(f(t));
    return Array.from(seen);
  }

  function applyFilters() {
    const it = state.iteration === "" ? null : Number(state.iteration);
    const run = state.run === "" ? null : Number(state.run);
    const q = state.query.trim().toLowerCase();
    const rows = [];
    for (let i = 0; i < T.length; i++) {
      const t = T[i];
      if (run !== null && t[TF.run] !== run) continue;
      if (state.split && S[t[TF.split]] !== state.split) continue;
      if (state.mode && !t[TF.tags].includes(state.mode)) continue;
      if (state.type && S[t[TF.task_type]] !== state.type) continue;
      if (state.outcome === "success" && !t[TF.success]) continue;
      if (state.outcome === "failure" && t[TF.success]) continue;
      if (it !== null && t[TF.iteration] !== it) continue;
      if (q && !(S[t[TF.task_id]].toLowerCase().includes(q) || S[t[TF.goal]].toLowerCase().includes(q))) continue;
      rows.push(i);
    }
    state.rows = rows;
    state.page = 0;
    renderList();
    return rows.length;
  }

  function renderList() {
    const body = $("traj-rows");
    body.replaceChildren();
    const pages = Math.max(1, Math.ceil(state.rows.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const slice = state.rows.slice(state.page * PAGE, (state.page + 1) * PAGE);
    for (const i of slice) {
      const t = T[i];
      const tr = el("tr", t[TF.success] ? "ok" : "fail");
      tr.dataset.index = String(i);
      if (i === state.selected) tr.classList.add("selected");
      tr.appendChild(el("td", null, t[TF.iteration]));
      tr.appendChild(el("td", null, S[t[TF.split]]));
      const task = el("td", "task");
      if (MANY) task.appendChild(el("span", "run-name", RUNS[t[TF.run]].name + " "));
      task.appendChild(document.createTextNode(S[t[TF.task_id]]));
      tr.appendChild(task);
      tr.appendChild(el("td", null, t[TF.success] ? "success" : "failure"));
      tr.appendChild(el("td", "modes", t[TF.tags].filter((m) => m !== "success").map((m) => MODE_LABEL[m] || m).join(", ")));
      tr.appendChild(el("td", "num", t[TF.turns].length));
      tr.appendChild(el("td", "num", fmt(t[TF.score], 2)));
      tr.addEventListener("click", () => select(i));
      body.appendChild(tr);
    }
    $("count").textContent = `${state.rows.length} of ${T.length} trajectories` +
      (D.trajectories_total > T.length ? ` (the last ${T.length} of ${D.trajectories_total} logged)` : "");
    $("page").textContent = `page ${state.page + 1} of ${pages}`;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
  }

  function select(i) {
    if (!Number.isInteger(i) || i < 0 || i >= T.length) return;
    state.selected = i;
    for (const tr of $("traj-rows").children) tr.classList.toggle("selected", Number(tr.dataset.index) === i);
    renderDetail(i);
  }

  // ---- one trajectory ------------------------------------------------------------------------
  // HAE.md §5: switch tokens get A^S, subgoal tokens A^H, every other token (the action block,
  // a think block, newlines, an unparsable response) A^L.
  function blockNode(u, text, name) {
    const s = el("span", `blk blk-${name}`, text);
    const level = name === "switch" || name === "subgoal" ? name : "action";
    const [field, symbol] = LEVELS[level];
    const adv = u[UF[field]];
    s.dataset.level = symbol;
    if (adv === null || adv === undefined) {
      s.classList.add("no-adv");
      s.setAttribute("title", `${name}: no advantage (not trained in this turn, or an evaluation)`);
    } else {
      s.dataset.adv = String(adv);
      if (state.lens === "all" || state.lens === level) s.style.backgroundColor = advColour(adv);
      s.setAttribute("title", `${name}: ${symbol} = ${fmt(adv)}`);
    }
    return s;
  }

  function responseNode(u) {
    const text = S[u[UF.response]];
    const box = el("div", "response");
    const spans = u[UF.spans] || [];
    const parts = [];
    D.blocks.forEach((name, k) => { if (spans[k]) parts.push([spans[k][0], spans[k][1], name]); });
    parts.sort((a, b) => a[0] - b[0]);
    let pos = 0;
    for (const [a, b, name] of parts) {
      if (a < pos) continue;
      if (a > pos) box.appendChild(blockNode(u, text.slice(pos, a), "other"));
      box.appendChild(blockNode(u, text.slice(a, b), name));
      pos = b;
    }
    if (pos < text.length) box.appendChild(blockNode(u, text.slice(pos), "other"));
    return box;
  }

  // the advantages a training turn received, printed in its header (hidden by "advantage values")
  function advValues(u) {
    const levels = [["switch", "A^S"], ["subgoal", "A^H"], ["action", "A^L"]];
    if (levels.every(([lv]) => u[UF["adv_" + lv]] === null || u[UF["adv_" + lv]] === undefined)) return null;
    const box = el("span", "adv-vals");
    for (const [lv, symbol] of levels) {
      const a = u[UF["adv_" + lv]];
      const has = a !== null && a !== undefined;
      const chip = el("span", "adv-val", `${symbol} ${has ? (a >= 0 ? "+" : "") + fmt(a, 2) : "–"}`);
      chip.dataset.level = symbol;
      if (has) { chip.dataset.adv = String(a); chip.style.backgroundColor = advColour(a); }
      box.appendChild(chip);
    }
    return box;
  }

  function turnNode(u, k, loop) {
    const valid = u[UF.valid] === 1;
    const d = el("div", valid ? "turn" : "turn invalid");
    d.dataset.turn = String(k);
    const head = el("div", "turn-head");
    head.appendChild(el("span", "turn-no", `turn ${k}`));
    const sw = u[UF.switch] === 2 ? "SWITCH" : u[UF.switch] === 1 ? "KEEP" : "no switch";
    head.appendChild(el("span", `badge sw-${sw.replace(" ", "-")}`, sw));
    if (u[UF.switch_prob] !== null && k > 0) head.appendChild(el("span", "meta", `P(switch) ${fmt(u[UF.switch_prob], 2)}`));
    head.appendChild(el("span", "meta", `reward ${fmt(u[UF.reward], 2)}` + (u[UF.shaped_reward] !== null ? `, shaped ${fmt(u[UF.shaped_reward], 2)}` : "")));
    if (!valid) head.appendChild(el("span", "badge invalid-badge", `invalid: ${S[u[UF.reason]] || "unparsable"}`));
    if (u[UF.noop] === 1) { d.classList.add("noop"); head.appendChild(el("span", "badge noop-badge", "no-op")); }
    if (loop && k >= loop[0] && k < loop[1]) {
      d.classList.add("in-loop");
      head.appendChild(el("span", "badge loop-badge", loop[2] === 1 ? "loop: repeated action" : `loop: cycle of ${loop[2]}`));
    }
    const vals = advValues(u);
    if (vals) head.appendChild(vals);
    d.appendChild(head);
    const obs = el("div", "obs");
    obs.appendChild(el("span", "label", "observation "));
    obs.appendChild(el("span", null, S[u[UF.observation]]));
    d.appendChild(obs);
    d.appendChild(responseNode(u));
    const act = el("div", "act");
    act.appendChild(el("span", "label", "action "));
    act.appendChild(el("span", null, S[u[UF.action]] || "(none)"));
    d.appendChild(act);
    return d;
  }

  function renderDetail(i) {
    const t = T[i];
    const box = $("detail");
    box.replaceChildren();
    const h = el("h3", null, S[t[TF.task_id]]);
    box.appendChild(h);
    const meta = el("div", "meta-line");
    const modes = t[TF.tags].filter((m) => m !== "success").map((m) => MODE_LABEL[m] || m);
    meta.textContent = (MANY ? `run ${RUNS[t[TF.run]].name} · ` : "") +
      `goal: ${S[t[TF.goal]]} · ${t[TF.success] ? "success" : "failure"}` + (modes.length ? ` (${modes.join(", ")})` : "") + " · " +
      `iteration ${t[TF.iteration]} · ${S[t[TF.split]]} · ${t[TF.turns].length} turns · score ${fmt(t[TF.score], 2)}`;
    box.appendChild(meta);
    const turns = t[TF.turns];
    let seg = null, n = 0;
    turns.forEach((u, k) => {
      if (seg === null || (k > 0 && u[UF.switch] === 2)) {
        n += 1;
        seg = el("div", "segment");
        seg.dataset.segment = String(n);
        const head = el("div", "seg-head");
        head.appendChild(el("span", "seg-no", `segment ${n}`));
        head.appendChild(el("span", "seg-goal", S[u[UF.current_subgoal]] || S[u[UF.subgoal]] || "(no subgoal)"));
        seg.appendChild(head);
        box.appendChild(seg);
      }
      seg.appendChild(turnNode(u, k, t[TF.loop]));
    });
    const fin = S[t[TF.final_observation]];
    if (fin) {
      const f = el("div", "obs final");
      f.appendChild(el("span", "label", "final observation "));
      f.appendChild(el("span", null, fin));
      box.appendChild(f);
    }
    const segs = box.querySelectorAll(".segment").length;
    box.dataset.segments = String(segs);
  }

  // ---- set-up --------------------------------------------------------------------------------
  function init() {
    initCurves();
    const runSel = $("f-run");
    runSel.appendChild(new Option("all runs", ""));
    RUNS.forEach((r, k) => runSel.appendChild(new Option(r.name, String(k))));
    runSel.hidden = !MANY;
    const modeSel = $("f-mode");
    modeSel.appendChild(new Option("any failure mode", ""));
    for (const m of D.failure_modes) {
      let n = 0;
      for (const t of T) if (t[TF.tags].includes(m)) n++;
      modeSel.appendChild(new Option(`${MODE_LABEL[m] || m} (${n})`, m));
    }
    options($("f-split"), uniq((t) => S[t[TF.split]]).sort(), "all splits");
    options($("f-type"), uniq((t) => S[t[TF.task_type]]).sort(), "all task types");
    options($("f-iteration"), uniq((t) => t[TF.iteration]).sort((a, b) => a - b), "all iterations");
    const bind = (id, key) => $(id).addEventListener("change", (e) => { state[key] = e.target.value; applyFilters(); });
    bind("f-split", "split");
    bind("f-type", "type");
    bind("f-outcome", "outcome");
    bind("f-iteration", "iteration");
    bind("f-run", "run");
    bind("f-mode", "mode");
    $("f-values").addEventListener("change", (e) => $("detail").classList.toggle("hide-values", !e.target.checked));
    $("f-query").addEventListener("input", (e) => { state.query = e.target.value; applyFilters(); });
    $("f-lens").addEventListener("change", (e) => { state.lens = e.target.value; if (state.selected >= 0) renderDetail(state.selected); });
    $("prev").addEventListener("click", () => { state.page -= 1; renderList(); });
    $("next").addEventListener("click", () => { state.page += 1; renderList(); });
    // open on the latest training iteration (of the first run): its turns carry the credit
    let latest = -Infinity;
    for (const t of T) if (t[TF.run] === 0 && S[t[TF.split]] === "train" && t[TF.iteration] > latest) latest = t[TF.iteration];
    if (latest > -Infinity) {
      state.split = "train";
      state.iteration = String(latest);
      if (MANY) state.run = "0";
      $("f-split").value = state.split;
      $("f-iteration").value = state.iteration;
      runSel.value = state.run;
    }
    applyFilters();
    if (state.rows.length) select(state.rows[0]);
  }
  init();
  // hooks for tests and benchmarks: filter programmatically, and a ready flag
  window.hiper = {applyFilters, select, state, count: () => state.rows.length, niceTicks, tickFormat, smooth};
  window.hiperReady = performance.now();
})();
