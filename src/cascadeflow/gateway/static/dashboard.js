// cascadeflow dashboard: reads dashboard/api/overview and draws it. No dependencies, no external requests.
// Every figure is written as text for people and as data-value (the API's exact number) for tests and tools.
"use strict";

(() => {
  const API = "dashboard/api/overview";
  const KEY = "cascadeflow.masterKey";
  const RANGES = ["1h", "6h", "24h", "7d", "30d", "all"];
  const SVG = "http://www.w3.org/2000/svg";
  const query = new URLSearchParams(location.search);
  const state = {
    range: RANGES.includes(location.hash.slice(7)) ? location.hash.slice(7) : "24h",
    refreshMs: Math.max(500, 1000 * Number(query.get("refresh") || 5)),
    timer: null,
    data: null,
    loading: false,
  };
  const $ = (id) => document.getElementById(id);

  // ---- formatting -------------------------------------------------------------------------
  const int = (v) => (v == null ? "—" : Math.round(v).toLocaleString("en-US"));
  function usd(v) {
    if (v == null) return "—";
    const a = Math.abs(v);
    const sign = v < 0 ? "−" : "";
    if (a === 0) return "$0";
    if (a >= 100) return sign + "$" + a.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    if (a >= 0.01) return sign + "$" + a.toFixed(4);
    return sign + "$" + a.toPrecision(3);
  }
  const pct = (v) => (v == null ? "—" : v.toFixed(1) + "%");
  const ms = (v) => (v == null ? "—" : v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString("en-US"));
  const pad = (n) => String(n).padStart(2, "0");
  function when(ts, withDate) {
    const d = new Date(ts * 1000);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
  }
  function span(seconds) {
    if (seconds % 86400 === 0) return seconds / 86400 + " d";
    if (seconds % 3600 === 0) return seconds / 3600 + " h";
    return seconds / 60 + " min";
  }

  // ---- DOM helpers ------------------------------------------------------------------------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }
  const raw = (v) => (v == null ? "" : String(v));
  /** Sets a figure's text and its exact value. */
  function figure(node, value, text) {
    node.dataset.value = raw(value);
    node.textContent = text;
  }
  function cell(field, value, text, cls = "num") {
    const td = el("td", { class: cls, "data-field": field, "data-value": raw(value) });
    if (text instanceof Node) td.append(text);
    else td.textContent = text;
    return td;
  }
  function fill(tbody, rows, columns, emptyText) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText))]));
  }
  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  // ---- sections ---------------------------------------------------------------------------
  function renderTotals(t) {
    figure($("total-requests"), t.requests, int(t.requests));
    figure($("total-cascaded"), t.cascaded, int(t.cascaded));
    figure($("total-pass-through"), t.pass_through, int(t.pass_through));
    figure($("total-cost"), t.cost, usd(t.cost));
    figure($("total-input-tokens"), t.input_tokens, int(t.input_tokens));
    figure($("total-output-tokens"), t.output_tokens, int(t.output_tokens));
    figure($("total-baseline"), t.baseline_cost, usd(t.baseline_cost));
    figure($("total-saving"), t.saving, usd(t.saving));
    figure($("total-saving-pct"), t.saving_pct, pct(t.saving_pct));
    figure($("total-accepted"), t.accepted, int(t.accepted));
    figure($("total-accepted-pct"), t.accepted_pct, pct(t.accepted_pct)); // of the drafts judged, not of all requests
    figure($("total-drafted"), t.drafted, int(t.drafted));
    figure($("total-escalated"), t.escalated, int(t.escalated));
    figure($("total-errors"), t.errors, int(t.errors));
    figure($("total-cancelled"), t.cancelled, int(t.cancelled));
  }

  function reasonList(rule) {
    const list = el("ul", { class: "reasons" });
    for (const [reason, count] of Object.entries(rule.escalations)) {
      list.append(el("li", { "data-reason": reason, "data-count": count }, reason, el("span", { class: "count" }, "× " + count)));
    }
    for (const [reason, count] of Object.entries(rule.skips)) {
      list.append(el("li", { class: "skip", "data-skip": reason, "data-count": count }, "skipped: " + reason,
        el("span", { class: "count" }, "× " + count)));
    }
    for (const [model, reasons] of Object.entries(rule.skipped_stages || {})) {
      for (const [reason, count] of Object.entries(reasons)) {
        list.append(el("li", { class: "skip", "data-stage-skip": `${model}=${reason}`, "data-count": count },
          `stage passed over: ${model} (${reason})`, el("span", { class: "count" }, "× " + count)));
      }
    }
    return list;
  }

  function renderRules(rules) {
    const rows = rules.map((r) => el("tr", { "data-rule": r.rule },
      el("th", {}, r.rule),
      cell("requests", r.requests, int(r.requests)),
      cell("accepted", r.accepted, `${int(r.accepted)} · ${pct(r.accepted_pct)}`),
      cell("escalated", r.escalated, `${int(r.escalated)} · ${pct(r.escalated_pct)}`),
      cell("skipped", r.skipped, int(r.skipped)),
      cell("errors", r.errors, int(r.errors)),
      cell("cost", r.cost, usd(r.cost)),
      cell("saving", r.saving, `${usd(r.saving)} · ${pct(r.saving_pct)}`),
      cell("reasons", null, reasonList(r), "wrap"),
    ));
    for (const [row, r] of rows.map((row, i) => [row, rules[i]])) {
      row.querySelector('[data-field="accepted"]').dataset.pct = raw(r.accepted_pct);
      row.querySelector('[data-field="escalated"]').dataset.pct = raw(r.escalated_pct);
    }
    fill($("rules").tBodies[0], rows, 9, "No cascaded requests in this range.");
  }

  function renderShadow(shadow) {
    const ratio = (v) => (v == null ? "—" : v.toFixed(3));
    const rows = Object.entries(shadow || {}).map(([rule, q]) => el("tr", { "data-rule": rule },
      el("th", {}, rule),
      cell("pairs", q.pairs, int(q.pairs)),
      cell("labelled", q.labelled, int(q.labelled)),
      cell("accepted_wrong", q.accepted_wrong, int(q.accepted_wrong)),
      cell("quality_retained", q.quality_retained, ratio(q.quality_retained)),
      cell("interval", null, q.quality_retained_ci ? `${ratio(q.quality_retained_ci[0])}–${ratio(q.quality_retained_ci[1])}` : "—"),
      cell("shadow_cost", q.shadow_cost, usd(q.shadow_cost)),
    ));
    fill($("shadow").tBodies[0], rows, 7, "No shadow pairs in this range: shadow mode is off (a rule's shadow option).");
  }

  function renderSpend(spend) {
    for (const [name, rows] of Object.entries(spend)) {
      const table = $("spend-" + name);
      if (!table) continue;
      fill(table.tBodies[0], rows.map((r) => el("tr", { "data-name": raw(r.name) },
        el("th", { class: r.name == null ? "muted" : null }, r.name == null ? "(none)" : r.name),
        cell("requests", r.requests, int(r.requests)),
        cell("cost", r.cost, usd(r.cost)),
        cell("saving", r.saving, usd(r.saving)),
      )), 4, "No requests in this range.");
    }
  }

  function renderLatency(latency) {
    for (const [metric, figures] of Object.entries(latency)) {
      const row = document.querySelector(`#latency tr[data-metric="${metric}"]`);
      if (!row) continue;
      for (const td of row.querySelectorAll("td[data-field]")) {
        const value = figures[td.dataset.field];
        figure(td, value, td.dataset.field === "count" ? int(value) : ms(value));
      }
    }
  }

  function decisionPill(r) {
    if (r.status >= 400) return el("span", { class: "pill error" }, r.decision || "error " + r.status);
    if (r.plan !== "cascade") return el("span", { class: "pill pass" }, "pass-through");
    const kind = (r.decision || "").split(":")[0];
    return el("span", { class: "pill " + kind, title: r.decision || "" }, r.decision || "—");
  }

  function renderRecent(recent, withDate) {
    const rows = recent.map((r) => el("tr", { "data-request-id": raw(r.request_id) },
      cell("ts", r.ts, when(r.ts, withDate), ""),
      cell("requested_model", r.requested_model, r.requested_model, ""),
      cell("rule", r.rule, r.rule || "—", ""),
      cell("decision", r.decision, decisionPill(r), ""),
      cell("confidence", r.confidence, r.confidence == null ? "—" : r.confidence.toFixed(3)),
      cell("served_model", r.served_model, r.served_model || "—", ""),
      cell("cost", r.cost, usd(r.cost)),
      cell("saving", r.baseline_cost == null || r.cost == null ? null : r.baseline_cost - r.cost,
        r.baseline_cost == null || r.cost == null ? "—" : usd(r.baseline_cost - r.cost)),
      cell("latency_ms", r.latency_ms, ms(r.latency_ms)),
      cell("status", r.status, String(r.status), r.status >= 400 ? "num bad" : "num"),
    ));
    fill($("recent").tBodies[0], rows, 10, "No requests in this range.");
  }

  /** Cumulative cost and baseline per bucket (the gap between them is the saving), requests as bars. */
  function renderChart(series, range) {
    const box = $("saving-chart");
    const width = Math.max(box.clientWidth, 320), height = 260;
    const m = { top: 12, right: 16, bottom: 26, left: 64 };
    const w = width - m.left - m.right, h = height - m.top - m.bottom;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "cost and baseline over time" });
    let cost = 0, baseline = 0;
    const points = series.map((b) => ({ ...b, cumCost: (cost += b.cost), cumBaseline: (baseline += b.baseline_cost) }));
    const top = Math.max(baseline, cost, 1e-9) * 1.08;
    const most = Math.max(1, ...series.map((b) => b.requests));
    const n = Math.max(points.length, 1);
    const x = (i) => m.left + (w * (i + 0.5)) / n;
    const y = (v) => m.top + h - (h * v) / top;
    const axis = svg("g", { class: "axis" });
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      axis.append(svg("line", { x1: m.left, x2: width - m.right, y1: y(v), y2: y(v) }));
      const label = svg("text", { x: m.left - 8, y: y(v) + 4, "text-anchor": "end" });
      label.textContent = usd(v);
      axis.append(label);
    }
    const ticks = Math.min(6, points.length);
    for (let k = 0; k < ticks; k++) {
      const i = Math.round((k * (points.length - 1)) / Math.max(ticks - 1, 1));
      const anchor = ticks > 1 && k === 0 ? "start" : ticks > 1 && k === ticks - 1 ? "end" : "middle";
      const label = svg("text", { x: x(i), y: height - 6, "text-anchor": anchor });
      label.textContent = when(points[i].t, false).slice(0, 5);
      if (range.end - range.start > 86400) label.textContent = when(points[i].t, true).slice(5, 16);
      axis.append(label);
    }
    chart.append(axis);
    const bars = svg("g", {});
    const barWidth = Math.max(1, (w / n) * 0.7);
    points.forEach((p, i) => {
      const barHeight = (h * 0.25 * p.requests) / most;
      bars.append(svg("rect", { class: "bar", x: x(i) - barWidth / 2, y: m.top + h - barHeight, width: barWidth, height: barHeight }));
    });
    chart.append(bars);
    if (points.length) {
      const line = (key) => points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`).join("");
      const back = points.map((p, i) => [x(i), y(p.cumCost)]).reverse().map(([px, py]) => `L${px.toFixed(1)},${py.toFixed(1)}`).join("");
      chart.append(svg("path", { class: "area-saving", d: line("cumBaseline") + back + "Z" }));
      chart.append(svg("path", { class: "line-baseline", d: line("cumBaseline") }));
      chart.append(svg("path", { class: "line-cost", d: line("cumCost") }));
    }
    const hits = svg("g", { id: "series", "data-buckets": points.length });
    points.forEach((p, i) => {
      const hit = svg("rect", { class: "hit bucket", x: x(i) - w / n / 2, y: m.top, width: w / n, height: h,
        "data-t": p.t, "data-requests": p.requests, "data-cost": p.cost, "data-baseline": p.baseline_cost });
      const title = svg("title");
      title.textContent = `${when(p.t, true)} · ${p.requests} requests · cost ${usd(p.cost)} · baseline ${usd(p.baseline_cost)}` +
        ` · saving so far ${usd(p.cumBaseline - p.cumCost)}`;
      hit.append(title);
      hits.append(hit);
    });
    chart.append(hits);
    box.replaceChildren(chart);
    $("bucket-width").textContent = `per ${span(range.bucket)}`;
  }

  function render(data) {
    state.data = data;
    $("message").hidden = true;
    $("auth-form").hidden = true;
    $("content").hidden = false;
    renderTotals(data.totals);
    renderChart(data.series, data.range);
    renderRules(data.rules);
    renderShadow(data.shadow);
    renderSpend(data.spend);
    renderLatency(data.latency);
    renderRecent(data.recent, data.range.end - data.range.start > 86400);
    const updated = $("updated");
    updated.dataset.generatedAt = data.range.generated_at;
    updated.textContent = "updated " + when(data.range.generated_at, false);
    updated.classList.toggle("live-on", $("live").checked);
    document.body.dataset.range = data.range.name;
    document.body.dataset.since = raw(data.range.since);
    document.body.dataset.ready = "true";
  }

  // ---- loading, auth and refresh ----------------------------------------------------------
  function showMessage(text) {
    $("message").textContent = text;
    $("message").hidden = false;
  }

  function askForKey(refused) {
    $("content").hidden = true;
    $("auth-form").hidden = false;
    $("auth-error").textContent = refused ? "That key was refused." : "";
    $("master-key").focus();
  }

  async function load() {
    if (state.loading) return;
    state.loading = true;
    try {
      const key = sessionStorage.getItem(KEY);
      const headers = key ? { authorization: "Bearer " + key } : {};
      let response;
      try {
        response = await fetch(`${API}?range=${encodeURIComponent(state.range)}`, { headers, cache: "no-store" });
      } catch (err) {
        showMessage("The gateway did not answer: " + err.message);
        return;
      }
      if (response.status === 401) {
        if (key) sessionStorage.removeItem(KEY);
        askForKey(Boolean(key));
        return;
      }
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        showMessage((body && body.error && body.error.message) || `the dashboard API answered ${response.status}`);
        return;
      }
      render(body);
    } finally {
      state.loading = false;
    }
  }

  function schedule() {
    clearTimeout(state.timer);
    if ($("live").checked && $("auth-form").hidden) state.timer = setTimeout(() => load().finally(schedule), state.refreshMs);
  }

  function selectRange(range) {
    state.range = range;
    history.replaceState(null, "", "#range=" + range);
    for (const button of document.querySelectorAll("#ranges button")) {
      button.setAttribute("aria-pressed", String(button.dataset.range === range));
    }
    load().finally(schedule);
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const button of document.querySelectorAll("#ranges button")) {
      button.addEventListener("click", () => selectRange(button.dataset.range));
    }
    $("live").addEventListener("change", () => {
      $("updated").classList.toggle("live-on", $("live").checked);
      schedule();
    });
    $("auth-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, $("master-key").value.trim());
      $("master-key").value = "";
      load().finally(schedule);
    });
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => state.data && renderChart(state.data.series, state.data.range), 150);
    });
    selectRange(state.range);
  });
})();
