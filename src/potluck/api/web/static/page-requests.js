import { api, badge, credits, el, every, when } from "/static/core.js";
import { machines } from "/static/fleet.js";
import * as live from "/static/live.js";

// The history names keys and agents by id: name them as the live rows do, from two requests made once.
const keyNames = new Map();
const agentNames = new Map();

async function loadNames() {
  const [{ keys }, agents] = await Promise.all([api("/api/keys"), machines()]);
  for (const k of keys) keyNames.set(k.id, k.name);
  for (const a of agents) agentNames.set(a.id, a.name);
}

const seen = new Set();
let body = null;
let nextBefore = null;
const COLUMNS = ["Time", "Request", "Key", "Model", "Agent", "Outcome", "TTFT", "Duration", "Tokens", "Credits"];
const ms = (v) => (v == null ? "—" : `${v} ms`);

// A row of the history (GET /api/requests) or of the live tail (the stream's `request` event).
function normal(r) {
  if ("at" in r) {
    return {
      id: r.request_id, at: r.at, key: r.key_name ?? r.key_id, model: r.model, agent: r.agent_name ?? r.agent_id,
      outcome: r.outcome, status: r.status, ttft: r.ttft_ms, duration: r.duration_ms, prompt: r.prompt_tokens,
      completion: r.completion_tokens, estimated: false, credits: r.credits, earned: !r.mine,
    };
  }
  return {
    id: r.request_id, at: r.created_at, key: keyNames.get(r.key_id) ?? r.key_id, model: r.model,
    agent: agentNames.get(r.agent_id) ?? r.agent_id, outcome: r.outcome,
    status: r.status, ttft: r.ttft_ms, duration: r.duration_ms, prompt: r.prompt_tokens, completion: r.completion_tokens,
    estimated: r.tokens_estimated, credits: r.charged, earned: false,
  };
}

function row(r) {
  return el(
    "tr",
    { dataset: { request: r.id } },
    el("td", { text: when(r.at) }),
    el("td", {}, el("code", { text: r.id })),
    el("td", { text: r.key ?? "—" }),
    el("td", { class: "model-name", text: r.model }),
    el("td", { class: "agent-name", text: r.agent ?? "—" }),
    el("td", {}, badge(r.outcome), " ", String(r.status)),
    el("td", { text: ms(r.ttft) }),
    el("td", { text: ms(r.duration) }),
    el("td", { text: `${r.prompt} + ${r.completion}${r.estimated ? " (est.)" : ""}` }),
    el("td", { text: r.earned ? `earned ${credits(r.credits)}` : credits(r.credits) }),
  );
}

function ensureTable() {
  if (body) return;
  body = el("tbody", { id: "request-rows" });
  const head = el("thead", {}, el("tr", {}, COLUMNS.map((h) => el("th", { text: h }))));
  document.getElementById("requests").replaceChildren(el("table", {}, head, body));
}

function add(rows, { top }) {
  ensureTable();
  for (const r of top ? [...rows].reverse() : rows) {
    if (seen.has(r.id)) continue;
    seen.add(r.id);
    if (top) body.prepend(row(r));
    else body.append(row(r));
  }
}

async function newest() {
  const page = await api("/api/requests?limit=50");
  add(page.data.map(normal), { top: true });
  if (nextBefore === null && page.next_before) {
    nextBefore = page.next_before;
    document.getElementById("older").hidden = false;
  }
}

async function older() {
  if (!nextBefore) return;
  const page = await api(`/api/requests?limit=50&before=${encodeURIComponent(nextBefore)}`);
  add(page.data.map(normal), { top: false });
  nextBefore = page.next_before;
  document.getElementById("older").hidden = !nextBefore;
}

export function start() {
  document.getElementById("older").addEventListener("click", older);
  live.on("request", (r) => add([normal(r)], { top: true }));
  live.otherwise(() => every(2000, newest));
  live.connect();
  loadNames()
    .catch(console.error)
    .then(newest)
    .catch(console.error);
}
