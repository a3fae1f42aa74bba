// What a run says beside its decision (history rows, the run card, the start page): how the call
// turned out, whether the data was a demo, what the run spent. Each part is left out when absent.
import { dollars } from "./page-state.js";

const NO_MARKET = "no real market";

/** The server's default data source (`GET /api/trading/data`), for runs that do not name theirs. */
export const catalogue = { source: null };

/** Ask where prices come from; the start page says so when they are demo (synthetic) prices. An
 * older server without the endpoint leaves the note hidden (each finished run carries its own). */
export async function loadDataSource(client) {
  try {
    catalogue.source = await client.dataSource();
  } catch {
    catalogue.source = null;
  }
  document.querySelector("#data-note").hidden = catalogue.source?.demo !== true;
}

/** "+3.2 %" for a fraction 0.032. */
export function signedPercent(fraction) {
  const v = Number(fraction) * 100;
  return `${v >= 0 ? "+" : "-"}${Math.abs(v).toFixed(1)} %`;
}

/** Whether a run used demo (synthetic) prices, as far as it says: true, false or null (unknown). */
export function isDemo(run, defaultSource = catalogue.source) {
  if (typeof run?.result?.demo === "boolean") return run.result.demo;
  if (typeof run?.outcome?.demo === "boolean") return run.outcome.demo;
  if (typeof run?.demo === "boolean") return run.demo;
  const provider = run?.options?.dataProvider || run?.dataProvider;
  if (provider) return provider === "synthetic";
  return defaultSource ? Boolean(defaultSource.demo) : null;
}

/** ✓/✗ and the realised return of a completed run whose horizon has passed, with what it means. */
export function outcomeNote(run) {
  const o = run?.outcome;
  if (run?.status !== "completed" || !o || typeof o.realisedReturn !== "number") return null;
  const mark = o.correct === true ? "✓" : o.correct === false ? "✗" : "";
  const early = o.horizonEnded === false; // the return so far: the horizon has not passed yet
  const horizon = o.horizonDays ? `its ${o.horizonDays}-day horizon` : "its horizon";
  const verdict = o.correct == null ? "too early to say whether the call was right"
    : `the call ${early ? "is going" : "went"} ${o.correct ? "its way" : "against it"}`;
  const over = early ? `so far (${horizon} has not ended)` : `over ${horizon}`;
  const title = `Realised return since the decision ${over}: ${signedPercent(o.realisedReturn)}; ${verdict}${o.demo ? " (on demo data)" : ""}.`;
  return { text: `${mark ? `${mark} ` : ""}${signedPercent(o.realisedReturn)}${early ? " so far" : ""}`, title, correct: o.correct };
}

/** "Demo data" (or "Demo data · no real market"), with the run's own note as the tooltip. */
export function demoNote(run, defaultSource = catalogue.source) {
  if (isDemo(run, defaultSource) !== true) return null;
  const note = run?.result?.dataNote || "Demo data: synthetic prices generated for illustration, not real market data.";
  return { text: note.includes(NO_MARKET) ? "Demo data · no real market" : "Demo data", title: note };
}

/** "3 calls · 1,234 tokens · $0.0123" when the run called a model; null for the offline model. */
export function spendNote(run) {
  const u = run?.usage;
  if (!u?.calls) return null;
  const tokens = (Number(u.promptTokens) || 0) + (Number(u.completionTokens) || 0);
  const budget = run?.options?.maxCostUsd;
  return {
    text: `${u.calls} call${u.calls === 1 ? "" : "s"} · ${tokens.toLocaleString("en-US")} tokens · ${dollars(u.costUsd)}${budget ? ` of ${dollars(budget)}` : ""}`,
    title: `LLM calls, tokens (prompt + completion) and estimated cost of this run${budget ? ", against its budget" : ""}.`,
  };
}
