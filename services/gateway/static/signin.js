// Signing in, only when the server has auth on: a host app's hand-off token, else a dialog.
import { $ } from "./views.js";

/** A host app may hand its user's JWT over as ?token=…: taken out of the address bar (and so out
 * of history, bookmarks and Referer) before anything else, then traded for the session cookie. */
function takeHandOffToken() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token === null) return null;
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url);
  return token.trim() || null;
}

export async function ensureSignedIn(client) {
  const handOff = takeHandOffToken();
  if (handOff) {
    try {
      await client.signIn(handOff);
      return;
    } catch (err) {
      if (err.kind !== "unauthorized") return;
      $("#sign-in-error").textContent = `The sign-in link was refused: ${err.detail || "sign in again"}`;
      $("#sign-in-error").hidden = false;
    }
  }
  try {
    await client.request("GET", "/session");
    return;
  } catch (err) {
    if (err.kind !== "unauthorized") return; // unreachable servers are reported by what follows
  }
  const dialog = $("#sign-in");
  dialog.addEventListener("cancel", (event) => event.preventDefault()); // nothing works until signed in
  dialog.showModal();
  await new Promise((resolve) => {
    $("#sign-in-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = $("#sign-in-error");
      try {
        await client.signIn($("#sign-in-token").value.trim());
        dialog.close();
        resolve();
      } catch (err) {
        error.textContent = err.kind === "unauthorized" ? err.detail || "That token is not valid." : err.friendly;
        error.hidden = false;
      }
    });
  });
}

