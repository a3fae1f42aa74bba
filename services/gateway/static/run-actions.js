// The run card's small actions: copy its link, download it as JSON.
import { h } from "./views.js";
import { runHash, sayNear } from "./page-state.js";

export async function copyLink(runId) {
  if (!runId) return;
  const url = new URL(runHash(runId), location.href).href;
  try {
    await navigator.clipboard.writeText(url);
    sayNear("#run-notice", "Link copied.", "info");
  } catch {
    sayNear("#run-notice", url, "info"); // no clipboard (plain http): show it to copy by hand
  }
}

/** The run as the API has it, saved as a file (the CLI's `show RUN --format md` gives Markdown). */
export async function exportJson(client, runId) {
  if (!runId) return;
  try {
    const state = await client.get(runId);
    const link = h("a", { href: URL.createObjectURL(new Blob([JSON.stringify(state, null, 2)], { type: "application/json" })),
      download: `tickertape-${state.symbol}-${state.runId}.json` });
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (err) {
    sayNear("#run-notice", err?.friendly || "Could not export the run. Try again.");
  }
}
