// Share links: the owner's panel on the run card (create, copy, revoke), and the page a link opens
// (`/shared/<runId>.<shareId>.<secret>`): that run alone, live, read-only, without signing in.
import { TickertapeClient, isTerminal } from "./tickertape-client.js";
import { $, h, renderRun, renderEta, renderResult, setConnection, when } from "./views.js";
import { sayNear } from "./page-state.js";

const SHARED_PATH = /^\/shared\/([A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{1,128})\/?$/;
const EXPIRIES = [["3600", "1 hour"], ["86400", "1 day"], ["604800", "7 days"], ["2592000", "30 days"], ["", "until revoked"]];

/** The token of a share link's page, or null on the app's own page. */
export function sharedToken(pathname) {
  const match = SHARED_PATH.exec(pathname || "");
  return match ? match[1] : null;
}

// --- the owner's side ---

/** Links that still open: not revoked, not expired. */
export function activeShares(state, now = Date.now()) {
  return (state?.shares || []).filter((s) => !s.revokedAt && (!s.expiresAt || new Date(s.expiresAt).getTime() > now));
}

const panel = { runId: null, made: null };

/** Show or hide the Share panel of the run on the card. */
export async function toggleShare(client, runId) {
  const box = $("#share-panel");
  if (!box.hidden && panel.runId === runId) return closeShare();
  panel.runId = runId;
  panel.made = null;
  box.hidden = false;
  $("#share-open").setAttribute("aria-expanded", "true");
  await refreshShares(client);
}

/** Close the panel (another run was opened, or the owner closed it). */
export function closeShare() {
  $("#share-panel").hidden = true;
  $("#share-panel").replaceChildren();
  $("#share-open")?.setAttribute("aria-expanded", "false");
  panel.runId = null;
  panel.made = null;
}

async function refreshShares(client) {
  const runId = panel.runId;
  let shares = [];
  try {
    shares = activeShares(await client.get(runId));
  } catch (err) {
    sayNear("#run-notice", err?.friendly || "Could not list this run's share links.");
  }
  if (panel.runId === runId) renderPanel(client, shares);
}

function renderPanel(client, shares) {
  const expiry = h("select", { id: "share-expiry", "aria-label": "Link expires after" },
    EXPIRIES.map(([value, label]) => h("option", { value, selected: value === "86400" }, label)));
  $("#share-panel").replaceChildren(...[
    h("h3", {}, "Share this run"),
    h("p", { class: "muted" }, "Anyone with the link sees this run live, read-only — nothing else of yours."),
    h("div", { class: "share-make" }, h("label", {}, "Expires after ", expiry),
      h("button", { type: "button", class: "small", id: "share-create", onclick: () => create(client, expiry.value) }, "Create link")),
    panel.made ? madeLink(panel.made) : null,
    h("h4", {}, shares.length ? `Active links (${shares.length})` : "No active links"),
    h("ul", { class: "share-list", id: "share-list" }, shares.map((s) => shareRow(client, s)))].filter(Boolean));
}

async function create(client, expiresInS) {
  const body = expiresInS ? { expiresInS: Number(expiresInS) } : {};
  try {
    const made = await client.request("POST", `/runs/${encodeURIComponent(panel.runId)}/shares`, { body });
    panel.made = { ...made, link: new URL(made.pageUrl, location.href).href };
    await refreshShares(client);
  } catch (err) {
    sayNear("#run-notice", err?.friendly || "Could not create a share link. Try again.");
  }
}

function madeLink(made) {
  const input = h("input", { id: "share-url", readonly: true, value: made.link, "aria-label": "Share link", onfocus: (e) => e.target.select() });
  const status = h("small", { class: "muted", id: "share-copied", role: "status" },
    made.expiresAt ? `Expires ${when(made.expiresAt)}.` : "Works until you revoke it.", " Shown once: copy it now.");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(made.link);
      status.textContent = "Copied.";
    } catch {
      input.select(); // no clipboard (plain http): selected, to copy by hand
      status.textContent = "Select and copy the link by hand.";
    }
  };
  return h("div", { class: "share-made" }, h("div", { class: "share-url" }, input,
    h("button", { type: "button", class: "small", id: "share-copy", onclick: copy }, "Copy")), status);
}

function shareRow(client, share) {
  const revoke = async () => {
    try {
      await client.request("DELETE", `/runs/${encodeURIComponent(panel.runId)}/shares/${encodeURIComponent(share.shareId)}`);
      if (panel.made?.shareId === share.shareId) panel.made = null;
      await refreshShares(client);
    } catch (err) {
      sayNear("#run-notice", err?.friendly || "Could not revoke the link. Try again.");
    }
  };
  return h("li", { "data-share-id": share.shareId },
    h("span", {}, h("strong", {}, `Link ${share.shareId.slice(-6)}`), h("small", { class: "muted" },
      ` made ${when(share.createdAt)} · ${share.expiresAt ? `expires ${when(share.expiresAt)}` : "no expiry"}`)),
    h("button", { type: "button", class: "danger small", onclick: revoke }, "Revoke"));
}

// --- the page a link opens ---

/** Reads one run through its share token: no sign-in, no localStorage, no other route. */
class SharedClient extends TickertapeClient {
  constructor(token) {
    super({ storage: null, sseFailuresBeforePolling: Infinity }); // no /progress for a share: SSE only
    this.token = null;
    this.shareToken = token;
  }

  get() { return this.request("GET", `/shared/${this.shareToken}`); }

  eventsUrl(_runId, lastEventId) {
    const after = lastEventId ? `?after=${encodeURIComponent(lastEventId)}` : "";
    return this.url(`/shared/${this.shareToken}/events${after}`);
  }
}

/** Turn the page into the read-only view of the run a share token names. */
export async function startShared(token) {
  document.body.dataset.shared = "true";
  for (const sel of [".form-card", ".history-card", "#active-strip", "#compare", "#sign-in", "#confirm-cancel"]) $(sel)?.remove();
  $(".brand").setAttribute("href", location.pathname);
  const banner = h("p", { class: "shared-banner", id: "shared-banner", role: "status" }, "A shared, read-only view of one Tickertape analysis.");
  $(".layout").prepend(banner);
  const client = new SharedClient(token);
  window.tickertape = { client, shared: true };
  let state;
  try {
    state = await client.get();
  } catch (err) {
    return ended(err?.kind === "not_found" ? "This share link does not work: it was revoked, has expired, or is mistyped." : err?.friendly);
  }
  renderRun(state);
  renderResult(isTerminal(state) ? state : null);
  if (isTerminal(state)) return setConnection("ended");
  follow(client, state);
}

function follow(client, first) {
  let current = first;
  const tick = setInterval(() => renderEta(current), 1000);
  const attachment = client.attach(first.runId, {
    onState: (state) => { current = state; renderRun(state); },
    onConnection: (mode) => {
      setConnection(mode);
      if (mode === "reconnecting") checkStillShared(client, attachment, tick);
    },
    onEnd: (state) => { clearInterval(tick); renderRun(state); renderResult(state); },
    onRevoked: () => { clearInterval(tick); ended("The owner revoked this share link. The page no longer updates."); },
  }, { lastEventId: null });
  window.tickertape.attachment = attachment;
}

/** A dropped stream of a link that was revoked (or expired) meanwhile comes back as a 404. */
async function checkStillShared(client, attachment, tick) {
  try {
    await client.get();
  } catch (err) {
    if (err?.kind !== "not_found") return;
    attachment.close();
    clearInterval(tick);
    ended("This share link was revoked or has expired. The page no longer updates.");
  }
}

function ended(text) {
  setConnection("idle"); // nothing is followed any more: no "Run finished" for a run not shown
  $("#run").hidden = true;
  $("#result").hidden = true;
  const banner = $("#shared-banner");
  banner.textContent = text;
  banner.setAttribute("role", "alert");
  banner.dataset.tone = "error";
}
