// Small pure helpers of the page: run URLs, numbers that never go backwards, messages beside controls.
import { compareIds } from "./tickertape-client.js";

const RUN_HASH = /^#\/runs\/([A-Za-z0-9_-]{1,64})\/?$/;

/** The address of one run: `#/runs/<id>` (opens it, live while it runs, from anywhere). */
export const runHash = (runId) => `#/runs/${encodeURIComponent(runId)}`;

export function runIdFromHash(hash) {
  const match = RUN_HASH.exec(hash || "");
  return match ? decodeURIComponent(match[1]) : null;
}

/**
 * The state to show after `next` arrives when `previous` was shown for the same run. A state from
 * an older stream position (a lagging read model, a late poll) never replaces a newer one, and the
 * percentage never drops: a cancel or a retry turns the running step back to "not done", which the
 * reducer counts as less progress, but the work done so far is still done.
 */
export function steady(previous, next) {
  if (!previous || !next || previous.runId !== next.runId) return next;
  if (previous.lastEventId && next.lastEventId && compareIds(next.lastEventId, previous.lastEventId) < 0) return previous;
  const was = Number(previous.progress) || 0;
  return (Number(next.progress) || 0) < was ? { ...next, progress: was } : next;
}

/**
 * A message in the element right beside the control that caused it (`role=alert`/`status`, so
 * screen readers announce it); `null` clears it. `tone` is "error" or "info".
 */
export function sayNear(selector, text, tone = "error") {
  const box = document.querySelector(selector);
  if (!box) return;
  box.hidden = !text;
  box.dataset.tone = tone;
  box.textContent = text || "";
  if (text && tone === "error") box.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

/**
 * What to say when a submit was accepted: a server answers an identical request whose run is still
 * going with that run (`joined: true`); the page opens it and says so on the run card.
 */
export function acceptedNote(accepted) {
  if (accepted?.joined) return "Already running — showing that run (the same analysis was under way, so no second one was started).";
  return null;
}

/** "$0.0123" or "$0.016" for small spends (fractions of a cent count), "$0.50" and "$1.20" otherwise. */
export function dollars(value) {
  const v = Number(value) || 0;
  return v > 0 && v < 1 ? `$${v.toFixed(4).replace(/0{1,2}$/, "")}` : `$${v.toFixed(2)}`;
}

/** "3 LLM calls · 1,234 tokens · $0.0123 of $0.50 budget", or "" when nothing was spent or set. */
export function usageText(state) {
  const u = state?.usage || {};
  const tokens = (Number(u.promptTokens) || 0) + (Number(u.completionTokens) || 0);
  const budget = state?.options?.maxCostUsd;
  const tokenCap = state?.options?.maxTokens;
  const parts = [];
  if (u.calls) parts.push(`${u.calls} LLM call${u.calls === 1 ? "" : "s"}`);
  if (tokens || tokenCap) parts.push(`${tokens.toLocaleString("en-US")} tokens${tokenCap ? ` of ${Number(tokenCap).toLocaleString("en-US")}` : ""}`);
  if (u.calls || budget) parts.push(`${dollars(u.costUsd)}${budget ? ` of ${dollars(budget)} budget` : ""}`);
  return parts.length ? parts.join(" · ") : "No LLM calls (offline model): no cost";
}
