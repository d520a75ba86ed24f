//! `cairn report --html`: one self-contained HTML file (no network, no external files) with the run's
//! timeline, its graph with the critical path highlighted, and every task's details. The page draws itself
//! from the run summary embedded in it, with text set through the DOM only (task names never become markup).

use serde_json::json;

use super::run_summary::RunSummary;
use super::trace::worker_rows;

/// The report of `summary`, as a complete HTML document.
pub fn html_report(summary: &RunSummary) -> String {
    let rows = worker_rows(summary);
    let data = json!({ "run": summary, "rows": rows });
    // Inside <script>, only `</` (closing the element) and `<!--` could escape the JSON; both can only occur
    // inside JSON strings, where `\/` and `\u003c` mean the same characters.
    let embedded = data
        .to_string()
        .replace("</", "<\\/")
        .replace("<!--", "\\u003c!--");
    let title = format!(
        "cairn run {} — {}",
        summary.targets.join(" "),
        summary.started_at
    );
    TEMPLATE
        .replace("{{TITLE}}", &escape(&title))
        .replace("{{DATA}}", &embedded)
}

/// Escapes text for HTML content.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const TEMPLATE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1d2330; background: #fafbfc; }
  h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
  .meta { color: #5b6473; margin-bottom: 12px; }
  .totals span { display: inline-block; margin-right: 14px; }
  svg { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; }
  .bar { stroke: #0003; } .phase { opacity: .55; }
  .succeeded { fill: #4caf7a; } .failed, .timed_out { fill: #e0524d; } .interrupted { fill: #e09b3d; }
  .hit { fill: #8fb8e8; } .skipped, .not_run { fill: #c5cad3; }
  .axis text, .row-label { fill: #5b6473; font-size: 11px; } .axis line { stroke: #e6e9ee; }
  .node rect { fill: #fff; stroke: #9aa3b2; rx: 4px; } .node text { font-size: 12px; fill: #1d2330; }
  .node.critical rect { stroke: #d0342c; stroke-width: 2.5px; } .edge { stroke: #b3bac6; fill: none; }
  .edge.critical { stroke: #d0342c; stroke-width: 2.5px; }
  .node .status { stroke: none; }
  table { border-collapse: collapse; background: #fff; width: 100%; }
  th, td { border-bottom: 1px solid #e6e9ee; padding: 4px 8px; text-align: left; vertical-align: top; }
  th { background: #f1f3f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  code { font-size: 12px; } #errors { color: #d0342c; }
</style>
</head>
<body>
<h1 id="title"></h1>
<div class="meta" id="meta"></div>
<div class="totals" id="totals"></div>
<div id="errors"></div>
<h2>Timeline</h2>
<div id="timeline"></div>
<h2>Graph <small>(critical path in red)</small></h2>
<div id="graph"></div>
<h2>Tasks</h2>
<table id="details"><thead><tr>
  <th>task</th><th>status</th><th>cache</th><th>why it ran</th><th>start</th><th>duration</th>
  <th>attempts</th><th>output</th><th>key</th>
</tr></thead><tbody></tbody></table>
<script id="cairn-run" type="application/json">{{DATA}}</script>
<script>
"use strict";
window.addEventListener("error", (e) => {
  const p = document.createElement("p");
  p.className = "render-error";
  p.textContent = "The report could not be drawn: " + e.message;
  document.getElementById("errors").appendChild(p);
});
const SVG = "http://www.w3.org/2000/svg";
const data = JSON.parse(document.getElementById("cairn-run").textContent);
const run = data.run, rows = data.rows, tasks = run.tasks;
const critical = new Set(run.critical_path.tasks);
const el = (name, attrs, parent, text) => {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
};
const ms = (v) => v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(v < 10 ? 1 : 0) + " ms";
const statusClass = (t) => t.cache === "hit" ? "hit" : t.status;

document.getElementById("title").textContent = "cairn run " + run.targets.join(" ");
document.getElementById("meta").textContent =
  `started ${run.started_at} · ${ms(run.duration_ms)} · up to ${run.jobs} at once · exit status ${run.exit_code}` +
  (run.interrupted ? ` · stopped by ${run.interrupted}` : "") + ` · cairn ${run.cairn} · run ${run.id}`;
const totals = document.getElementById("totals");
for (const [name, value] of Object.entries(run.totals)) {
  const span = document.createElement("span");
  span.className = "total";
  span.dataset.name = name;
  span.textContent = `${name}: ${value}`;
  totals.appendChild(span);
}

// Timeline: one row per worker slot, one bar per task that started, its phases inside.
(function timeline() {
  const started = tasks.map((t, i) => [t, rows[i]]).filter(([t, r]) => t.started_ms !== null && r !== null);
  const lanes = Math.max(1, ...started.map(([, r]) => r + 1));
  const width = 960, left = 80, lane = 28, top = 24;
  const span = Math.max(run.duration_ms, ...started.map(([t]) => t.ended_ms || 0), 1);
  const x = (v) => left + (v / span) * (width - left - 16);
  const svg = el("svg", { width, height: top + lanes * lane + 12, id: "timeline-svg" },
    document.getElementById("timeline"));
  const axis = el("g", { class: "axis" }, svg);
  for (let i = 0; i <= 5; i++) {
    const v = (span * i) / 5;
    el("line", { x1: x(v), x2: x(v), y1: top - 6, y2: top + lanes * lane }, axis);
    el("text", { x: x(v), y: 14, "text-anchor": "middle" }, axis, ms(v));
  }
  for (let r = 0; r < lanes; r++) {
    el("text", { class: "row-label", x: 8, y: top + r * lane + 17 }, svg, `worker ${r + 1}`);
  }
  for (const [t, r] of started) {
    const y = top + r * lane + 3;
    const g = el("g", { class: "task", "data-task": t.label }, svg);
    el("rect", {
      class: "bar " + statusClass(t), "data-task": t.label, x: x(t.started_ms), y,
      width: Math.max(2, x(t.ended_ms) - x(t.started_ms)), height: lane - 6,
    }, g);
    for (const p of t.phases) {
      el("rect", {
        class: "phase " + statusClass(t), "data-phase": p.name, x: x(p.started_ms), y: y + lane - 13,
        width: Math.max(1, x(p.started_ms + p.duration_ms) - x(p.started_ms)), height: 5,
      }, g);
    }
    el("title", {}, g, `${t.label}: ${t.status}${t.cache === "hit" ? " (cached)" : ""}, ${ms(t.duration_ms)}`);
  }
})();

// Graph: tasks in columns by depth (the longest chain of dependencies before them), edges between them.
(function graph() {
  const index = new Map(tasks.map((t, i) => [t.label, i]));
  const depth = tasks.map(() => 0);
  tasks.forEach((t, i) => { for (const d of t.deps) depth[i] = Math.max(depth[i], depth[index.get(d)] + 1); });
  const columns = [];
  tasks.forEach((t, i) => { (columns[depth[i]] = columns[depth[i]] || []).push(i); });
  const boxW = 170, boxH = 26, gapX = 60, gapY = 14, pad = 12;
  const height = pad * 2 + Math.max(...columns.map((c) => c.length)) * (boxH + gapY);
  const svg = el("svg", { width: pad * 2 + columns.length * (boxW + gapX), height, id: "graph-svg" },
    document.getElementById("graph"));
  const pos = [];
  columns.forEach((column, c) => column.forEach((i, r) => {
    pos[i] = { x: pad + c * (boxW + gapX), y: pad + r * (boxH + gapY) };
  }));
  const onPath = (a, b) => {
    const path = run.critical_path.tasks;
    const k = path.indexOf(a);
    return k >= 0 && path[k + 1] === b;
  };
  tasks.forEach((t, i) => {
    for (const d of t.deps) {
      const from = pos[index.get(d)], to = pos[i];
      const x1 = from.x + boxW, y1 = from.y + boxH / 2, x2 = to.x, y2 = to.y + boxH / 2;
      el("path", {
        class: "edge" + (onPath(d, t.label) ? " critical" : ""), "data-from": d, "data-to": t.label,
        d: `M${x1},${y1} C${x1 + gapX / 2},${y1} ${x2 - gapX / 2},${y2} ${x2},${y2}`,
      }, svg);
    }
  });
  tasks.forEach((t, i) => {
    const g = el("g", { class: "node" + (critical.has(t.label) ? " critical" : ""), "data-task": t.label,
      transform: `translate(${pos[i].x},${pos[i].y})` }, svg);
    el("rect", { width: boxW, height: boxH }, g);
    el("rect", { class: "status " + statusClass(t), width: 6, height: boxH }, g);
    const name = t.label.length > 24 ? t.label.slice(0, 23) + "…" : t.label;
    el("text", { x: 12, y: 17 }, g, name);
    el("title", {}, g, `${t.label} — ${t.status}, ${ms(t.duration_ms)}`);
  });
})();

// Details: every task, in plan order.
(function details() {
  const body = document.querySelector("#details tbody");
  for (const t of tasks) {
    const tr = document.createElement("tr");
    tr.dataset.task = t.label;
    const cells = [
      t.label, t.status + (t.exit_code !== null && t.exit_code !== 0 ? ` (${t.exit_code})` : "") +
        (t.blocked_by ? ` — blocked by ${t.blocked_by}` : ""),
      t.cache, t.cache_reason || "", t.started_ms === null ? "—" : ms(t.started_ms),
      ms(t.duration_ms), String(t.attempts), `${t.output_bytes} B`, t.key ? t.key.slice(0, 12) : "—",
    ];
    cells.forEach((text, k) => {
      const td = document.createElement("td");
      if (k >= 4 && k <= 7) td.className = "num";
      if (k === 8) { const code = document.createElement("code"); code.textContent = text; td.appendChild(code); }
      else td.textContent = text;
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
  document.body.dataset.rendered = "yes";
})();
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_data_cannot_close_the_script_element() {
        let text = "</script><script>alert(1)</script><!--";
        let embedded = serde_json::Value::String(text.into())
            .to_string()
            .replace("</", "<\\/")
            .replace("<!--", "\\u003c!--");
        assert!(!embedded.contains("</") && !embedded.contains("<!--"));
        let back: String = serde_json::from_str(&embedded).expect("still JSON");
        assert_eq!(back, text);
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
