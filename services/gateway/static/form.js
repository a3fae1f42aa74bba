// The start form: the model and analyst pickers, the ticker as typed, the submit body.
import { $, h } from "./views.js";

export const SYMBOL = /^[A-Z0-9.\-^=]{1,10}$/;

export function renderModels(models) {
  // a model that cannot run here stays listed, disabled, with the reason (e.g. the missing key variable)
  $("#model").replaceChildren(...models.map((m) => h("option", {
    value: m.id, selected: m.default || m.id === "offline", disabled: m.available === false,
    title: m.reason || "", "data-available": String(m.available !== false),
  }, m.name || m.label || m.id, m.available === false ? ` (unavailable: ${m.reason || "not configured here"})` : "")));
}

export function renderAnalysts(analysts) {
  const preset = new Set(["market", "fundamentals", "risk"]);
  $("#analysts").replaceChildren(...analysts.map((a) => h("label", { class: "analyst" },
    h("input", { type: "checkbox", name: "analysts", value: a.id, checked: preset.has(a.id) }),
    h("strong", {}, a.name || a.id), h("small", {}, a.description || ""))));
}

export function tickerInput() {
  const input = $("#ticker");
  const value = input.value.trim().toUpperCase();
  if (input.value !== value && document.activeElement === input) {
    const pos = input.selectionStart;
    input.value = value;
    input.setSelectionRange(pos, pos);
  }
  const ok = value === "" || SYMBOL.test(value);
  input.setAttribute("aria-invalid", ok ? "false" : "true");
  const hint = $("#ticker-hint");
  hint.textContent = ok ? "1–10 letters, digits or . - ^ =" : "Only letters, digits and . - ^ = (up to 10).";
  hint.toggleAttribute("data-error", !ok);
  return ok && value ? value : null;
}

export function readForm() {
  const symbol = tickerInput();
  const analysts = [...document.querySelectorAll("#analysts input:checked")].map((i) => i.value);
  $("#analysts-hint").toggleAttribute("data-error", analysts.length === 0);
  if (!symbol || !analysts.length) return null;
  const body = { symbol, analysts, modelId: $("#model").value || "offline" };
  const rounds = $("#debate-rounds").value;
  if (rounds !== "") body.debateRounds = Number(rounds);
  const budget = $("#budget").value;
  if (budget !== "") body.maxCostUsd = Number(budget);
  return body;
}
