import { api, badge, credits, el, every, setText, table, when } from "/static/core.js";

async function refresh() {
  const health = await fetch("/readyz").then((r) => r.json().then((body) => ({ ok: r.ok, body })));
  setText("health", health.ok ? "Ready." : `Not ready: ${JSON.stringify(health.body)}`);
  const { users } = await api("/admin/users");
  table(
    "users",
    [
      ["User", (u) => u.username],
      ["Role", (u) => u.role],
      ["Limits", (u) => `${u.rpm ?? "∞"} rpm, ${u.tpm ?? "∞"} tpm`],
      ["Balance", (u) => credits(u.balance)],
    ],
    users,
  );
  const { agents } = await api("/admin/agents");
  table(
    "agents",
    [
      ["Agent", (a) => el("span", { class: "agent-name", text: a.name })],
      ["Status", (a) => badge(a.drained_by_admin && a.state === "online" ? "draining" : a.state)],
      ["Models", (a) => a.models.map((m) => m.id).join(", ")],
      ["In flight", (a) => `${a.in_flight} / ${a.max_concurrency}`],
      ["Last seen", (a) => when(a.last_seen)],
    ],
    agents,
    { empty: "No agents." },
  );
}

async function explain(event) {
  event.preventDefault();
  const model = document.getElementById("explain-model").value.trim();
  try {
    setText("explain", JSON.stringify(await api(`/admin/route-explain?model=${encodeURIComponent(model)}`), null, 2));
  } catch (error) {
    setText("explain", error.message);
  }
}

export function start() {
  document.getElementById("explain-form").addEventListener("submit", explain);
  every(10000, refresh);
}
