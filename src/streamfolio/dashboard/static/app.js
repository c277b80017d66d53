/* streamfolio dashboard: the portfolio list, one portfolio's charts, and the live event feed.
 *
 * The page reads a snapshot of the selected portfolio (GET /api/portfolio/ID), then follows
 * /api/stream, which pushes only that portfolio's changes since the snapshot's cursor, plus
 * pipeline health. The list of portfolios is re-read when health says something changed.
 */
(() => {
  "use strict";

  const LIST_MAX = 300; // rows drawn at once; the filter box narrows hundreds down
  const LIST_REFRESH_MS = 5000; // the list is re-read at most this often
  const EVENTS_SHOWN = 100;
  const COLORS = ["#2563eb", "#ea580c", "#059669", "#7c3aed", "#db2777", "#0891b2",
    "#ca8a04", "#4b5563", "#dc2626", "#65a30d", "#9333ea", "#0d9488", "#c2410c", "#1d4ed8"];
  const THRESHOLD = "#b45309";

  const app = {
    portfolios: [], listSeq: -1, listAt: 0, cursorRow: -1,
    selected: null, view: null, source: null, charts: new Map(), pending: false,
  };
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ formatting

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fixed = (v, d = 2) => (isNum(v) ? v.toFixed(d) : "–");
  const pct = (v, d = 1) => (isNum(v) ? `${(v * 100).toFixed(d)} %` : "–");
  const pad = (n) => String(n).padStart(2, "0");
  function time(ms) {
    if (!isNum(ms)) return "–";
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function span(ms) {
    if (!isNum(ms)) return "–";
    const s = Math.abs(ms) / 1000, sign = ms < 0 ? "−" : "";
    if (s < 90) return `${sign}${s.toFixed(s < 10 ? 1 : 0)} s`;
    if (s < 5400) return `${sign}${(s / 60).toFixed(0)} min`;
    if (s < 172800) return `${sign}${(s / 3600).toFixed(1)} h`;
    return `${sign}${(s / 86400).toFixed(1)} d`;
  }
  const rate = (v) => (isNum(v) ? (v < 10 ? v.toFixed(1) : v.toFixed(0)) : "–");
  // ECharts puts a custom tooltip's text in as HTML, and tickers come from the topics.
  const esc = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-")) node.dataset[k.slice(5)] = v;
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  }

  async function getJson(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  // ------------------------------------------------------------------ portfolio list

  async function loadList() {
    const body = await getJson("/api/portfolios");
    app.portfolios = body.portfolios.map((p) => ({
      ...p, hay: [p.id, p.owner || "", ...p.tickers].join(" ").toLowerCase(),
    }));
    app.listSeq = body.seq;
    app.listAt = Date.now();
    renderList();
  }

  function matches() {
    const q = $("search").value.trim().toLowerCase();
    return q ? app.portfolios.filter((p) => p.hay.includes(q)) : app.portfolios;
  }

  function renderList() {
    const found = matches();
    const rows = found.slice(0, LIST_MAX).map((p, i) => el("li",
      { role: "option", "data-id": p.id, "aria-selected": String(p.id === app.selected),
        class: i === app.cursorRow ? "cursor" : "", title: p.tickers.join(", ") },
      el("span", { class: "dot", "data-status": p.status }),
      el("span", { class: "pid", text: p.id }, el("small", { text: p.owner || "" })),
      el("span", { class: "ps", text: fixed(p.sharpe) })));
    if (found.length > LIST_MAX) {
      rows.push(el("li", { class: "more", text: `${found.length - LIST_MAX} more: refine the filter` }));
    }
    $("portfolio-list").replaceChildren(...rows);
    const n = app.portfolios.length;
    $("list-count").textContent = found.length === n ? `${n} portfolios` : `${found.length} of ${n} portfolios`;
  }

  function onSearchKey(event) {
    const rows = $("portfolio-list").querySelectorAll("li[data-id]");
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      app.cursorRow = Math.max(0, Math.min(rows.length - 1, app.cursorRow + step));
      rows.forEach((row, i) => row.classList.toggle("cursor", i === app.cursorRow));
      rows[app.cursorRow]?.scrollIntoView({ block: "nearest" });
    } else if (event.key === "Enter") {
      const row = rows[Math.max(0, app.cursorRow)];
      if (row) select(row.dataset.id);
    }
  }

  // ------------------------------------------------------------------ selection and stream

  async function select(id) {
    if (!id) return;
    app.selected = id;
    history.replaceState(null, "", `#${encodeURIComponent(id)}`);
    renderList();
    let snapshot;
    try {
      snapshot = await getJson(`/api/portfolio/${encodeURIComponent(id)}`);
    } catch (error) {
      $("pf-meta").textContent = String(error);
      return;
    }
    if (app.selected !== id) return; // another portfolio was picked meanwhile
    app.view = fromSnapshot(snapshot);
    scheduleRender();
    connect(`${snapshot.token}-${snapshot.seq}`);
  }

  function connect(cursor) {
    if (app.source) app.source.close();
    const params = new URLSearchParams();
    if (app.selected) {
      params.set("portfolio", app.selected);
      params.set("since", cursor);
    }
    const source = new EventSource(`/api/stream?${params}`);
    source.addEventListener("portfolio", (e) => onDelta(JSON.parse(e.data)));
    source.addEventListener("health", (e) => onHealth(JSON.parse(e.data)));
    source.onerror = () => setConn("down", "reconnecting");
    app.source = source;
  }

  function fromSnapshot(s) {
    return {
      id: s.id, summary: s.summary, limits: s.limits, corr: s.correlation,
      t: s.metrics.t, sharpe: s.metrics.sharpe, er: s.metrics.expected_return,
      risk: s.metrics.risk, weights: s.weights, events: s.events,
    };
  }

  function onDelta(d) {
    if (d.id !== app.selected) return;
    if (d.reset || !app.view) {
      app.view = fromSnapshot(d);
    } else {
      const v = app.view, keep = (a, n) => (a.length > n ? a.splice(0, a.length - n) : a);
      const m = d.metrics;
      for (const [key, src] of [["t", m.t], ["sharpe", m.sharpe], ["er", m.expected_return], ["risk", m.risk]]) {
        v[key].push(...src);
        keep(v[key], v.limits.metrics);
      }
      v.weights.push(...d.weights);
      keep(v.weights, v.limits.weights);
      v.events.push(...d.events);
      keep(v.events, v.limits.events);
      if (d.correlation) v.corr = d.correlation;
      v.summary = d.summary;
    }
    scheduleRender();
  }

  function scheduleRender() {
    if (app.pending) return;
    app.pending = true;
    requestAnimationFrame(() => {
      app.pending = false;
      if (app.view) renderPortfolio(app.view);
    });
  }

  // ------------------------------------------------------------------ charts

  function chart(id) {
    let c = app.charts.get(id);
    if (!c) {
      c = echarts.init($(id), null, { renderer: "canvas" });
      new ResizeObserver(() => c.resize()).observe($(id));
      app.charts.set(id, c);
    }
    return c;
  }

  function draw(id, option, points, emptyText) {
    const base = {
      animation: false,
      textStyle: { fontFamily: "system-ui, sans-serif" },
      title: { show: points === 0, text: emptyText, left: "center", top: "middle",
        textStyle: { color: "#9ca3af", fontSize: 13, fontWeight: "normal" } },
    };
    chart(id).setOption({ ...base, ...option }, { replaceMerge: ["series", "visualMap"] });
    $(id).dataset.points = String(points);
  }

  const timeChart = () => ({
    grid: { left: 52, right: 20, top: 28, bottom: 28 },
    tooltip: { trigger: "axis", valueFormatter: (v) => fixed(v, 3) },
    // onZero: false keeps the time axis at the bottom when values go negative.
    xAxis: { type: "time", axisLine: { onZero: false, lineStyle: { color: "#cbd2db" } } },
  });

  // An axis range that covers the data and the threshold band, on a round tick grid (setting
  // only min/max would leave ECharts labelling an odd minimum next to its own round ticks).
  function niceRange(values, extra) {
    const all = values.concat(extra).filter(isNum);
    if (!all.length) return {};
    const lo = Math.min(...all), hi = Math.max(...all);
    const raw = (hi - lo || Math.abs(hi) || 1) / 5;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const interval = magnitude * [1, 2, 2.5, 5, 10].find((f) => f * magnitude >= raw);
    const round = (x) => +x.toFixed(10);
    return { min: round(Math.floor(lo / interval) * interval),
      max: round(Math.ceil(hi / interval) * interval), interval: round(interval) };
  }

  function renderSharpe(v) {
    const thr = v.summary.threshold, band = v.summary.band || 0;
    const hasThr = isNum(thr);
    const data = v.t.map((t, i) => [t, v.sharpe[i]]);
    const decisions = v.events.filter((e) => isNum(e.sharpe_before))
      .map((e) => ({ value: [e.t, e.sharpe_before], decision: e.decision }));
    const line = {
      name: "Sharpe", type: "line", data, showSymbol: false, color: COLORS[0], lineStyle: { width: 1.6 },
      markArea: hasThr ? { silent: true, itemStyle: { color: "rgba(180, 83, 9, 0.10)" },
        data: [[{ yAxis: thr - band }, { yAxis: thr + band }]] } : undefined,
      markLine: hasThr ? { silent: true, symbol: "none", data: [{ yAxis: thr }],
        lineStyle: { color: THRESHOLD, type: "dashed" },
        label: { position: "insideStartTop", color: THRESHOLD, formatter: `threshold ${fixed(thr)} ± ${fixed(band)}` } } : undefined,
    };
    const marks = { name: "decision", type: "scatter", data: decisions, symbol: "triangle", symbolSize: 9,
      itemStyle: { color: (p) => (p.data.decision === "rebalance" ? "#15803d" : THRESHOLD) } };
    const range = niceRange(v.sharpe, hasThr ? [thr - band, thr + band] : []);
    draw("chart-sharpe", { ...timeChart(), yAxis: { type: "value", ...range }, series: [line, marks] },
      data.length, "waiting for metrics…");
  }

  function renderReturnRisk(v) {
    const series = [["expected return", v.er, COLORS[2]], ["risk", v.risk, COLORS[1]]].map(([name, ys, color]) => ({
      name, type: "line", showSymbol: false, color, lineStyle: { width: 1.5 },
      data: v.t.map((t, i) => [t, ys[i] * 100]),
    }));
    draw("chart-return-risk", {
      ...timeChart(),
      tooltip: { trigger: "axis", valueFormatter: (x) => `${fixed(x, 2)} %` },
      legend: { top: 0, right: 10, itemWidth: 14, textStyle: { fontSize: 12 } },
      yAxis: { type: "value", scale: true, axisLabel: { formatter: "{value} %" } },
      series,
    }, v.t.length, "waiting for metrics…");
  }

  function renderWeights(v) {
    const w = v.weights;
    const seen = new Set(w.flatMap((x) => Object.keys(x.weights)));
    const tickers = v.summary.tickers.filter((t) => seen.has(t)).concat([...seen].filter((t) => !v.summary.tickers.includes(t)));
    const last = w[w.length - 1];
    // Weights hold until the next record: carry the last ones to the newest metrics.
    const end = last ? Math.max(last.t, v.t.length ? v.t[v.t.length - 1] : last.t) : 0;
    const series = tickers.map((ticker, i) => ({
      name: ticker, type: "line", stack: "weights", step: "end", showSymbol: false,
      color: COLORS[i % COLORS.length], lineStyle: { width: 0 }, areaStyle: { opacity: 0.85 },
      emphasis: { focus: "series" },
      data: w.map((x) => [x.t, (x.weights[ticker] ?? 0) * 100])
        .concat(last && end > last.t ? [[end, (last.weights[ticker] ?? 0) * 100]] : []),
    }));
    draw("chart-weights", {
      ...timeChart(),
      grid: { left: 52, right: 20, top: 12, bottom: 54 },
      tooltip: { trigger: "axis", valueFormatter: (x) => `${fixed(x, 1)} %` },
      legend: { type: "scroll", bottom: 0, itemWidth: 12, itemHeight: 10, textStyle: { fontSize: 11 } },
      yAxis: { type: "value", min: 0, max: 100, axisLabel: { formatter: "{value} %" } },
      series,
    }, w.length, "waiting for weights…");
  }

  function renderCorrelation(v) {
    const c = v.corr;
    const tickers = c ? c.tickers : [];
    const n = tickers.length;
    const data = [];
    tickers.forEach((_, i) => tickers.forEach((__, j) => data.push([j, i, c.matrix[i][j] ?? "-"])));
    $("corr-caption").textContent = !c ? "latest statistics"
      : `${c.kind === "updated" ? "updated statistics" : "prior (initial statistics)"} · ${time(c.timestamp)} · n = ${c.count}`;
    draw("chart-corr", {
      grid: { left: 56, right: 64, top: 8, bottom: n > 8 ? 56 : 36 },
      tooltip: { formatter: (p) => `${esc(tickers[p.value[1]])} · ${esc(tickers[p.value[0]])}: ${fixed(p.value[2], 3)}` },
      xAxis: { type: "category", data: tickers, axisLabel: { rotate: n > 8 ? 45 : 0, fontSize: 11 }, splitArea: { show: false } },
      yAxis: { type: "category", data: tickers, inverse: true, axisLabel: { fontSize: 11 } },
      visualMap: { min: -1, max: 1, calculable: false, orient: "vertical", right: 0, top: "middle",
        itemHeight: 180, itemWidth: 12, text: ["+1", "−1"], textStyle: { fontSize: 11 },
        inRange: { color: ["#2166ac", "#92c5de", "#f7f7f7", "#f4a582", "#b2182b"] } },
      series: [{ type: "heatmap", data, itemStyle: { borderColor: "#fff", borderWidth: 1 },
        label: { show: n <= 12, fontSize: n > 8 ? 9 : 11, formatter: (p) => fixed(p.value[2], 2) } }],
    }, data.length, "waiting for statistics…");
  }

  function renderEvents(v) {
    const rows = v.events.slice(-EVENTS_SHOWN).reverse().map((e) => el("tr", {},
      el("td", { text: time(e.t) }),
      el("td", {}, el("span", { class: "pill", "data-decision": e.decision, text: e.decision })),
      el("td", { text: `${fixed(e.sharpe_before)} → ${fixed(e.sharpe_after)}` }),
      el("td", { text: pct(e.turnover) }),
      el("td", { class: "reason", title: `${e.reason} (optimizer: ${e.optimizer_status || "–"})`, text: e.reason })));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "empty", text: "no decisions yet" })));
    $("events").tBodies[0].replaceChildren(...rows);
    $("events-caption").textContent = v.events.length ? `${v.events.length} kept, newest first` : "";
  }

  function renderHead(v) {
    const s = v.summary;
    $("pf-title").textContent = s.id;
    const parts = [s.owner ? `owner ${s.owner}` : null, `${s.tickers.length} tickers: ${s.tickers.join(", ")}`,
      `last metrics ${time(s.last_time)}`];
    $("pf-meta").textContent = parts.filter(Boolean).join(" · ");
    const sharpe = $("kpi-sharpe");
    sharpe.textContent = fixed(s.sharpe, 3);
    sharpe.dataset.status = s.status;
    $("kpi-threshold").textContent = isNum(s.threshold) ? `${fixed(s.threshold)} ± ${fixed(s.band || 0)}` : "–";
    $("kpi-return").textContent = pct(s.expected_return);
    $("kpi-risk").textContent = pct(s.risk);
    $("kpi-count").textContent = isNum(s.count) ? String(s.count) : "–";
  }

  function renderPortfolio(v) {
    renderHead(v);
    renderSharpe(v);
    renderReturnRisk(v);
    renderWeights(v);
    renderCorrelation(v);
    renderEvents(v);
  }

  // ------------------------------------------------------------------ health

  function setConn(state, text) {
    const conn = $("conn");
    conn.dataset.state = state;
    conn.textContent = text;
  }

  function onHealth(h) {
    const consumer = h.status === "running" ? ["live", "live"] : h.status === "error" ? ["down", "consumer error"] : ["waiting", h.status];
    setConn(...consumer);
    $("strip-last").textContent = time(h.last_event_time);
    $("strip-lag").textContent = span(h.lag_ms);
    $("strip-ticks").textContent = rate(h.rates.prices);
    $("strip-metrics").textContent = rate(h.rates.metrics);
    $("strip-dead").textContent = String(h.dead_letter_total);
    renderHealth(h);
    const stale = h.seq !== app.listSeq || h.portfolios !== app.portfolios.length;
    if (stale && Date.now() - app.listAt > LIST_REFRESH_MS) loadList().catch(() => {});
  }

  function group(title, pairs, extra = []) {
    const dl = el("dl", {}, ...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]), ...extra);
    return el("div", {}, el("h3", { text: title }), dl);
  }

  function renderHealth(h) {
    const r = h.rates;
    const dead = Object.entries(h.dead_letters);
    const read = Object.entries(h.read).map(([role, n]) => {
      const bad = (h.invalid[role] || 0) + (h.undecodable[role] || 0);
      return [role.replace("_", " "), bad ? `${n} (${bad} bad)` : String(n)];
    });
    $("health").replaceChildren(
      group("Stream", [["consumer", h.status], ["last event", time(h.last_event_time)],
        ["watermark lag", span(h.lag_ms)], ["last record read", isNum(h.idle_s) ? `${span(h.idle_s * 1000)} ago` : "–"]],
      h.error ? [el("dd", { class: "error", text: h.error })] : []),
      group("Messages / s", [["price ticks", rate(r.prices)], ["metrics", rate(r.metrics)],
        ["statistics", rate(r.updated_stats)], ["weights", rate(r.weights)],
        ["dead letters", rate(r.dead_letter)], ["read here", rate(r.read)]]),
      group(`Dead letters: ${h.dead_letter_total}`, dead.length ? dead : [["none", ""]],
        h.recent_dead_letters.slice(0, 2).map((d) => el("dd", { class: "error", title: d.detail, text: `${d.reason}: ${d.detail}`.slice(0, 80) }))),
      group("Records read", read.length ? read : [["none yet", ""]]),
    );
  }

  // ------------------------------------------------------------------ start

  async function start() {
    $("search").addEventListener("input", () => { app.cursorRow = -1; renderList(); });
    $("search").addEventListener("keydown", onSearchKey);
    $("portfolio-list").addEventListener("click", (e) => {
      const row = e.target.closest("li[data-id]");
      if (row) select(row.dataset.id);
    });
    document.addEventListener("keydown", (e) => {
      if (e.key === "/" && document.activeElement !== $("search")) { e.preventDefault(); $("search").focus(); }
    });
    window.addEventListener("hashchange", () => {
      const id = decodeURIComponent(location.hash.slice(1));
      if (id && id !== app.selected) select(id);
    });
    try {
      await loadList();
    } catch (error) {
      $("list-count").textContent = String(error);
    }
    const wanted = decodeURIComponent(location.hash.slice(1));
    const first = app.portfolios.find((p) => p.id === wanted) || app.portfolios[0];
    if (first) select(first.id); else connect(null);
  }

  start();
})();
