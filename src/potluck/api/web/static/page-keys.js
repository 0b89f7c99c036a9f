import { api, button, el, every, showError, table, when } from "/static/core.js";

async function refresh() {
  const { keys } = await api("/api/keys");
  table(
    "keys",
    [
      ["Name", (k) => el("span", { class: "key-name", text: k.name })],
      ["Prefix", (k) => el("code", { text: k.prefix })],
      ["Created", (k) => when(k.created_at)],
      ["Groups", (k) => (k.groups ? k.groups.join(", ") : "all")],
      ["Revoked", (k) => (k.revoked_at ? when(k.revoked_at) : "—")],
      ["", (k) => (k.revoked_at ? "" : button("Revoke", () => revoke(k), { class: "revoke", dataset: undefined }))],
    ],
    keys,
    { empty: "No keys yet.", rowKey: (k) => k.name },
  );
}

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
  const body = { name };
  if (models.length) body.models = models;
  if (rpm) body.rpm = Number(rpm);
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

export function start() {
  document.getElementById("new-key").addEventListener("submit", create);
  every(5000, refresh, (error) => showError("key-error", error));
}
