import { api, badge, button, el, every, isAdmin, showError, table, when } from "/static/core.js";
import { machines } from "/static/fleet.js";
import * as live from "/static/live.js";

const gib = (bytes) => (bytes / 2 ** 30).toFixed(1);

function state(m) {
  if (m.state !== "online") return m.state;
  if (m.admin_drained) return "draining";
  return m.paused ? "paused" : "online";
}

function gpus(m) {
  if (!m.gpus?.length) return "—";
  return el(
    "ul",
    { class: "plain" },
    m.gpus.map((g) =>
      el(
        "li",
        {},
        `${g.name}: ${Math.round(g.utilization_pct)}%, ${gib(g.memory_used_bytes)}/${gib(g.memory_total_bytes)} GiB`,
        g.temperature_c == null ? "" : `, ${Math.round(g.temperature_c)} °C`,
        g.power_w == null ? "" : `, ${Math.round(g.power_w)} W`,
      ),
    ),
  );
}

function models(m) {
  return el(
    "ul",
    { class: "plain" },
    (m.models ?? []).map((model) => el("li", {}, el("span", { class: "model-name", text: model.id }), " ", badge(model.hot ? "hot" : "cold"))),
  );
}

async function act(call) {
  try {
    await call();
    showError("machines-error", null);
    await refresh();
  } catch (error) {
    showError("machines-error", error);
  }
}

let myGroups = [];
const groupName = (id) => myGroups.find((g) => g.id === id)?.name ?? id;

// The groups a machine serves, with unshare buttons for its owner, and a picker to share it into another.
function sharing(m) {
  const shared = m.groups ?? [];
  if (!ownedByViewer(m)) return shared.map(groupName).join(", ") || "—";
  const picker = el(
    "select",
    { class: "share-into", "aria-label": "Share into a group" },
    el("option", { value: "", text: "share into…" }),
    myGroups.filter((g) => !shared.includes(g.id)).map((g) => el("option", { value: g.id, text: g.name })),
  );
  picker.addEventListener("change", () => {
    if (picker.value) {
      act(() => api(`/api/agents/${encodeURIComponent(m.id)}/groups`, { method: "POST", body: { group_id: picker.value } }));
    }
  });
  return el(
    "div",
    {},
    shared.map((id) =>
      el(
        "span",
        { class: "chip" },
        groupName(id),
        button("×", () => act(() => api(`/api/agents/${encodeURIComponent(m.id)}/groups/${encodeURIComponent(id)}`, { method: "DELETE" })), {
          class: "unshare",
          "aria-label": `Stop sharing into ${groupName(id)}`,
        }),
      ),
    ),
    picker,
  );
}

function ownedByViewer(m) {
  return m.owner_id === undefined ? !isAdmin() : m.owner_id === document.body.dataset.user;
}

function actions(m) {
  const out = [];
  if (ownedByViewer(m) && m.state !== "offline") {
    out.push(
      m.paused
        ? button("Resume", () => act(() => api(`/api/agents/${encodeURIComponent(m.id)}`, { method: "PATCH", body: { paused: false } })))
        : button("Pause", () => act(() => api(`/api/agents/${encodeURIComponent(m.id)}`, { method: "PATCH", body: { paused: true } }))),
    );
  }
  if (isAdmin() && m.state !== "offline") {
    out.push(
      m.admin_drained
        ? button("Undrain", () => act(() => api(`/admin/agents/${encodeURIComponent(m.id)}/resume`, { method: "POST" })), { class: "drain" })
        : button("Drain", () => act(() => api(`/admin/agents/${encodeURIComponent(m.id)}/drain`, { method: "POST" })), { class: "drain" }),
    );
  }
  return el("div", { class: "actions" }, out);
}

async function refresh() {
  const rows = await machines();
  table(
    "machines",
    [
      ["Agent", (m) => el("span", { class: "agent-name", text: m.name })],
      ["Status", (m) => badge(state(m))],
      ["Last seen", (m) => when(m.last_seen)],
      ["Backends", (m) => (m.backends ?? []).map((b) => `${b.kind}${b.version ? " " + b.version : ""}`).join(", ") || "—"],
      ["GPUs", gpus],
      ["Models", models],
      ["Slots", (m) => (m.slots == null ? "—" : `${m.in_flight ?? 0} / ${m.slots}`)],
      ["Reconnects / ejections", (m) => (m.reconnects == null ? "—" : `${m.reconnects} / ${m.ejections}`)],
      ["Groups", sharing],
      ["", actions],
    ],
    rows,
    { empty: "No agents yet: add a GPU.", rowKey: (m) => m.id },
  );
}

export async function start() {
  try {
    myGroups = (await api("/api/groups")).groups;
  } catch (error) {
    showError("machines-error", error);
  }
  const report = (error) => showError("machines-error", error);
  // Badges change on the stream's `agent` events; the slower poll refreshes GPU figures and last-seen times.
  live.on("agent", () => refresh().catch(report));
  live.otherwise(() => every(1000, refresh, report));
  live.connect();
  every(5000, refresh, report);
}
