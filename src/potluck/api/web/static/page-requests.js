import { api, badge, credits, el, every, when } from "/static/core.js";

const seen = new Set();
let body = null;
let nextBefore = null;

function row(r) {
  return el(
    "tr",
    { dataset: { request: r.request_id } },
    el("td", { text: when(r.created_at) }),
    el("td", {}, el("code", { text: r.request_id })),
    el("td", { text: r.key_id ?? "—" }),
    el("td", { class: "model-name", text: r.model }),
    el("td", { text: r.agent_id ?? "—" }),
    el("td", {}, badge(r.outcome), " ", String(r.status)),
    el("td", { text: `${r.prompt_tokens} + ${r.completion_tokens}${r.tokens_estimated ? " (est.)" : ""}` }),
    el("td", { text: credits(r.charged) }),
  );
}

function ensureTable() {
  if (body) return;
  body = el("tbody", { id: "request-rows" });
  const head = el(
    "thead",
    {},
    el("tr", {}, ["Time", "Request", "Key", "Model", "Agent", "Outcome", "Tokens", "Credits"].map((h) => el("th", { text: h }))),
  );
  document.getElementById("requests").replaceChildren(el("table", {}, head, body));
}

// The live tail: the newest page, with rows not yet shown put on top.
async function tail() {
  const page = await api("/api/requests?limit=50");
  ensureTable();
  const fresh = page.data.filter((r) => !seen.has(r.request_id));
  for (const r of fresh.reverse()) {
    seen.add(r.request_id);
    body.prepend(row(r));
  }
  if (nextBefore === null && page.next_before) {
    nextBefore = page.next_before;
    document.getElementById("older").hidden = false;
  }
}

async function older() {
  if (!nextBefore) return;
  const page = await api(`/api/requests?limit=50&before=${encodeURIComponent(nextBefore)}`);
  ensureTable();
  for (const r of page.data) {
    if (seen.has(r.request_id)) continue;
    seen.add(r.request_id);
    body.append(row(r));
  }
  nextBefore = page.next_before;
  document.getElementById("older").hidden = !nextBefore;
}

export function start() {
  document.getElementById("older").addEventListener("click", older);
  every(1000, tail);
}
