import { api, credits, el, setText, showError, table } from "/static/core.js";
import { optional } from "/static/fleet.js";

async function load() {
  const now = await optional("/api/dashboard/now");
  if (now) {
    setText("balance", credits(now.account.balance));
    setText("held", credits(now.account.held));
    setText("spent-24h", credits(now.account.spent_24h));
    setText("earned-24h", credits(now.account.earned_24h));
  } else {
    const balance = await api("/api/balance");
    setText("balance", credits(balance.balance));
    setText("held", credits(balance.held));
  }
  const usage = await api("/api/usage");
  table(
    "usage",
    [
      ["Day", (r) => r.day],
      ["Model", (r) => el("span", { class: "model-name", text: r.model })],
      ["Requests", (r) => `${r.requests}${r.not_served ? ` (+${r.not_served} not served)` : ""}`],
      ["Tokens", (r) => `${r.prompt_tokens} + ${r.completion_tokens}`],
      ["Spent", (r) => credits(r.spend)],
    ],
    usage.data,
    { empty: "Nothing spent yet." },
  );
  const earnings = await api("/api/earnings");
  table(
    "earnings",
    [
      ["Day", (r) => r.day],
      ["Model", (r) => el("span", { class: "model-name", text: r.model })],
      ["Requests", (r) => String(r.requests)],
      ["Tokens", (r) => `${r.prompt_tokens} + ${r.completion_tokens}`],
      ["Earned", (r) => credits(r.earned)],
    ],
    earnings.data,
    { empty: "Your machines have earned nothing yet." },
  );
}

const PREFIX = '{"receipt":';
const b64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

async function receipt(event) {
  event.preventDefault();
  const id = document.getElementById("receipt-id").value.trim();
  const status = document.getElementById("receipt-status");
  try {
    const response = await fetch(`/api/receipts/${encodeURIComponent(id)}`, { credentials: "same-origin" });
    const text = await response.text();
    if (!response.ok) throw new Error(JSON.parse(text)?.error?.message ?? `HTTP ${response.status}`);
    const key = await api("/.well-known/potluck-hub-key");
    status.textContent = (await verify(text, key)) ? "Signature valid: signed by this hub." : "Signature could not be verified here (use `potluck receipts verify`).";
    setText("receipt", JSON.stringify(JSON.parse(text), null, 2));
    const link = document.getElementById("receipt-download");
    link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    link.download = `${id}.json`;
    link.hidden = false;
  } catch (error) {
    status.textContent = `No receipt: ${error.message}`;
  }
}

// The document is {"receipt":<the signed bytes>,"signature":"<base64>"}: verify those exact bytes with
// Ed25519 in WebCrypto (where the browser lacks it, `potluck receipts verify` does the same offline).
async function verify(text, key) {
  try {
    const cut = text.lastIndexOf(',"signature":"');
    const payload = new TextEncoder().encode(text.slice(PREFIX.length, cut));
    const signature = b64(text.slice(cut + ',"signature":"'.length, -2));
    const publicKey = await crypto.subtle.importKey("raw", b64(key.public_key), { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, publicKey, signature, payload);
  } catch {
    return false;
  }
}

export function start() {
  document.getElementById("receipt-form").addEventListener("submit", receipt);
  load().catch((error) => showError("receipt-status", error));
}
