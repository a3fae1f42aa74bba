// The Tickertape page: wires the form, the live run view, history and the active strip to the client.
import { TickertapeClient, isTerminal } from "./tickertape-client.js";
import { $, h, renderRun, renderEta, renderResult, historyItem, historyUnavailable, activeChip, setConnection } from "./views.js";
import { runHash, runIdFromHash, steady, sayNear, acceptedNote } from "./page-state.js";
import { ensureSignedIn } from "./signin.js";
import { copyLink, exportAs } from "./run-actions.js";
import { compareHash, compareIdsFromHash, renderCompare } from "./compare.js";
import { loadDataSource } from "./notes.js";
import { bindOlder, closeOlder } from "./archive.js";
import { sharedToken, startShared, toggleShare, closeShare } from "./share.js";
import { syncForks, toggleFork } from "./forks.js";
import { diffIdsFromHash, openDiff, offerDiff } from "./diff.js";
import { SYMBOL, renderModels, renderAnalysts, tickerInput, readForm } from "./form.js";

const LAST_TICKER = "tickertape.lastTicker";
const client = new TickertapeClient();
const page = {
  ticker: null, runId: null, attachment: null, state: null, key: newKey(),
  scope: "ticker", cursor: null, active: [],
  live: new Map(), // runId → the newest state any attachment of this page has folded
  picked: new Set(), // runIds ticked in history for comparing
};
window.tickertape = { client, page }; // for debugging and the browser tests

function newKey() {
  return globalThis.crypto?.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

// --- notices ---

function notify(text, tone = "error") {
  const box = $("#notice");
  box.dataset.tone = tone;
  box.querySelector(".notice-text").textContent = text;
  box.hidden = false;
}

function clearNotice() {
  $("#notice").hidden = true;
}

function explain(err, doing) {
  console.warn(doing, err);
  notify(err?.friendly || `Something went wrong while ${doing}. Try again.`);
}

// --- the form ---

async function loadCatalogue() {
  loadDataSource(client);
  try {
    const [models, analysts] = await Promise.all([client.models(), client.analysts()]);
    renderModels(Array.isArray(models) ? models : models.models || []);
    renderAnalysts(Array.isArray(analysts) ? analysts : analysts.analysts || []);
  } catch (err) {
    explain(err, "loading the list of models and analysts");
    renderModels([{ id: "offline", name: "Offline (no LLM calls)" }]);
  }
}


async function submit(event) {
  event.preventDefault();
  const body = readForm();
  if (!body) {
    sayNear("#form-status", "Please enter a valid ticker and choose at least one analyst.");
    return;
  }
  sayNear("#form-status", null);
  const button = $("#submit");
  button.disabled = true;
  button.textContent = "Starting…";
  try {
    const accepted = await client.submit(body, { idempotencyKey: page.key });
    page.key = newKey();
    clearNotice();
    if (body.symbol !== page.ticker) await selectTicker(body.symbol, { skipActive: true, url: false });
    history.pushState(null, "", runHash(accepted.runId));
    await openRun(accepted.runId, null);
    sayNear("#run-notice", acceptedNote(accepted), "info"); // joined: on the run card, where the view goes
    $("#run").scrollIntoView({ behavior: "smooth", block: "start" });
    refreshActive();
    loadHistory();
  } catch (err) {
    console.warn("starting the analysis", err);
    sayNear("#form-status", err?.friendly || "Something went wrong while starting the analysis. Try again.");
    if (err.field) document.querySelector(`[name="${String(err.field).split(".").pop()}"]`)?.focus();
  } finally {
    button.disabled = false;
    button.textContent = "Start analysis";
  }
}

// --- one run ---

function detach() {
  page.attachment?.close();
  page.attachment = null;
  page.runId = null;
  page.state = null;
  setConnection("idle");
}

function show(state) {
  const shown = steady(page.live.get(state.runId), state);
  page.live.set(state.runId, shown);
  overlayHistory(shown);
  if (state.runId !== page.runId) return;
  page.state = shown;
  renderRun(shown);
  syncForks(client, shown);
}

/** Show a run and, while it is active, follow it live from `lastEventId`. */
async function openRun(runId, lastEventId, known = null) {
  if (runId !== page.runId) { sayNear("#run-notice", null); closeShare(); }
  detach();
  page.runId = runId;
  let state = known;
  try {
    state = known || (await client.get(runId));
  } catch (err) {
    explain(err, "opening the run");
    return;
  }
  if (page.runId !== runId) return; // another run was opened meanwhile
  show(state);
  renderResult(isTerminal(state) ? state : null);
  if (isTerminal(state)) {
    setConnection("ended");
    return;
  }
  page.attachment = client.attach(runId, {
    onState: show,
    onConnection: (mode) => { if (page.runId === runId) setConnection(mode); },
    onEnd: (final) => {
      if (page.runId !== runId) return;
      show(final);
      renderResult(final);
      loadHistory();
      refreshActive();
    },
  }, { lastEventId, ticker: state.symbol });
}

function askCancel() {
  const dialog = $("#confirm-cancel");
  dialog.returnValue = "";
  dialog.showModal();
}

async function confirmedCancel() {
  if ($("#confirm-cancel").returnValue !== "cancel" || !page.runId) return;
  sayNear("#run-notice", null);
  try {
    await client.cancel(page.runId);
    if (page.state && !isTerminal(page.state)) $("#message").textContent = "Cancelling…";
  } catch (err) {
    console.warn("cancelling the run", err);
    sayNear("#run-notice", err?.friendly || "Something went wrong while cancelling the run. Try again.");
  }
}

// --- tickers ---

/** Switch to a ticker: re-attach to its active run (from where this browser left it), show its history. */
async function selectTicker(ticker, { skipActive = false, url = true } = {}) {
  page.ticker = ticker;
  localStorage.setItem(LAST_TICKER, ticker);
  if (url && location.hash !== `#${ticker}`) history.replaceState(null, "", `#${ticker}`);
  const input = $("#ticker");
  if (document.activeElement !== input) input.value = ticker;
  $("#history-ticker").textContent = ticker;
  detach();
  $("#run").hidden = true;
  renderResult(null);
  closeOlder();
  loadHistory();
  renderStrip();
  if (skipActive) return;
  try {
    const active = await client.findActive(ticker);
    if (active && page.ticker === ticker && !page.runId) await openRun(active.runId, active.lastEventId, active.state);
  } catch (err) {
    if (err?.status === 503) return; // the history panel says the read model is away and retries
    explain(err, "looking for a running analysis");
  }
}

function navigate(ticker) {
  if (!ticker || ticker === page.ticker) return;
  history.pushState(null, "", `#${ticker}`);
  selectTicker(ticker);
}

/** `#/runs/<id>`: that run, live if it is running; its ticker's history beside it. */
async function openRunFromUrl(runId) {
  if (runId === page.runId) return;
  let state;
  try {
    state = await client.get(runId);
  } catch (err) {
    explain(err, "opening the run");
    return;
  }
  if (state.symbol && state.symbol !== page.ticker) await selectTicker(state.symbol, { skipActive: true, url: false });
  await openRun(runId, isTerminal(state) ? null : client.recall(state.symbol)?.lastEventId ?? null, state);
}

function tickerFromHash() {
  const value = decodeURIComponent(location.hash.replace(/^#\/?/, "")).trim().toUpperCase();
  return SYMBOL.test(value) ? value : null;
}

// --- history ---

// History comes from the read model, which can be away for a while (every projector restarting)
// while runs themselves keep working: a 503 is waited out, retried with backoff from Retry-After.
const HISTORY_RETRY_MAX_MS = 30000;
const historyRetry = { timer: null, delayMs: 0 };

async function loadHistory(more = false) {
  const list = $("#history");
  const symbol = page.scope === "ticker" ? page.ticker : undefined;
  if (!more) clearTimeout(historyRetry.timer);
  try {
    const { runs, nextCursor } = await client.list({ symbol, limit: 10, cursor: more ? page.cursor : undefined });
    historyRetry.delayMs = 0;
    page.cursor = nextCursor;
    const items = runs.map((run) => historyItem(steady(page.live.get(run.runId), run), openFromHistory, picker));
    if (more) list.append(...items);
    else list.replaceChildren(...(items.length ? items : [h("li", { class: "empty" }, symbol ? `No analyses of ${symbol} yet.` : "No analyses yet.")]));
    $("#history-more").hidden = !nextCursor;
  } catch (err) {
    if (more) return;
    if (err?.status !== 503) {
      list.replaceChildren(h("li", { class: "empty" }, err?.friendly || "History is unavailable right now."));
      return;
    }
    list.replaceChildren(historyUnavailable());
    $("#history-more").hidden = true;
    const floor = Math.max(Number(err.retryAfter) || 1, 1) * 1000;
    historyRetry.delayMs = Math.min(Math.max(historyRetry.delayMs * 2, floor), HISTORY_RETRY_MAX_MS);
    historyRetry.timer = setTimeout(() => loadHistory(), historyRetry.delayMs * (0.8 + Math.random() * 0.4));
  }
}

/** A history row shows the same numbers as the run view: the newest state this page has seen. */
function overlayHistory(state) {
  const row = document.querySelector(`#history li[data-run-id="${CSS.escape(state.runId)}"]`);
  // the list's outcome stays: a run's own state (GET, SSE) need not carry it
  if (row) row.replaceWith(historyItem({ outcome: row.run?.outcome, ...state }, openFromHistory, picker));
  if (page.active.some((r) => r.runId === state.runId)) renderStrip();
}

// --- compare ---

const picker = {
  picked: page.picked,
  onPick(run, on) {
    if (on) page.picked.add(run.runId);
    else page.picked.delete(run.runId);
    const button = $("#compare-picked");
    button.hidden = page.picked.size < 2;
    button.textContent = `Compare ${page.picked.size} runs`;
  },
};

async function openCompare(runIds) {
  try {
    const runs = await Promise.all(runIds.map((id) => client.get(id)));
    renderCompare(runs, closeCompare);
    offerDiff(runIds);
    $("#compare").scrollIntoView({ behavior: "smooth", block: "start" });
  } catch (err) {
    explain(err, "comparing the runs");
  }
}

function closeCompare() {
  renderCompare(null);
  if (compareIdsFromHash(location.hash) || diffIdsFromHash(location.hash)) history.pushState(null, "", page.runId ? runHash(page.runId) : `#${page.ticker}`);
}

async function showDiff(runIds) {
  try {
    await openDiff(client, runIds, closeCompare);
  } catch (err) {
    explain(err, "comparing the runs");
  }
}

/** A fork was started: open it, live, and say what it reused. */
async function openForked(runId, note) {
  history.pushState(null, "", runHash(runId));
  await openRun(runId, null);
  sayNear("#run-notice", note, "info");
  $("#run").scrollIntoView({ behavior: "smooth", block: "start" });
  refreshActive();
  loadHistory();
}

function comparePicked() {
  const ids = [...page.picked];
  history.pushState(null, "", compareHash(ids));
  openCompare(ids);
}

function openFromHistory(run) {
  if (run.symbol !== page.ticker) {
    page.ticker = run.symbol;
    localStorage.setItem(LAST_TICKER, run.symbol);
    $("#ticker").value = run.symbol;
    $("#history-ticker").textContent = run.symbol;
  }
  if (location.hash !== runHash(run.runId)) history.pushState(null, "", runHash(run.runId));
  openRun(run.runId, isTerminal(run) ? null : client.recall(run.symbol)?.lastEventId ?? null, isTerminal(run) ? run : null);
  $("#run").scrollIntoView({ behavior: "smooth", block: "start" });
}

function setScope(scope) {
  page.scope = scope;
  closeOlder();
  $("#history-ticker").setAttribute("aria-selected", String(scope === "ticker"));
  $("#history-all").setAttribute("aria-selected", String(scope === "all"));
  loadHistory();
}

// --- the active strip ---

async function refreshActive() {
  try {
    const { runs } = await client.list({ status: "active", limit: 20 });
    page.active = runs.map((r) => steady(page.live.get(r.runId), r));
    renderStrip();
  } catch {
    /* the connection indicator and notices already say the server is unreachable */
  }
}

function renderStrip() {
  const runs = page.active.map((r) => page.live.get(r.runId) || r).filter((r) => !isTerminal(r));
  $("#active-strip").hidden = runs.length === 0;
  $("#active-list").replaceChildren(...runs.map((run) => activeChip(run, run.runId === page.runId, (r) => {
    if (r.runId === page.runId) return;
    history.pushState(null, "", runHash(r.runId));
    openRunFromUrl(r.runId);
  })));
}

// --- start ---

function bind() {
  $("#run-form").addEventListener("submit", submit);
  $("#run-form").addEventListener("input", () => { page.key = newKey(); });
  $("#ticker").addEventListener("input", tickerInput);
  $("#ticker").addEventListener("change", () => navigate(tickerInput()));
  $("#cancel").addEventListener("click", askCancel);
  $("#copy-link").addEventListener("click", () => copyLink(page.runId));
  document.addEventListener("click", (e) => { if (!$("#export").contains(e.target)) $("#export").open = false; });
  for (const format of ["md", "json"]) {
    $(`#export-${format}`).addEventListener("click", () => { $("#export").open = false; exportAs(client, page.runId, format); });
  }
  $("#confirm-cancel").addEventListener("close", confirmedCancel);
  $("#history-ticker").addEventListener("click", () => setScope("ticker"));
  $("#history-all").addEventListener("click", () => setScope("all"));
  $("#history-more").addEventListener("click", () => loadHistory(true));
  bindOlder(client, () => (page.scope === "ticker" ? page.ticker : null), (run) => historyItem(run, openFromHistory));
  $("#compare-picked").addEventListener("click", comparePicked);
  $(".notice-close").addEventListener("click", clearNotice);
  $("#share-open").addEventListener("click", () => toggleShare(client, page.runId));
  $("#fork-open").addEventListener("click", () => page.state && toggleFork(client, page.state, openForked));
  const followUrl = () => {
    const compared = compareIdsFromHash(location.hash);
    if (compared) return openCompare(compared);
    const diffed = diffIdsFromHash(location.hash);
    if (diffed) return showDiff(diffed);
    renderCompare(null);
    const runId = runIdFromHash(location.hash);
    if (runId) return openRunFromUrl(runId);
    const ticker = tickerFromHash();
    if (ticker && (ticker !== page.ticker || page.runId)) selectTicker(ticker);
  };
  window.addEventListener("hashchange", followUrl);
  window.addEventListener("popstate", followUrl);
  setInterval(() => { if (page.state) { renderEta(page.state); renderStrip(); } }, 1000);
  setInterval(refreshActive, 3000);
  // The chart is drawn for the width it opened at (chart.js): redraw when a phone turns or a
  // window crosses the phone width, so its labels stay readable.
  matchMedia("(max-width: 599px)").addEventListener("change", () => {
    if (page.state && isTerminal(page.state) && !$("#result").hidden) renderResult(page.state);
  });
}

async function start() {
  bind();
  await ensureSignedIn(client);
  await loadCatalogue();
  const runId = runIdFromHash(location.hash);
  const compared = compareIdsFromHash(location.hash);
  const diffed = diffIdsFromHash(location.hash);
  if (compared) await openCompare(compared);
  if (diffed) await showDiff(diffed);
  if (runId) await openRunFromUrl(runId);
  else await selectTicker(tickerFromHash() || localStorage.getItem(LAST_TICKER) || "AAPL", { url: !compared && !diffed });
  refreshActive();
}

const shareToken = sharedToken(location.pathname);
if (shareToken) startShared(shareToken); // a share link's page: that run alone, no sign-in
else start();
