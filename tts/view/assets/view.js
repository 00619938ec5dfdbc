// tts view: the run page's behaviour. Data comes from the JSON script blocks of the page; every
// piece of it reaches the document as text (textContent, createTextNode, setAttribute), never as markup.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const indexNode = $("tts-index");
  if (!indexNode) return; // a study-only page has no run
  const index = JSON.parse(indexNode.textContent);
  const cache = new Map();
  const state = { filter: "all", query: "", selected: -1 };

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }
  const mark = (c) => c === true ? el("span", { class: "mark ok", title: "correct" }, "✓")
    : c === false ? el("span", { class: "mark bad", title: "incorrect" }, "✗")
    : el("span", { class: "mark unk", title: "not graded" }, "?");
  const num = (x, d) => (x === null || x === undefined) ? "–" : (typeof x === "number" ? x.toFixed(d) : String(x));
  const answerText = (a) => (a === null || a === undefined) ? "(no answer)" : a;
  const color = (s) => (s === null || s === undefined) ? "#b0b7bf"
    : `hsl(${Math.round(120 * Math.max(0, Math.min(1, s)))}, 70%, ${s > 0.5 ? 38 : 45}%)`;

  function detail(i) {
    if (!cache.has(i)) cache.set(i, JSON.parse($("tts-p-" + i).textContent));
    return cache.get(i);
  }

  // ---- the problem list ----------------------------------------------------------------------------
  const list = $("problems");
  const rows = index.problems.map((p, i) => {
    const li = el("li", { "data-index": i, "data-id": p.id, onclick: () => select(i) },
      mark(p.correct), el("span", { class: "pid" }, p.id), el("span", { class: "ans", title: answerText(p.answer) },
        answerText(p.answer)), el("span", { class: "cnt", title: "correct candidates / candidates" },
        `${p.correct_samples}/${p.samples}`));
    list.append(li);
    return li;
  });

  function applyFilter() {
    const q = state.query.trim().toLowerCase();
    let shown = 0;
    index.problems.forEach((p, i) => {
      const byMark = state.filter === "all" || (state.filter === "correct" ? p.correct === true : p.correct !== true);
      const byText = !q || p.id.toLowerCase().includes(q) || (p.answer || "").toLowerCase().includes(q);
      rows[i].hidden = !(byMark && byText);
      if (!rows[i].hidden) shown += 1;
    });
    $("shown").textContent = `${shown} of ${index.problems.length} problems`;
  }
  for (const b of document.querySelectorAll("#filters button")) {
    b.addEventListener("click", () => {
      state.filter = b.dataset.filter;
      for (const o of document.querySelectorAll("#filters button")) o.classList.toggle("on", o === b);
      applyFilter();
    });
  }
  $("search").addEventListener("input", (ev) => { state.query = ev.target.value; applyFilter(); });

  // ---- one problem -----------------------------------------------------------------------------------
  function select(i) {
    if (state.selected >= 0) rows[state.selected].classList.remove("sel");
    state.selected = i;
    rows[i].classList.add("sel");
    const d = detail(i);
    const box = $("detail");
    box.replaceChildren(...renderProblem(d));
    box.scrollTop = 0;
  }

  function renderProblem(d) {
    const u = d.usage || {};
    const out = [el("h2", {}, mark(d.correct), " ", d.id)];
    out.push(el("div", { class: "meta" }, el("dl", {},
      el("dt", {}, "chosen answer"), el("dd", { id: "chosen-answer" }, answerText(d.answer)),
      el("dt", {}, "confidence"), el("dd", {}, num(d.confidence, 3)),
      el("dt", {}, "chosen candidate"), el("dd", {}, d.chosen === null ? "none" : "#" + d.chosen),
      el("dt", {}, "candidates"), el("dd", {}, `${d.candidates.length} (${d.candidates.filter((c) => c.correct).length} correct)`)),
    el("dl", {},
      el("dt", {}, "completion tokens"), el("dd", {}, u.completion_tokens ?? "–"),
      el("dt", {}, "prompt tokens"), el("dd", {}, `${u.prompt_tokens ?? "–"} (${u.cached_tokens ?? 0} cached)`),
      el("dt", {}, "scorer tokens"), el("dd", {}, `${(u.scorer_prompt_tokens || 0) + (u.scorer_completion_tokens || 0)}`),
      el("dt", {}, "wall time"), el("dd", {}, num(u.wall_time, 2) + " s"))));
    out.push(el("h3", {}, "Vote groups"), el("p", { class: "note" }, "Grouped " + d.grouping + "."), groupsTable(d));
    if (d.tree) out.push(el("h3", {}, d.tree.kind === "tree-search" ? "Search tree" : "Step tree"), renderTree(d));
    out.push(el("h3", {}, "Candidates"));
    const cands = el("div", { id: "candidates" });
    d.candidates.forEach((c) => cands.append(candidate(c, d)));
    out.push(cands);
    out.push(el("details", {}, el("summary", {}, "Result info (as recorded)"),
      el("pre", {}, JSON.stringify(d.info, null, 1))));
    return out;
  }

  function openCandidate(i) {
    const node = document.querySelector(`#candidates details[data-index="${i}"]`);
    if (!node) return;
    node.open = true;
    node.scrollIntoView({ block: "nearest" });
  }

  function groupsTable(d) {
    const body = d.groups.map((g) => el("tr", {},
      el("td", {}, answerText(g.answer), g.chosen ? " ★" : ""), el("td", {}, g.count),
      el("td", {}, g.score === null ? "–" : num(g.score, 3)),
      el("td", {}, g.members.map((m) => el("button", { class: "linkish", onclick: () => openCandidate(m) }, "#" + m))),
      el("td", {}, mark(g.correct))));
    return el("div", { class: "scroll" }, el("table", { id: "groups" },
      el("thead", {}, el("tr", {}, ["answer", "count", "score", "candidates", "oracle"].map((h) => el("th", {}, h)))),
      el("tbody", {}, body)));
  }

  function verdictLine(v) {
    const flag = v.passed === true ? " ✓" : v.passed === false ? " ✗" : "";
    return `${v.scorer} ${num(v.score, 2)}${flag}`;
  }

  function candidate(c) {
    const body = el("div", { class: "body" });
    const box = el("details", { class: "cand" + (c.chosen ? " chosen" : ""), "data-index": c.index },
      el("summary", {}, mark(c.correct), el("span", {}, "#" + c.index + (c.chosen ? " ★ chosen" : "")),
        el("span", {}, "answer: ", answerText(c.answer)), el("span", {}, "group " + c.group),
        el("span", {}, (c.tokens ?? "–") + " tokens"),
        el("span", { class: "note" }, c.verdicts.map(verdictLine).join(" · "))),
      body);
    box.addEventListener("toggle", () => {
      if (!box.open || body.childElementCount) return; // filled on first opening: large pools stay light
      if (c.verdicts.length) {
        body.append(el("table", {}, el("thead", {}, el("tr", {},
          ["scorer", "score", "passed", "feedback", "step scores"].map((h) => el("th", {}, h)))),
        el("tbody", {}, c.verdicts.map((v) => el("tr", {}, el("td", {}, v.scorer), el("td", {}, num(v.score, 3)),
          el("td", {}, v.passed === null ? "–" : v.passed ? "yes" : "no"), el("td", {}, el("pre", {}, v.feedback || "")),
          el("td", {}, v.step_scores ? v.step_scores.map((s) => s.toFixed(2)).join(", ") : "–"))))));
      }
      body.append(el("p", {}, "oracle: ", mark(c.correct), c.oracle_feedback ? " " + c.oracle_feedback : "",
        ` · mean log-prob ${num(c.mean_logprob, 3)} · finish ${c.finish_reason ?? "–"}`));
      body.append(el("pre", { class: "text" }, c.text));
      if (Object.keys(c.info).length) body.append(el("pre", { class: "note" }, JSON.stringify(c.info)));
    });
    return box;
  }

  // ---- the tree ------------------------------------------------------------------------------------
  function renderTree(d) {
    const t = d.tree;
    const byId = new Map(t.nodes.map((n) => [n.id, n]));
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("width", t.width);
    svg.setAttribute("height", t.height);
    svg.setAttribute("id", "tree-svg");
    for (const n of t.nodes) {
      const p = byId.get(n.parent);
      if (!p) continue;
      const line = document.createElementNS(SVG, "line");
      for (const [k, v] of [["x1", p.x], ["y1", p.y], ["x2", n.x], ["y2", n.y]]) line.setAttribute(k, v);
      line.setAttribute("stroke", "#9aa4ae");
      svg.append(line);
    }
    const panel = el("div", { id: "node-panel" }, el("p", { class: "note" }, "Click a node to see its text."));
    let current = null;
    for (const n of t.nodes) {
      const g = document.createElementNS(SVG, "g");
      g.setAttribute("class", "node");
      g.setAttribute("data-node", n.id);
      const c = document.createElementNS(SVG, "circle");
      c.setAttribute("cx", n.x);
      c.setAttribute("cy", n.y);
      c.setAttribute("r", n.parent === null ? 7 : 9);
      c.setAttribute("fill", color(n.score));
      c.setAttribute("stroke", n.chosen ? "#111" : "#fff");
      c.setAttribute("stroke-width", n.chosen ? 3 : 1.5);
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${n.label} score ${num(n.score, 3)}`;
      g.append(c, title);
      g.addEventListener("click", () => {
        if (current) current.classList.remove("sel");
        current = g;
        g.classList.add("sel");
        panel.replaceChildren(...nodePanel(n));
      });
      svg.append(g);
    }
    const legend = el("div", { class: "legend" }, "score", el("span", {}, "0"), el("span", { class: "bar" }),
      el("span", {}, "1"), el("span", { class: "dot" }), "no score", el("span", { class: "ring" }), "chosen", el("span", { class: "ring sel" }), "selected");
    return el("div", {}, el("p", { class: "note" }, t.note), legend,
      el("div", { class: "treebox" }, el("div", { class: "treewrap" }, svg), panel));
  }

  function nodePanel(n) {
    const scores = Object.entries(n.scores || {});
    return [
      el("h4", {}, n.label || "node " + n.id),
      el("p", {}, "score ", el("b", { id: "node-score" }, num(n.score, 3)),
        scores.length ? ` (${scores.map(([k, v]) => k + " " + v.toFixed(3)).join(", ")})` : ""),
      n.answer !== null || n.correct !== null ? el("p", {}, "answer ", answerText(n.answer), " ", mark(n.correct)) : null,
      n.tokens !== null ? el("p", {}, n.tokens + " tokens") : null,
      n.candidates.length ? el("p", {}, "candidate(s) ", n.candidates.map((m) =>
        el("button", { class: "linkish", onclick: () => openCandidate(m) }, "#" + m))) : null,
      n.feedback ? el("div", {}, el("b", {}, "feedback"), el("pre", { id: "node-feedback" }, n.feedback)) : null,
      el("b", {}, "text"), el("pre", { id: "node-text" }, n.text),
    ];
  }

  applyFilter();
  if (index.problems.length) select(0);
})();
