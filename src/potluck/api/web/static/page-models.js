import { badge, el, every, table } from "/static/core.js";
import { machines, optional } from "/static/fleet.js";

const ms = (v) => (v == null ? "—" : `${Math.round(v)} ms`);

function fromMachines(rows) {
  const byModel = new Map();
  for (const m of rows) {
    if (m.state === "offline") continue;
    for (const model of m.models ?? []) {
      const entry = byModel.get(model.id) ?? { id: model.id, hot_agents: 0, cold_agents: 0, context_length: null, capabilities: [] };
      if (model.hot) entry.hot_agents += 1;
      else entry.cold_agents += 1;
      entry.context_length = Math.max(entry.context_length ?? 0, model.context_length ?? 0) || null;
      byModel.set(model.id, entry);
    }
  }
  return [...byModel.values()].sort((a, b) => a.id.localeCompare(b.id));
}

function price(p) {
  if (!p) return "free (mutual)";
  const range = (lo, hi) => (lo === hi ? `${lo}` : `${lo}–${hi}`);
  return `${range(p.input_min, p.input_max)} in / ${range(p.output_min, p.output_max)} out`;
}

async function refresh() {
  const view = await optional("/api/dashboard/models");
  const rows = view ? view.models : fromMachines(await machines());
  table(
    "models",
    [
      ["Model", (m) => el("code", { class: "model-name", text: m.id })],
      ["Hot on", (m) => String(m.hot_agents)],
      ["Cold on", (m) => String(m.cold_agents)],
      ["Queue", (m) => (m.queue == null ? "—" : String(m.queue))],
      ["TTFT p50 / p95", (m) => (m.ttft_p50_ms === undefined ? "—" : `${ms(m.ttft_p50_ms)} / ${ms(m.ttft_p95_ms)}`)],
      ["Tokens / s", (m) => (m.tokens_per_s == null ? "—" : m.tokens_per_s.toFixed(1))],
      ["Context", (m) => (m.context_length == null ? "—" : m.context_length.toLocaleString())],
      ["Price / M tokens", (m) => (m.price === undefined ? "—" : price(m.price))],
      ["", (m) => el("span", {}, (m.capabilities ?? []).map((c) => badge(c)))],
    ],
    rows,
    { empty: "No model is online in your groups yet." },
  );
}

export function start() {
  every(3000, refresh);
}
