import { api, el, every, hubUrl, setText } from "/static/core.js";
import * as live from "/static/live.js";

let known = null;
let found = null;

function quote(value) {
  return /^[A-Za-z0-9_.:/@%+=,-]+$/.test(value) ? value : `'${value.replaceAll("'", "'\\''")}'`;
}

async function enrol(event) {
  event.preventDefault();
  const name = document.getElementById("machine-name").value.trim() || "my-gpu";
  const { agents } = await api("/api/agents");
  known = new Set(agents.map((a) => a.id));
  found = null;
  const { token } = await api("/api/agent-tokens", { method: "POST", body: { name } });
  const hub = hubUrl();
  setText("install-command", `curl -fsSL ${hub}/install.sh | sh -s -- --token ${token}`);
  setText("run-command", `POTLUCK_AGENT_TOKEN=${token} potluck agent --hub ${quote(hub)}`);
  document.getElementById("commands").hidden = false;
  setText("waiting", "Waiting for your machine…");
  document.getElementById("waiting").className = "waiting";
  document.getElementById("test-request").disabled = true;
}

let checking = false;

// Called on the stream's `agent` events (an agent connected) and, as a safety net, every few seconds.
async function check() {
  if (!known || found || checking) return;
  checking = true;
  try {
    const { agents } = await api("/api/agents");
    const fresh = agents.find((a) => !known.has(a.id) && a.state !== "offline");
    if (fresh) await connected(fresh);
  } finally {
    checking = false;
  }
}

async function connected(fresh) {
  found = fresh;
  const group = document.getElementById("share-group").value;
  if (group) {
    await api(`/api/agents/${encodeURIComponent(fresh.id)}/groups`, { method: "POST", body: { group_id: group } });
  }
  const hot = fresh.models.filter((m) => m.hot).length;
  const waiting = document.getElementById("waiting");
  waiting.className = "ok";
  waiting.replaceChildren(
    "Connected: ",
    el("strong", { class: "agent-name", text: fresh.name }),
    ` with ${fresh.models.length} model${fresh.models.length === 1 ? "" : "s"} (${hot} loaded): `,
    el("span", { class: "model-name", text: fresh.models.map((m) => m.id).join(", ") || "none yet" }),
  );
  document.getElementById("test-request").disabled = fresh.models.length === 0;
}

async function testRequest() {
  const model = found.models.find((m) => m.hot)?.id ?? found.models[0].id;
  setText("test-status", `Asking ${model}…`);
  try {
    const { key } = await api("/api/keys", { method: "POST", body: { name: "add-a-gpu test" } });
    const started = performance.now();
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      credentials: "omit",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ model, max_tokens: 32, messages: [{ role: "user", content: "Say hello in five words." }] }),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data?.error?.message ?? `HTTP ${response.status}`);
    setText("test-status", `Answered in ${Math.round(performance.now() - started)} ms by your machine:`);
    setText("test-answer", data.choices?.[0]?.message?.content ?? "");
  } catch (error) {
    setText("test-status", `The test request failed: ${error.message}`);
  }
}

async function listGroups() {
  const { groups } = await api("/api/groups");
  const select = document.getElementById("share-group");
  for (const group of groups.filter((g) => g.role === "owner" || g.role === "admin")) {
    select.append(el("option", { value: group.id, text: group.name }));
  }
  if (select.options.length > 1) select.selectedIndex = 1;
}

export function start() {
  listGroups();
  live.on("agent", () => check().catch(console.error));
  live.connect();
  every(3000, check);
  document.getElementById("enrol").addEventListener("submit", (event) =>
    enrol(event).catch((error) => setText("waiting", `Could not make a command: ${error.message}`)),
  );
  document.getElementById("test-request").addEventListener("click", testRequest);
}
