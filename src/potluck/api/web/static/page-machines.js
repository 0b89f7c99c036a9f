import { api, badge, button, el, every, isAdmin, latestOnly, setText, showError, table, when } from "/static/core.js";
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

const refresh = latestOnly(async (current) => {
  const rows = await machines();
  if (!current()) return;
  await showSettings(rows);
  if (!current()) return;
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
});

const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
let settingsFor = null;
const touched = new Set();

function ownMachines(rows) {
  return rows.filter(ownedByViewer);
}

// One form below the table (the table re-renders as figures change; a form inside it would lose input).
async function showSettings(rows) {
  const mine = ownMachines(rows);
  const section = document.getElementById("settings");
  section.hidden = mine.length === 0;
  const select = document.getElementById("settings-agent");
  const chosen = select.value;
  const ids = mine.map((m) => m.id).join(",");
  if (select.dataset.ids !== ids) {
    select.dataset.ids = ids;
    select.replaceChildren(...mine.map((m) => el("option", { value: m.id, text: m.name })));
    if (mine.some((m) => m.id === chosen)) select.value = chosen;
  }
  const machine = mine.find((m) => m.id === select.value);
  if (machine && settingsFor !== machine.id) await fillSettings(machine);
}

let generation = 0;

async function fillSettings(machine) {
  settingsFor = machine.id;
  touched.clear();
  delete document.getElementById("prices").dataset.agent;
  const mine = ++generation;
  const { prices } = await api(`/api/agents/${encodeURIComponent(machine.id)}/prices`);
  // Another fill started while this one waited (the machine was switched): only the latest may write.
  if (mine !== generation) return;
  document.getElementById("prices").replaceChildren(
    ...(machine.models ?? []).map((model) =>
      el(
        "div",
        { class: "price-row", dataset: { model: model.id } },
        el("span", { class: "model-name", text: model.id }),
        el("input", { type: "number", min: "0", step: "any", class: "price-in", placeholder: "in", "aria-label": "input price", value: prices[model.id]?.input_per_mtok ?? "" }),
        el("input", { type: "number", min: "0", step: "any", class: "price-out", placeholder: "out", "aria-label": "output price", value: prices[model.id]?.output_per_mtok ?? "" }),
      ),
    ),
  );
  document.getElementById("prices").dataset.agent = machine.id;
  setText("settings-status", "");
}

async function saveSettings(event) {
  event.preventDefault();
  const id = document.getElementById("settings-agent").value;
  const window = document.querySelector("input[name=hours]:checked").value === "window";
  const schedule = window
    ? {
        timezone: zone,
        windows: [{ days: [0, 1, 2, 3, 4, 5, 6], start: document.getElementById("hours-start").value, end: document.getElementById("hours-end").value }],
      }
    : null;
  const prices = {};
  for (const row of document.querySelectorAll("#prices .price-row")) {
    const input = row.querySelector(".price-in").value;
    const output = row.querySelector(".price-out").value;
    if (input !== "" || output !== "") prices[row.dataset.model] = { input_per_mtok: Number(input || 0), output_per_mtok: Number(output || 0) };
  }
  // Only what was changed here: the page does not know the current hours or the own-requests setting.
  const controls = {};
  if (touched.has("hours")) controls.schedule = schedule;
  if (touched.has("own")) controls.own_requests_only = document.getElementById("own-only").checked;
  try {
    if (Object.keys(controls).length) await api(`/api/agents/${encodeURIComponent(id)}`, { method: "PATCH", body: controls });
    if (Object.keys(prices).length) await api(`/api/agents/${encodeURIComponent(id)}/prices`, { method: "PUT", body: prices });
    touched.clear();
    setText("settings-status", "Saved.");
  } catch (error) {
    setText("settings-status", `Not saved: ${error.message}`);
  }
}

export async function start() {
  setText("hours-zone", zone);
  document.getElementById("settings-form").addEventListener("submit", saveSettings);
  for (const id of ["hours-start", "hours-end"]) document.getElementById(id).addEventListener("change", () => touched.add("hours"));
  for (const radio of document.querySelectorAll("input[name=hours]")) radio.addEventListener("change", () => touched.add("hours"));
  document.getElementById("own-only").addEventListener("change", () => touched.add("own"));
  document.getElementById("settings-agent").addEventListener("change", () => {
    settingsFor = null;
    generation += 1;
    delete document.getElementById("prices").dataset.agent;
    refresh().catch((error) => showError("machines-error", error));
  });
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
