import { api, badge, credits, el, every, setText, table, when } from "/static/core.js";
import { machines, optional } from "/static/fleet.js";
import * as live from "/static/live.js";

const LABELS = {
  requests_per_min: ["Requests / min", (v) => v.toFixed(1)],
  tokens_per_s: ["Tokens / s", (v) => v.toFixed(1)],
  ttft_p50_ms: ["p50 time to first token", (v) => `${Math.round(v)} ms`],
  error_rate: ["Error rate", (v) => `${(v * 100).toFixed(1)} %`],
};

// A sparkline drawn with DOM bars (no inline styles under the CSP: heights are classes h0..h10).
function sparkline(series) {
  const values = series.map((v) => (v == null ? 0 : v));
  const top = Math.max(...values, 0);
  return el(
    "span",
    { class: "spark", "aria-hidden": "true" },
    values.map((v) => el("span", { class: `bar h${top > 0 ? Math.round((v / top) * 10) : 0}` })),
  );
}

function feed(events) {
  const list = document.getElementById("events");
  if (!events.length) return;
  list.replaceChildren(
    ...events.map((e) =>
      el("li", {}, el("time", { text: when(e.at) }), " ", badge(e.kind), " ", el("span", { class: "agent-name", text: e.agent_name }), e.model ? [" · ", el("span", { class: "model-name", text: e.model })] : []),
    ),
  );
}

async function fromDashboard(now) {
  setText("agents-online", `${now.agents_online} / ${now.agents_total}`);
  setText("hot-models", `${now.hot_models} (${now.gpus} GPU${now.gpus === 1 ? "" : "s"})`);
  setText("in-flight", `${now.in_flight} (queue ${now.queue_depth})`);
  setText("balance", credits(now.account.balance));
  setText("held", `held ${credits(now.account.held)} · spent 24 h ${credits(now.account.spent_24h)} · earned 24 h ${credits(now.account.earned_24h)}`);
  const numbers = document.getElementById("numbers");
  numbers.replaceChildren(
    ...Object.entries(LABELS).flatMap(([field, [label, format]]) => [
      el("dt", { text: label }),
      el("dd", {}, now[field].value == null ? "—" : format(now[field].value), " ", sparkline(now[field].series)),
    ]),
  );
  document.getElementById("fleet-numbers").hidden = false;
  feed(now.events);
}

async function fromAgents() {
  const rows = await machines();
  const online = rows.filter((m) => m.state !== "offline");
  const hot = new Set(online.flatMap((m) => (m.models ?? []).filter((x) => x.hot).map((x) => x.id)));
  setText("agents-online", `${online.length} / ${rows.length}`);
  setText("hot-models", hot.size);
  setText("in-flight", online.reduce((sum, m) => sum + (m.in_flight ?? 0), 0));
  const balance = await api("/api/balance");
  setText("balance", credits(balance.balance));
  setText("held", `held ${credits(balance.held)}`);
}

let recent = [];

function showRecent() {
  table(
    "recent",
    [
      ["Time", (r) => when(r.at ?? r.created_at)],
      ["Model", (r) => el("span", { class: "model-name", text: r.model })],
      ["Outcome", (r) => badge(r.outcome)],
      ["Tokens", (r) => `${r.prompt_tokens} + ${r.completion_tokens}`],
      ["Credits", (r) => credits(r.credits ?? r.charged)],
    ],
    recent,
    { empty: "No requests yet." },
  );
}

async function poll() {
  const now = await optional("/api/dashboard/now");
  if (now) await fromDashboard(now);
  else await fromAgents();
  recent = (await api("/api/requests?limit=10")).data;
  showRecent();
}

export function start() {
  live.on("now", (now) => fromDashboard(now));
  live.on("request", (row) => {
    if (!row.mine) return;
    recent = [row, ...recent.filter((r) => r.request_id !== row.request_id)].slice(0, 10);
    showRecent();
  });
  live.otherwise(() => every(2000, poll));
  live.connect();
  poll().catch(console.error);
}
