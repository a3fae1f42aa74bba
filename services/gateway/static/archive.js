// Older runs: those moved to the archive after the history horizon, listed on request
// (`GET /runs?archived=true`, the same items as the history list) under the history panel.
import { $, h } from "./views.js";

/**
 * Fill `#history-archived` with the archived runs of `symbol` (all symbols when null). Rows come
 * from `row(run)`. A run the history above already shows is left out: a server without an archive
 * answers the ordinary list, and the same run twice would only confuse.
 */
export async function showArchived(client, symbol, row) {
  const box = $("#history-archived");
  const list = $("#history-archived-list");
  box.hidden = false;
  list.replaceChildren(h("li", { class: "empty" }, "Loading older runs…"));
  try {
    const { runs } = await client.list({ symbol: symbol || undefined, limit: 50, archived: true });
    const shown = new Set([...document.querySelectorAll("#history li[data-run-id]")].map((li) => li.dataset.runId));
    const older = runs.filter((run) => !shown.has(run.runId));
    list.replaceChildren(...(older.length ? older.map(row)
      : [h("li", { class: "empty" }, symbol ? `No older runs of ${symbol}.` : "No older runs.")]));
  } catch (err) {
    list.replaceChildren(h("li", { class: "empty" }, err?.friendly || "Older runs are unavailable right now."));
  }
}

/** Wire "Older runs" to toggle the list; `symbol()` is the history's ticker (null: all tickers). */
export function bindOlder(client, symbol, row) {
  $("#history-older").addEventListener("click", () => {
    if ($("#history-older").getAttribute("aria-expanded") === "true") return closeOlder();
    $("#history-older").setAttribute("aria-expanded", "true");
    $("#history-older").textContent = "Hide older runs";
    showArchived(client, symbol(), row);
  });
}

export function closeOlder() {
  $("#history-older").setAttribute("aria-expanded", "false");
  $("#history-older").textContent = "Older runs";
  $("#history-archived").hidden = true;
  $("#history-archived-list").replaceChildren();
}
