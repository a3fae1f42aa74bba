// A run as a file from the page: Markdown (a note a person reads) or JSON (the run as the API has it).
// The Markdown follows the CLI's `tickertape show RUN --format md` (services/cli/markdown.py):
// a title with the decision, the facts as a list, then sections in the order the desk worked.
import { usageText } from "./page-state.js";

const pct = (v) => (typeof v === "number" ? `${Math.round(v * 100)}%` : "—");
const fixed = (v, digits = 2) => (typeof v === "number" ? v.toFixed(digits) : "—");
const cap = (word) => (word ? `${word[0].toUpperCase()}${word.slice(1)}` : "");
const utc = (iso) => (/^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(iso || "") ? `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC` : iso || "");

/** An argument without a leading "Aggressive: " where the voice is already named before it. */
export function unlabelled(argument, stance) {
  const text = String(argument || "");
  return text.toLowerCase().startsWith(`${stance}: `) ? text.slice(stance.length + 2) : text;
}

/** Usage of one step as "2 LLM calls · 1,234 tokens · $0.0012", or "" when it made no calls. */
export function stepUsageText(usage) {
  if (!usage?.calls) return "";
  return usageText({ usage });
}

function facts(state, url) {
  const r = state.result || {};
  return [
    `- Run: [${state.runId}](${url})`,
    `- Status: ${state.status}`,
    state.result ? `- Rating: ${r.rating}` : null,
    r.priceTarget != null ? `- Price target: ${fixed(r.priceTarget)}` : null,
    state.result ? `- Horizon: ${r.horizon}${r.horizonDays ? ` (${r.horizonDays} days)` : ""}` : null,
    state.result ? `- Confidence: ${pct(r.confidence)}` : null,
    r.positionPct != null ? `- Position: ${fixed(r.positionPct, 1)}% of portfolio` : null,
    r.lastClose != null ? `- Last close: ${fixed(r.lastClose)}` : null,
    r.demo ? `- ${r.dataNote || `Demo data: ${r.provider || "synthetic"} prices, not real market data.`}` : null,
    `- Analysts: ${(state.analysts || []).join(", ")}`,
    `- Model: ${state.modelId}`,
    `- Requested: ${utc(state.createdAt || state.requestedAt)}`,
    `- Usage: ${usageText(state)}`,
  ].filter(Boolean);
}

const section = (title, ...body) => [`## ${title}`, "", ...body.flat().filter((l) => l !== null && l !== undefined), ""];

function reports(r) {
  return (r.reports || []).flatMap((rep) => {
    const title = String(rep.title || rep.analyst).toLowerCase().includes(rep.signal) ? rep.title : `${rep.title} (${rep.signal})`;
    return [`### ${title}`, "", String(rep.report || rep.summary || ""), ""];
  });
}

function debate(d) {
  if (!d) return [];
  const turns = (d.turns || []).map((t) => `**${t.side === "bull" ? "Bull" : "Bear"} (round ${t.round}):** ${t.argument}\n`);
  return section(`Bull vs bear debate (leans ${d.lean})`, d.summary, "", turns);
}

function trader(t) {
  if (!t) return [];
  const plan = `${t.action} at ${fixed(t.entry)}, stop ${fixed(t.stop)}, target ${fixed(t.target)}, ${fixed(t.positionPct, 1)}% of portfolio`;
  return section("Trader's proposal", plan, "", String(t.rationale || ""));
}

function riskDebate(d) {
  if (!d) return [];
  const turns = (d.turns || []).map((t) => `**${cap(t.stance)} (round ${t.round}):** ${unlabelled(t.argument, t.stance)}\n`);
  return section(`Risk debate (${d.prevailing} prevails)`, d.summary, "", turns);
}

function manager(r) {
  const risks = r.keyRisks?.length ? ["", "Key risks:", "", ...r.keyRisks.map((k) => `- ${k}`)] : [];
  return section(`Portfolio manager: ${r.decision} (${r.rating})`, String(r.rationale || ""), risks);
}

// Each step's status, time and spend; its message is left out: the sections above already say it.
function steps(state) {
  return section("Steps", (state.steps || []).map((s) => {
    const used = stepUsageText(s.usage);
    const took = typeof s.durationS === "number" ? ` in ${s.durationS.toFixed(1)} s` : "";
    return `- ${s.label || s.name}: ${s.status}${took}${used ? ` (${used})` : ""}`;
  }));
}

/** A run as Markdown: the facts, then analysts, debate, trader, risk debate, portfolio manager, usage. */
export function markdown(state, url) {
  const r = state.result;
  const lines = [`# ${state.symbol} — ${r?.decision || state.status}`, "", ...facts(state, url), ""];
  if (r) lines.push(...section("Analyst reports"), ...reports(r), ...debate(r.debate), ...trader(r.trade), ...riskDebate(r.riskDebate), ...manager(r));
  else if (state.output != null) lines.push(...section("Output", "```json", JSON.stringify(state.output, null, 2), "```"));
  lines.push(...steps(state));
  return `${lines.join("\n").replace(/\n{3,}/g, "\n\n").trimEnd()}\n`;
}

function download(text, type, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 0);
}

/** Download the run in `format` ("md" or "json"); the newest state is asked for first. */
export async function exportRun(client, runId, format, runUrl) {
  const state = await client.get(runId);
  const name = `tickertape-${state.symbol}-${state.runId}`;
  if (format === "md") download(markdown(state, runUrl), "text/markdown", `${name}.md`);
  else download(JSON.stringify(state, null, 2), "application/json", `${name}.json`);
}
