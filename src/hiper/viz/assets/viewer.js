// hiper trajectory viewer. Reads the JSON payload of hiper.viz.data from #hiper-data and builds
// the trajectory browser. Every piece of model or environment text goes into the page through
// textContent or setAttribute, never as markup, so a response holding HTML shows as text.
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

  // ---- filters -------------------------------------------------------------------------------
  const state = {split: "", type: "", outcome: "", iteration: "", query: "", page: 0, rows: [], selected: -1, lens: "all"};

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
    const q = state.query.trim().toLowerCase();
    const rows = [];
    for (let i = 0; i < T.length; i++) {
      const t = T[i];
      if (state.split && S[t[TF.split]] !== state.split) continue;
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
      tr.appendChild(el("td", "task", S[t[TF.task_id]]));
      tr.appendChild(el("td", null, t[TF.success] ? "success" : "failure"));
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

  function turnNode(u, k) {
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
    meta.textContent = `goal: ${S[t[TF.goal]]} · ${t[TF.success] ? "success" : "failure"} · ` +
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
      seg.appendChild(turnNode(u, k));
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
    options($("f-split"), uniq((t) => S[t[TF.split]]).sort(), "all splits");
    options($("f-type"), uniq((t) => S[t[TF.task_type]]).sort(), "all task types");
    options($("f-iteration"), uniq((t) => t[TF.iteration]).sort((a, b) => a - b), "all iterations");
    const bind = (id, key) => $(id).addEventListener("change", (e) => { state[key] = e.target.value; applyFilters(); });
    bind("f-split", "split");
    bind("f-type", "type");
    bind("f-outcome", "outcome");
    bind("f-iteration", "iteration");
    $("f-query").addEventListener("input", (e) => { state.query = e.target.value; applyFilters(); });
    $("f-lens").addEventListener("change", (e) => { state.lens = e.target.value; if (state.selected >= 0) renderDetail(state.selected); });
    $("prev").addEventListener("click", () => { state.page -= 1; renderList(); });
    $("next").addEventListener("click", () => { state.page += 1; renderList(); });
    applyFilters();
    if (state.rows.length) select(state.rows[0]);
  }
  init();
  // hooks for tests and benchmarks: filter programmatically, and a ready flag
  window.hiper = {applyFilters, select, state, count: () => state.rows.length};
  window.hiperReady = performance.now();
})();
