// The run card's small actions: copy its link, export it as Markdown or JSON.
import { runHash, sayNear } from "./page-state.js";
import { exportRun } from "./export.js";

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

/** Download the run shown as `format` ("md": a readable note, "json": the run as the API has it). */
export async function exportAs(client, runId, format) {
  if (!runId) return;
  try {
    await exportRun(client, runId, format, new URL(runHash(runId), location.href).href);
  } catch (err) {
    sayNear("#run-notice", err?.friendly || "Could not export the run. Try again.");
  }
}
