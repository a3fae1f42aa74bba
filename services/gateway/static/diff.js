// Two runs side by side from `GET /runs/{a}/diff/{b}`: every compared field, the differing ones marked.
import { $, h, seconds, shortId, when } from "./views.js";
import { dollars, runHash } from "./page-state.js";

const DIFF_HASH = /^#\/diff\/([A-Za-z0-9_-]{1,64}),([A-Za-z0-9_-]{1,64})$/;

export const diffHash = ([a, b]) => `#/diff/${a},${b}`;

export function diffIdsFromHash(hash) {
  const match = DIFF_HASH.exec(hash || "");
  return match ? [match[1], match[2]] : null;
}

const pct = (v) => (typeof v === "number" ? `${Math.round(v * 100)}%` : null);
// outcome first, then each analyst, then what the runs were asked to do, then what they cost
const ORDER = ["decision", "rating", "confidence", "horizon", "lastClose", "analysts.", "modelId", "analysts", "options.",
  "costUsd", "llmCalls", "tokens", "durationS", "status", "symbol"];
const LABELS = {
  decision: "Decision", rating: "Rating", confidence: "Confidence", horizon: "Horizon", lastClose: "Last close",
  status: "Status", modelId: "Model", analysts: "Analysts", costUsd: "Cost", llmCalls: "LLM calls", tokens: "Tokens",
  durationS: "Took", symbol: "Ticker", "options.debateRounds": "Debate rounds", "options.riskRounds": "Risk rounds",
  "options.maxCostUsd": "Budget", "options.maxTokens": "Token cap", "options.pipeline": "Pipeline",
  "options.dataProvider": "Data", "options.deadlineS": "Deadline",
};
const FORMATS = {
  confidence: pct, costUsd: (v) => dollars(v), durationS: (v) => seconds(v), lastClose: (v) => Number(v).toFixed(2),
  "options.maxCostUsd": (v) => dollars(v), tokens: (v) => Number(v).toLocaleString("en-US"),
};

/** The diff's fields as rows `[key, a, b, differs]`, options spread out, in reading order; a
 * field empty in both runs (no budget, no deadline) is left out. */
export function diffRows(doc) {
  const rows = new Map();
  for (const [key, { a, b }] of Object.entries(doc.changed || {})) rows.set(key, [a, b]);
  for (const [key, v] of Object.entries(doc.sameValues || {})) rows.set(key, [v, v]);
  const opts = rows.get("options");
  if (opts) {
    rows.delete("options");
    const [a, b] = opts.map((o) => o || {});
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) rows.set(`options.${k}`, [a[k], b[k]]);
  }
  const rank = (key) => {
    const exact = ORDER.indexOf(key);
    if (exact >= 0) return exact;
    const prefix = ORDER.findIndex((p) => p.endsWith(".") && key.startsWith(p));
    return prefix >= 0 ? prefix : ORDER.length;
  };
  const empty = (v) => v === null || v === undefined || v === "";
  return [...rows.entries()].filter(([, [a, b]]) => !(empty(a) && empty(b))).sort(([x], [y]) => {
    // an analyst's signal before its score
    return rank(x) - rank(y) || x.replace(/signal$/, "a").localeCompare(y.replace(/signal$/, "a"));
  }).map(([key, [a, b]]) => [key, a, b, JSON.stringify(a) !== JSON.stringify(b)]);
}

function label(key) {
  if (LABELS[key]) return LABELS[key];
  const m = /^analysts\.(.+)\.(signal|score)$/.exec(key);
  return m ? `${m[1][0].toUpperCase()}${m[1].slice(1)} ${m[2]}` : key;
}

function shown(key, v) {
  if (v === null || v === undefined || v === "") return "—";
  if (Array.isArray(v)) return v.join(", ");
  const format = FORMATS[key];
  return String((format && format(v)) ?? v);
}

/** Fill the compare card with the diff of runs `a` and `b` (`runs` are their states, for headings). */
export function renderDiff(doc, runs, onClose) {
  const card = $("#compare");
  const rows = diffRows(doc);
  const changed = rows.filter((r) => r[3]).length;
  const head = h("tr", {}, h("th", { scope: "col" }, ""), runs.map((s) => h("th", { scope: "col" },
    h("a", { href: runHash(s.runId) }, `${s.symbol} ${shortId(s.runId)}`),
    h("small", { class: "muted" }, s.parentRunId ? `fork from ${shortId(s.parentRunId)}` : when(s.createdAt)))));
  const body = rows.map(([key, a, b, differs]) => h("tr", { "data-differs": differs ? "true" : null, "data-key": key },
    h("th", { scope: "row" }, label(key)),
    [a, b].map((v, i) => h("td", { "data-decision": key === "decision" ? v : null, "data-col": String(i) }, shown(key, v)))));
  card.hidden = false;
  card.replaceChildren(
    h("div", { class: "history-head" }, h("h2", {}, "Run against run"),
      h("button", { type: "button", class: "link", id: "compare-close", onclick: onClose }, "Close")),
    h("p", { class: "muted", id: "diff-summary" }, changed ? `${changed} of ${rows.length} fields differ (highlighted).` : "The two runs agree on every compared field."),
    h("div", { class: "table-scroll" }, h("table", { class: "compare diff" },
      h("colgroup", {}, h("col", { class: "label" }), h("col", {}), h("col", {})), h("thead", {}, head), h("tbody", {}, body))));
}

/** Fetch and show the diff of two runs. */
export async function openDiff(client, [a, b], onClose) {
  const [doc, ...runs] = await Promise.all([
    client.request("GET", `/runs/${encodeURIComponent(a)}/diff/${encodeURIComponent(b)}`), client.get(a), client.get(b)]);
  renderDiff(doc, runs, onClose);
  $("#compare").scrollIntoView({ behavior: "smooth", block: "start" });
}

/** On a comparison of exactly two runs, a link to their field-by-field diff. */
export function offerDiff(runIds) {
  if (runIds.length !== 2) return;
  $("#compare .history-head")?.insertBefore(h("a", { href: diffHash(runIds), id: "compare-diff", class: "small-link" }, "Field-by-field diff"),
    $("#compare-close"));
}
