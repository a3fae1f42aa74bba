// Runs side by side: decisions, ratings, confidence, analyst signals and key numbers, differences marked.
import { $, h, seconds, shortId, when } from "./views.js";
import { dollars } from "./page-state.js";

const COMPARE_HASH = /^#\/compare\/([A-Za-z0-9_,-]{1,400})$/;

export const compareHash = (runIds) => `#/compare/${runIds.join(",")}`;

export function compareIdsFromHash(hash) {
  const match = COMPARE_HASH.exec(hash || "");
  const ids = match ? match[1].split(",").filter(Boolean) : [];
  return ids.length >= 2 ? ids : null;
}

const pct = (v) => (typeof v === "number" ? `${Math.round(v * 100)}%` : "—");
const fixed = (v) => (typeof v === "number" ? v.toFixed(2) : "—");

/** The rows of the table: a label and how to read it from a run. */
function rows(runs) {
  const analysts = [...new Set(runs.flatMap((s) => (s.result?.reports || []).map((r) => r.analyst)))];
  return [
    ["Decision", (s) => s.result?.decision || s.status],
    ["Rating", (s) => s.result?.rating],
    ["Confidence", (s) => pct(s.result?.confidence)],
    ["Horizon", (s) => s.result?.horizon],
    ["Analysts", (s) => (s.analysts || []).join(", ")],
    ...analysts.map((a) => [`${a} signal`, (s) => (s.result?.reports || []).find((r) => r.analyst === a)?.signal || "—"]),
    ["Debate lean", (s) => s.result?.debate?.lean],
    ["Last close", (s) => fixed(s.result?.lastClose)],
    ["Trade", (s) => (s.result?.trade ? `${s.result.trade.action} ${fixed(s.result.trade.entry)} → ${fixed(s.result.trade.target)}` : "—")],
    ["Stop", (s) => fixed(s.result?.trade?.stop)],
    ["Model", (s) => s.modelId],
    ["Cost", (s) => `${dollars(s.usage?.costUsd)} · ${((s.usage?.promptTokens || 0) + (s.usage?.completionTokens || 0)).toLocaleString("en-US")} tokens`],
    ["Took", (s) => seconds(s.durationS)],
  ];
}

/** Fill the compare card; a row whose values are not all the same is marked `data-differs`. */
export function renderCompare(runs, onClose) {
  const card = $("#compare");
  if (!runs) {
    card.hidden = true;
    card.replaceChildren();
    return;
  }
  const head = h("tr", {}, h("th", { scope: "col" }, ""), runs.map((s) => h("th", { scope: "col" },
    h("a", { href: `#/runs/${s.runId}` }, `${s.symbol} ${shortId(s.runId)}`), h("small", { class: "muted" }, when(s.createdAt)))));
  const body = rows(runs).map(([label, read]) => {
    const values = runs.map((s) => String(read(s) ?? "—"));
    const differs = new Set(values).size > 1;
    return h("tr", { "data-differs": differs ? "true" : null }, h("th", { scope: "row" }, label),
      values.map((v, i) => h("td", { "data-decision": label === "Decision" ? v : null, "data-col": String(i) }, v)));
  });
  card.hidden = false;
  card.replaceChildren(
    h("div", { class: "history-head" }, h("h2", {}, `Comparing ${runs.length} runs`),
      h("button", { type: "button", class: "link", id: "compare-close", onclick: onClose }, "Close")),
    h("p", { class: "muted" }, "Rows where the runs differ are highlighted."),
    h("div", { class: "table-scroll" }, h("table", { class: "compare", style: `min-width:${8 + runs.length * 8}rem` },
      h("colgroup", {}, h("col", { class: "label" }), runs.map(() => h("col", {}))), h("thead", {}, head), h("tbody", {}, body))));
}
