// Rendering of runs, results and history into the page. DOM only; no network.
import { priceChart } from "./chart.js";
import { isTerminal } from "./tickertape-client.js";
import { runHash, usageText } from "./page-state.js";
import { demoNote, outcomeNote, spendNote } from "./notes.js";
import { stepUsageText, unlabelled } from "./export.js";

export const $ = (sel) => document.querySelector(sel);

/** A DOM element: h("p", {class: "x"}, "text", child…). Text is always text, never HTML. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}

export function seconds(value) {
  if (value === null || value === undefined) return "";
  const s = Math.max(0, Math.round(Number(value)));
  return s >= 60 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

const ICONS = { pending: "○", running: "●", completed: "✓", failed: "✗", cancelled: "–" };
const STATUS_WORDS = { pending: "queued", running: "running", completed: "completed", failed: "failed", timeout: "timed out", cancelled: "cancelled" };

/** The ETA shown now: the last estimate counted down since it arrived. */
export function etaNow(state) {
  if (!state || isTerminal(state) || state.status !== "running" || state.etaS === null || state.etaS === undefined) return null;
  const since = (Date.now() - (state.receivedAt || Date.now())) / 1000;
  return Math.max(state.etaS - since, 0);
}

export function renderRun(state) {
  $("#run").hidden = false;
  $("#run").dataset.runId = state.runId;
  $("#run").dataset.status = state.status;
  $("#run-symbol").textContent = state.symbol || "";
  const pill = $("#run-status");
  pill.textContent = STATUS_WORDS[state.status] || state.status;
  pill.dataset.status = state.status;
  const analysts = (state.analysts || []).join(", ");
  $("#run-meta").textContent = [`run ${state.runId}`, state.modelId, analysts, when(state.createdAt)].filter(Boolean).join(" · ");
  const demo = demoNote(state);
  $("#run-demo").hidden = !demo;
  $("#run-demo").textContent = demo?.text || "";
  $("#run-demo").title = demo?.title || "";
  const pct = Math.max(0, Math.min(100, Number(state.progress) || 0));
  $("#bar").style.width = `${pct}%`;
  $(".progress").setAttribute("aria-valuenow", String(Math.round(pct)));
  $("#percent").textContent = `${pct.toFixed(0)}%`;
  renderEta(state);
  $("#message").textContent = state.cancelRequested && !isTerminal(state) ? "Cancelling…" : currentMessage(state);
  $("#steps").replaceChildren(...(state.steps || []).map((s) => stepItem(s, state)));
  $("#cancel").hidden = isTerminal(state);
  const error = $("#run-error");
  error.hidden = !(isTerminal(state) && state.status !== "completed" && state.error);
  if (!error.hidden) error.textContent = failureText(state);
  renderSpendAndSteps(state);
}

/** Spend against the budget, and the step list folded under the decision once a run completed. */
function renderSpendAndSteps(state) {
  $("#usage").hidden = false;
  $("#usage").textContent = usageText(state);
  const steps = state.steps || [];
  const done = steps.filter((s) => s.status === "completed").length;
  $("#steps-summary").textContent = `Steps: ${done} of ${steps.length} done${state.durationS ? ` in ${seconds(state.durationS)}` : ""}`;
  const box = $("#steps-box");
  const folded = `${state.runId}:${state.status === "completed"}`;
  if (box.dataset.folded !== folded) { // only when the run or its outcome changes: a reader's toggle stays
    box.dataset.folded = folded;
    box.open = state.status !== "completed";
  }
}

export function renderEta(state) {
  const eta = etaNow(state);
  $("#eta").textContent = eta === null ? (state?.status === "pending" ? "waiting for a runner…" : "") : `about ${seconds(eta)} left`;
}

function currentMessage(state) {
  const step = (state.steps || []).find((s) => s.name === state.currentStep);
  if (step) return step.message ? `${step.label}: ${step.message}` : `${step.label}…`;
  return state.message || "";
}

function failureText(state) {
  if (state.status === "cancelled") return "This run was cancelled.";
  if (state.status === "timeout") return `This run took too long and was stopped (${state.error?.message || "deadline"}).`;
  return `This run failed: ${state.error?.message || "unknown error"}.`;
}

function stepItem(step, state) {
  let dur = step.durationS !== null && step.durationS !== undefined ? seconds(step.durationS) : "";
  if (step.status === "running" && step.startedAt && !isTerminal(state)) {
    dur = seconds((Date.now() - new Date(step.startedAt).getTime()) / 1000);
  }
  const detail = step.message && step.status !== "pending" ? h("span", { class: "detail" }, step.message) : null;
  const used = stepUsageText(step.usage);
  return h("li", { class: "step", "data-status": step.status, "data-step": step.name },
    h("span", { class: "icon", "aria-hidden": "true" }, ICONS[step.status] || "○"),
    h("span", { class: "name" }, step.label || step.name, h("span", { class: "visually-hidden" }, ` (${step.status})`)),
    h("span", { class: "dur" }, dur),
    detail,
    used ? h("span", { class: "step-usage", title: "LLM calls, tokens and estimated cost of this step" }, used) : null);
}

// --- result ---

export function renderResult(state) {
  const card = $("#result");
  const r = state?.result;
  if (state?.status === "completed" && !r && state.output != null) {
    renderOutput(card, state);  // a pipeline other than the built-in one: its final value as JSON
    return;
  }
  if (!state || state.status !== "completed" || !r) {
    card.hidden = true;
    card.replaceChildren();
    return;
  }
  const opened = card.dataset.runId === state.runId ? openedReports(card) : new Set();
  card.hidden = false;
  card.dataset.runId = state.runId;
  card.replaceChildren(...[
    h("h2", {}, `${r.symbol} — assessment`),
    h("div", { class: "decision-row" },
      h("span", { class: "badge", "data-decision": r.decision, id: "decision" }, r.decision),
      h("dl", { class: "facts" },
        fact("Rating", r.rating),
        h("div", {}, h("dt", {}, "Confidence"), h("dd", {}, `${Math.round((r.confidence || 0) * 100)}%`),
          h("span", { class: "meter" }, h("i", { style: `width:${Math.round((r.confidence || 0) * 100)}%` }))),
        fact("Horizon", r.horizon),
        r.priceTarget != null ? fact("Price target", num(r.priceTarget)) : null,
        r.positionPct != null ? fact("Position", `${num(r.positionPct, 1)}%`) : null,
        r.lastClose ? fact("Last close", r.lastClose.toFixed(2)) : null,
        fact("Took", seconds(state.durationS)))),
    r.demo ? h("p", { class: "demo", id: "demo-label" }, r.dataNote || `Demo data: ${r.provider || "synthetic"} prices generated for illustration, not real market data.`) : null,
    chartBlock(r),
    h("h3", {}, r.riskDebate ? `Portfolio manager: why ${r.decision}` : "Why"), formatted(r.rationale),
    r.keyRisks?.length ? [h("h3", {}, "Key risks"), h("ul", { class: "risks" }, r.keyRisks.map((k) => h("li", {}, k)))] : null,
    r.trade ? tradeBlock(r.trade) : null,
    r.debate ? debateBlock(r.debate) : null,
    r.riskDebate ? riskBlock(r.riskDebate) : null,
    r.memory?.length ? [h("h3", {}, "Earlier calls on this symbol"), h("ul", { class: "memory", id: "memory" }, r.memory.map(pastCall))] : null,
    h("h3", {}, "Analyst reports"),
    (r.reports || []).map(reportBlock),
  ].flat(2).filter(Boolean));
  for (const d of card.querySelectorAll("details")) d.open = opened.has(reportKey(d));
}

// A redraw of the same run (a phone turned, the chart redrawn for the new width) keeps the
// reports a reader opened.
const reportKey = (d) => d.id || d.dataset.analyst || "";
const openedReports = (card) => new Set([...card.querySelectorAll("details[open]")].map(reportKey));

function renderOutput(card, state) {
  card.hidden = false;
  card.dataset.runId = state.runId;
  const text = typeof state.output === "string" ? state.output : JSON.stringify(state.output, null, 2);
  card.replaceChildren(
    h("h2", {}, `${state.pipeline || "pipeline"} — result`),
    h("pre", { class: "output", id: "output" }, text));
}

function fact(label, value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, value ?? "—"));
}

function chartBlock(r) {
  const svg = priceChart(r.chart);
  if (!svg) return null;
  const dates = r.chart.dates;
  return [
    h("h3", {}, `Price, ${dates[0]} to ${dates[dates.length - 1]}`),
    h("div", { class: "legend" },
      h("span", {}, h("i", { style: "background:var(--accent)" }), "Close"),
      h("span", {}, h("i", { style: "background:#f59e0b" }), "20-day average"),
      h("span", {}, h("i", { style: "background:#a855f7" }), "50-day average")),
    svg,
  ];
}

function tradeBlock(t) {
  return [
    h("h3", {}, "Trader's proposal"),
    h("dl", { class: "trade" },
      h("div", {}, h("dt", {}, "Action"), h("dd", {}, t.action)),
      h("div", {}, h("dt", {}, "Entry"), h("dd", {}, num(t.entry))),
      h("div", {}, h("dt", {}, "Stop"), h("dd", {}, num(t.stop))),
      h("div", {}, h("dt", {}, "Target"), h("dd", {}, num(t.target))),
      h("div", {}, h("dt", {}, "Position"), h("dd", {}, `${num(t.positionPct, 1)}% of portfolio`))),
    formatted(t.rationale),
  ];
}

function debateBlock(d) {
  return h("details", { class: "report", id: "debate" },
    h("summary", {}, h("strong", {}, "Bull vs bear debate"), h("span", { class: "signal", "data-signal": d.lean }, d.lean), h("span", { class: "muted" }, d.summary)),
    h("div", { class: "body" }, (d.turns || []).map((t) => h("p", {}, h("strong", {}, `${t.side === "bull" ? "Bull" : "Bear"} (round ${t.round}): `), t.argument))));
}

function pastCall(c) {
  const outcome = c.realisedReturn == null ? "no later close yet"
    : `${c.realisedReturn >= 0 ? "+" : ""}${(c.realisedReturn * 100).toFixed(1)}% ${c.horizonEnded ? "over its horizon" : "so far"} ${c.hit ? "✓" : "✗"}`;
  return h("li", {}, `${c.decision} on ${c.date} at ${num(c.price)}: ${outcome}${c.demo ? " (demo data)" : ""}`);
}

function riskBlock(d) {
  return h("details", { class: "report", id: "risk-debate" },
    h("summary", {}, h("strong", {}, "Risk debate"), h("span", { class: "signal", "data-signal": "neutral" }, d.prevailing), h("span", { class: "muted" }, d.summary)),
    h("div", { class: "body" }, (d.turns || []).map((t) => h("p", {}, h("strong", {}, `${t.stance[0].toUpperCase()}${t.stance.slice(1)} (round ${t.round}): `), unlabelled(t.argument, t.stance)))));
}

function reportBlock(rep) {
  return h("details", { class: "report", "data-analyst": rep.analyst },
    h("summary", {}, h("strong", {}, rep.title), h("span", { class: "signal", "data-signal": rep.signal }, rep.signal),
      h("span", { class: "muted" }, rep.summary)),
    h("div", { class: "body" }, formatted(rep.summary && rep.report?.startsWith(rep.summary) ? rep.report.slice(rep.summary.length) : rep.report),
      rep.toolCalls?.length ? h("p", { class: "muted tools" }, `Tools called: ${rep.toolCalls.map((t) => t.name).join(", ")}`) : null,
      rep.unsourced?.length ? h("p", { class: "muted unsourced" }, `Numbers no tool returned: ${rep.unsourced.join(", ")}`) : null));
}

function num(v, digits = 2) {
  return typeof v === "number" ? v.toFixed(digits) : "—";
}

/** Plain text with blank-line paragraphs, "- " bullets, "#" headings and **bold**, safely. */
export function formatted(text) {
  const blocks = String(text || "").split(/\n\s*\n/);
  return h("div", { class: "prose" }, blocks.map((block) => {
    const lines = block.split("\n").filter((l) => l.trim());
    if (lines.length && lines.every((l) => /^\s*[-*•] /.test(l))) {
      return h("ul", {}, lines.map((l) => h("li", {}, inline(l.replace(/^\s*[-*•] /, "")))));
    }
    if (lines.length === 1 && /^#+ /.test(lines[0])) return h("h4", {}, lines[0].replace(/^#+ /, ""));
    return h("p", {}, inline(lines.join(" ")));
  }));
}

function inline(text) {
  return text.split(/(\*\*[^*]+\*\*)/).map((part) => (part.startsWith("**") && part.endsWith("**") ? h("strong", {}, part.slice(2, -2)) : part));
}

// --- history and the active strip ---

export function historyItem(run, onOpen, pick = null) {
  const decision = run.result?.decision;
  const box = pick && h("input", { type: "checkbox", class: "pick", "aria-label": `Compare ${run.symbol} ${shortId(run.runId)}`,
    checked: pick.picked.has(run.runId), onclick: (e) => e.stopPropagation(), onchange: (e) => pick.onPick(run, e.target.checked) });
  const row = h("li", { "data-run-id": run.runId, "data-status": run.status, tabindex: "0", onclick: () => onOpen(run),
    onkeydown: (e) => { if (e.key === "Enter" && e.target === e.currentTarget) onOpen(run); } },
    box || h("span", {}),
    h("span", { class: "sym" }, run.symbol),
    h("span", { class: "mini-badge", "data-decision": decision || "" }, decision || (isTerminal(run) ? "—" : `${Math.round(run.progress || 0)}%`)),
    h("a", { class: "when", href: runHash(run.runId), onclick: (e) => e.preventDefault() }, when(run.createdAt || run.requestedAt),
      run.durationS ? ` · ${seconds(run.durationS)}` : "", h("span", { class: "run-tag" }, ` · ${shortId(run.runId)}`)),
    h("span", { class: "status-pill", "data-status": run.status }, STATUS_WORDS[run.status] || run.status),
    rowNotes(run));
  row.run = run; // what the row was drawn from: a live update keeps the list's outcome
  return row;
}

/** The line under a history row: outcome, demo data, spend — each only when the run has it. */
function rowNotes(run) {
  const outcome = outcomeNote(run);
  const demo = demoNote(run);
  const spend = spendNote(run);
  if (!outcome && !demo && !spend) return null;
  return h("span", { class: "notes" },
    outcome && h("span", { class: "outcome", "data-correct": String(outcome.correct), title: outcome.title }, outcome.text),
    demo && h("span", { class: "demo-tag", title: demo.title }, demo.text),
    spend && h("span", { class: "spend", title: spend.title }, spend.text));
}

export function historyUnavailable() {
  return h("li", { class: "empty", "data-state": "retrying", role: "status" }, "History is briefly unavailable — retrying…");
}

export function activeChip(run, current, onOpen) {
  const pct = Math.round(Number(run.progress) || 0);
  return h("li", {}, h("button", { type: "button", class: "chip", "data-run-id": run.runId, "aria-current": current ? "true" : "false", onclick: () => onOpen(run) },
    h("strong", {}, run.symbol), h("span", { class: "run-tag" }, shortId(run.runId)),
    h("span", { class: "mini" }, h("i", { style: `width:${pct}%` })), h("span", { class: "pct" }, `${pct}%`)));
}

/** The end of a run id: sortable ids share their start, so two runs of one ticker differ here. */
export function shortId(runId) {
  return String(runId || "").slice(-6);
}

const CONNECTION_WORDS = {
  idle: "", connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…",
  polling: "Live updates unavailable — checking every 2 s", offline: "Server unreachable — retrying", ended: "Run finished",
};

export function setConnection(mode) {
  const node = $("#connection");
  node.dataset.mode = mode;
  node.hidden = mode === "idle"; // nothing is followed: no state worth a label
  node.querySelector(".label").textContent = CONNECTION_WORDS[mode] || mode;
}
