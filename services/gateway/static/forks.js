// Forks: the Fork form of a finished run, the line naming a fork's parent, and the fork family as a tree.
import { isTerminal } from "./tickertape-client.js";
import { $, h, shortId } from "./views.js";
import { runHash, sayNear } from "./page-state.js";
import { diffHash } from "./diff.js";

const STATUS_WORDS = { pending: "queued", running: "running", completed: "completed", failed: "failed", timeout: "timed out", cancelled: "cancelled" };
const MAX_DEPTH = 10; // ancestors followed up to the root; a longer chain is shown from there
const PAGES = 6; // the family is found among the ticker's runs made since its root (50 a page)

const family = { key: null };

/** Keep the Fork button and the family tree in step with the run on the card. */
export function syncForks(client, state) {
  $("#fork-open").hidden = !isTerminal(state);
  if ($("#fork-panel").dataset.runId !== state.runId) closeFork();
  const key = `${state.runId}:${isTerminal(state)}`; // again when it ends: its node's decision
  if (family.key === key) return touchNode(state);
  family.key = key;
  loadFamily(client, state, key);
}

/** The run on the card moves between loads of its family: its own node follows it. */
function touchNode(state) {
  const pill = document.querySelector(`#fork-tree li[data-run-id="${CSS.escape(state.runId)}"] > .fork-node .status-pill`);
  if (!pill || pill.dataset.status === state.status) return;
  pill.dataset.status = state.status;
  pill.textContent = STATUS_WORDS[state.status] || state.status;
}

async function loadFamily(client, state, key) {
  try {
    const root = await rootOf(client, state);
    const runs = await symbolRuns(client, state.symbol, root.createdAt);
    if (family.key !== key) return;
    renderFamily(state, root, runs);
  } catch (err) {
    console.warn("loading the fork family", err);
    if (family.key === key) renderFamily(state, state, []);
  }
}

async function rootOf(client, state) {
  let node = state;
  for (let depth = 0; node.parentRunId && depth < MAX_DEPTH; depth += 1) {
    try {
      node = await client.get(node.parentRunId);
    } catch {
      break; // the parent expired or is away: the tree starts at the oldest run still known
    }
  }
  return node;
}

/** The ticker's runs, newest first, back to `since`: a fork is always younger than its root. */
async function symbolRuns(client, symbol, since) {
  const runs = [];
  let cursor;
  for (let page = 0; page < PAGES; page += 1) {
    const found = await client.list({ symbol, limit: 50, cursor });
    runs.push(...found.runs);
    cursor = found.nextCursor;
    const oldest = found.runs[found.runs.length - 1]?.createdAt;
    if (!cursor || (since && oldest && oldest <= since)) break;
  }
  return runs;
}

/** The runs under `root`, oldest fork first: `[{run, children}]`. */
export function forkTree(root, runs) {
  const byParent = new Map();
  for (const run of runs) {
    if (!run.parentRunId) continue;
    if (!byParent.has(run.parentRunId)) byParent.set(run.parentRunId, []);
    byParent.get(run.parentRunId).push(run);
  }
  const grow = (run, seen) => ({
    run,
    children: (byParent.get(run.runId) || []).filter((c) => !seen.has(c.runId))
      .sort((a, b) => String(a.createdAt).localeCompare(String(b.createdAt)))
      .map((c) => grow(c, new Set([...seen, c.runId]))),
  });
  return grow(root, new Set([root.runId]));
}

function stepLabel(run, name) {
  return (run.steps || []).find((s) => s.name === name)?.label || name;
}

function renderFamily(state, root, runs) {
  const box = $("#fork-family");
  const newest = new Map(runs.map((r) => [r.runId, r]));
  newest.set(state.runId, state);
  const tree = forkTree(newest.get(root.runId) || root, [...newest.values()]);
  const lineage = state.parentRunId ? h("p", { class: "fork-parent", id: "fork-parent" }, "Forked from ",
    h("a", { href: runHash(state.parentRunId) }, shortId(state.parentRunId)), ` at ${stepLabel(state, state.fromStep)} · `,
    h("a", { href: diffHash([state.parentRunId, state.runId]), id: "diff-parent" }, "compare with parent")) : null;
  if (!lineage && !tree.children.length) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  box.hidden = false;
  box.replaceChildren(lineage || "", tree.children.length || tree.run.runId !== state.runId
    ? h("details", { class: "fork-tree-box", open: true }, h("summary", {}, "Fork family"),
      h("ul", { class: "fork-tree", id: "fork-tree" }, node(tree, state.runId)))
    : "");
}

/** What a fork changed against its parent, in a few words: "debate rounds 2 · +news". */
export function changes(parent, run) {
  if (!parent) return "";
  const out = [];
  if (run.modelId !== parent.modelId) out.push(run.modelId);
  const had = new Set(parent.analysts || []);
  const has = new Set(run.analysts || []);
  out.push(...[...has].filter((a) => !had.has(a)).map((a) => `+${a}`), ...[...had].filter((a) => !has.has(a)).map((a) => `−${a}`));
  const [p, o] = [parent.options || {}, run.options || {}];
  if (o.debateRounds !== p.debateRounds) out.push(`debate rounds ${o.debateRounds}`);
  if (o.riskRounds !== p.riskRounds) out.push(`risk rounds ${o.riskRounds}`);
  if (o.maxCostUsd !== p.maxCostUsd && o.maxCostUsd) out.push(`budget $${o.maxCostUsd}`);
  return out.join(" · ");
}

function node({ run, children }, current, parent = null) {
  const decision = run.result?.decision;
  return h("li", { "data-run-id": run.runId },
    h("div", { class: "fork-node" },
      h("a", { href: runHash(run.runId), "aria-current": run.runId === current ? "true" : null },
        h("span", { class: "run-tag" }, shortId(run.runId)),
        h("span", { class: "mini-badge", "data-decision": decision || "" }, decision || "—"),
        h("span", { class: "status-pill", "data-status": run.status }, STATUS_WORDS[run.status] || run.status)),
      run.parentRunId ? h("small", { class: "muted" }, `from ${stepLabel(run, run.fromStep)}`,
        changes(parent, run) ? `, ${changes(parent, run)}` : "", " · ",
        h("a", { href: diffHash([run.parentRunId, run.runId]) }, "diff")) : h("small", { class: "muted" }, "original")),
    children.length ? h("ul", {}, children.map((c) => node(c, current, run))) : null);
}

// --- the Fork form ---

export function closeFork() {
  const box = $("#fork-panel");
  box.hidden = true;
  delete box.dataset.runId;
  box.replaceChildren();
  $("#fork-open")?.setAttribute("aria-expanded", "false");
}

/** Open (or close) the Fork form of the finished run `state`; `go(runId, note)` opens the fork. */
export function toggleFork(client, state, go) {
  const box = $("#fork-panel");
  if (!box.hidden && box.dataset.runId === state.runId) return closeFork();
  box.dataset.runId = state.runId;
  box.hidden = false;
  $("#fork-open").setAttribute("aria-expanded", "true");
  const o = state.options || {};
  const form = h("form", { id: "fork-form", class: "fork-form", novalidate: true },
    h("h3", {}, "Fork this run"),
    h("p", { class: "muted" }, "Re-run from a step with other options; the steps before it are reused, not paid for again."),
    h("label", { class: "field" }, h("span", {}, "Recompute from step"),
      h("select", { name: "fromStep", id: "fork-step" }, (state.steps || []).map((s) => h("option", { value: s.name }, s.label || s.name)))),
    h("label", { class: "field" }, h("span", {}, "Model"), modelSelect(state.modelId)),
    h("fieldset", { class: "field" }, h("legend", {}, "Analysts"), h("div", { class: "fork-analysts" }, analystBoxes(state.analysts || []))),
    h("div", { class: "fork-numbers" },
      numberField("Debate rounds", "debateRounds", o.debateRounds ?? 1, 0),
      numberField("Risk rounds", "riskRounds", o.riskRounds ?? 1, 1),
      numberField("Budget (USD)", "maxCostUsd", o.maxCostUsd ?? "", 0.01)),
    h("p", { class: "form-status", id: "fork-status", role: "status", hidden: true }),
    h("div", { class: "fork-buttons" },
      h("button", { type: "submit", class: "small primary-small", id: "fork-submit" }, "Start fork"),
      h("button", { type: "button", class: "link", onclick: closeFork }, "Close")));
  form.addEventListener("submit", (e) => { e.preventDefault(); startFork(client, state, form, go); });
  box.replaceChildren(form);
  form.querySelector("#fork-step").focus();
}

function modelSelect(current) {
  const options = [...document.querySelectorAll("#model option")].map((o) => {
    const copy = o.cloneNode(true);
    copy.selected = o.value === current;
    return copy;
  });
  if (!options.some((o) => o.value === current)) options.unshift(h("option", { value: current, selected: true }, current));
  return h("select", { name: "modelId", id: "fork-model" }, options);
}

function analystBoxes(chosen) {
  return [...document.querySelectorAll("#analysts input")].map((input) => h("label", { class: "fork-analyst" },
    h("input", { type: "checkbox", name: "analysts", value: input.value, checked: chosen.includes(input.value) }),
    input.closest("label")?.querySelector("strong")?.textContent || input.value));
}

function numberField(label, name, value, min) {
  return h("label", { class: "field" }, h("span", {}, label),
    h("input", { type: "number", name, value: String(value), min: String(min), max: name === "maxCostUsd" ? null : "5",
      step: name === "maxCostUsd" ? "0.01" : "1", placeholder: name === "maxCostUsd" ? "no limit" : null }));
}

/** Only what differs from the source goes in the body: the rest is the source's. */
export function forkBody(state, values) {
  const body = { fromStep: values.fromStep };
  const o = state.options || {};
  if (values.modelId && values.modelId !== state.modelId) body.modelId = values.modelId;
  const same = values.analysts.length === (state.analysts || []).length && values.analysts.every((a) => state.analysts.includes(a));
  if (!same) body.analysts = values.analysts;
  for (const name of ["debateRounds", "riskRounds", "maxCostUsd"]) {
    if (values[name] !== "" && Number(values[name]) !== o[name]) body[name] = Number(values[name]);
  }
  return body;
}

async function startFork(client, state, form, go) {
  const data = new FormData(form);
  const analysts = data.getAll("analysts");
  if (!analysts.length) return sayNear("#fork-status", "Pick at least one analyst.");
  const values = Object.fromEntries(["fromStep", "modelId", "debateRounds", "riskRounds", "maxCostUsd"].map((k) => [k, String(data.get(k) ?? "")]));
  const button = form.querySelector("#fork-submit");
  button.disabled = true;
  try {
    const made = await client.request("POST", `/runs/${encodeURIComponent(state.runId)}/fork`, { body: forkBody(state, { ...values, analysts }) });
    closeFork();
    const reused = made.reusedSteps?.length || 0;
    go(made.runId, `Forked from ${shortId(state.runId)} at ${stepLabel(state, values.fromStep)}: ${reused} step${reused === 1 ? "" : "s"} reused.`);
  } catch (err) {
    sayNear("#fork-status", err?.friendly || "Could not start the fork. Try again.");
    button.disabled = false;
  }
}
