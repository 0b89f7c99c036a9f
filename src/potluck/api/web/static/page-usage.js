import { api, credits, el, setText, showError, table } from "/static/core.js";
import { optional } from "/static/fleet.js";

// One row per day: two bars whose widths are classes (w0..w20), as inline styles are barred by the CSP.
function chart(series) {
  const days = new Map();
  for (const r of series) {
    const day = days.get(r.day) ?? { spent: 0, earned: 0 };
    day.spent += r.spent;
    day.earned += r.earned;
    days.set(r.day, day);
  }
  const top = Math.max(0, ...[...days.values()].flatMap((d) => [d.spent, d.earned]));
  const width = (v) => `w${top > 0 ? Math.round((v / top) * 20) : 0}`;
  const target = document.getElementById("chart");
  if (!days.size) {
    target.replaceChildren(el("p", { class: "muted", text: "Nothing spent or earned yet." }));
    return;
  }
  target.replaceChildren(
    ...[...days.entries()].map(([day, d]) =>
      el(
        "div",
        { class: "day" },
        el("span", { class: "label", text: day }),
        el("span", { class: "bars" }, el("span", { class: `bar spent ${width(d.spent)}` }), el("span", { class: `bar earned ${width(d.earned)}` })),
        el("span", { class: "amount", text: `${credits(d.spent)} / ${credits(d.earned)}` }),
      ),
    ),
  );
}

async function fromDashboard(view) {
  chart(view.series);
  table(
    "series",
    [
      ["Day", (r) => r.day],
      ["Model", (r) => el("span", { class: "model-name", text: r.model })],
      ["Requests", (r) => `${r.requests}${r.not_served ? ` (+${r.not_served} not served)` : ""}`],
      ["Tokens", (r) => `${r.prompt_tokens} + ${r.completion_tokens}`],
      ["Spent", (r) => credits(r.spent)],
      ["Served", (r) => String(r.served)],
      ["Earned", (r) => credits(r.earned)],
    ],
    view.series,
    { empty: "No usage in these days." },
  );
  const shares = view.groups.flatMap((g) => g.members.map((m) => ({ group: g.name, ...m })));
  document.getElementById("shares-section").hidden = shares.length === 0;
  table(
    "shares",
    [
      ["Group", (m) => m.group],
      ["Member", (m) => m.username],
      ["Role", (m) => m.role],
      ["Consumed", (m) => `${m.consumed_requests} requests, ${m.consumed_tokens} tokens, ${credits(m.consumed)} credits`],
      ["Contributed", (m) => `${m.contributed_requests} requests, ${m.contributed_tokens} tokens, ${credits(m.contributed)} credits`],
    ],
    shares,
  );
  const holds = await api("/api/dashboard/holds");
  table("holds", [["Request", (h) => el("code", { text: h.request_id })], ["Held", (h) => credits(h.amount)]], holds.holds, {
    empty: "No credits held now.",
  });
}

async function fromReports() {
  const usage = await api("/api/usage");
  table(
    "series",
    [
      ["Day", (r) => r.day],
      ["Model", (r) => el("span", { class: "model-name", text: r.model })],
      ["Requests", (r) => String(r.requests)],
      ["Tokens", (r) => `${r.prompt_tokens} + ${r.completion_tokens}`],
      ["Spent", (r) => credits(r.spend)],
    ],
    usage.data,
    { empty: "Nothing spent yet." },
  );
}

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
  const view = await optional("/api/dashboard/usage?days=30");
  if (view) await fromDashboard(view);
  else await fromReports();
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
