import { api, button, el, latestOnly, showError, table, when } from "/static/core.js";

const refresh = latestOnly(async (current) => {
  const { keys } = await api("/api/keys");
  if (!current()) return;
  table(
    "keys",
    [
      ["Name", (k) => el("span", { class: "key-name", text: k.name })],
      ["Prefix", (k) => el("code", { text: k.prefix })],
      ["Created", (k) => when(k.created_at)],
      ["Last used", (k) => (k.last_used_at ? when(k.last_used_at) : "never")],
      ["Groups", (k) => (k.groups ? k.groups.map((id) => groupNames.get(id) ?? id).join(", ") : "all yours")],
      ["Revoked", (k) => (k.revoked_at ? when(k.revoked_at) : "—")],
      ["", (k) => (k.revoked_at ? "" : button("Revoke", () => revoke(k), { class: "revoke" }))],
    ],
    keys,
    { empty: "No keys yet.", rowKey: (k) => k.name },
  );
});

async function revoke(key) {
  try {
    await api(`/api/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
    showError("key-error", null);
  } catch (error) {
    showError("key-error", error);
  }
  await refresh();
}

async function create(event) {
  event.preventDefault();
  const name = document.getElementById("key-name").value.trim();
  const models = document.getElementById("key-models").value.split(",").map((m) => m.trim()).filter(Boolean);
  const rpm = document.getElementById("key-rpm").value;
  const days = document.getElementById("key-days").value;
  const groups = [...document.getElementById("key-groups").selectedOptions].map((o) => o.value);
  const body = { name };
  if (models.length) body.models = models;
  if (groups.length) body.groups = groups;
  if (rpm) body.rpm = Number(rpm);
  if (days) body.expires_in_s = Math.round(Number(days) * 86400);
  try {
    const created = await api("/api/keys", { method: "POST", body });
    document.getElementById("secret").textContent = created.key;
    document.getElementById("new-secret").hidden = false;
    showError("key-error", null);
    event.target.reset();
  } catch (error) {
    showError("key-error", error);
  }
  await refresh();
}

let groupNames = new Map();

async function listGroups() {
  const { groups } = await api("/api/groups");
  groupNames = new Map(groups.map((g) => [g.id, g.name]));
  document.getElementById("key-groups").replaceChildren(...groups.map((g) => el("option", { value: g.id, text: g.name })));
}

export function start() {
  listGroups().catch((error) => showError("key-error", error));
  document.getElementById("new-key").addEventListener("submit", create);
  refresh().catch((error) => showError("key-error", error));
}
