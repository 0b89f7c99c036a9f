import { api, button, el, hubUrl, latestOnly, showError, table, when } from "/static/core.js";

const MANAGERS = new Set(["owner", "admin"]);
let current = null;

async function guarded(call) {
  try {
    await call();
    showError("groups-error", null);
  } catch (error) {
    showError("groups-error", error);
  }
}

// Each of these renders only its latest call's answers (`latestOnly`): the first load, a change's refresh and a
// click on another group overlap, and an older answer arriving last would show another group's members, or
// the list as it was before the change.
const listGroups = latestOnly(async (fresh) => {
  const { groups } = await api("/api/groups");
  if (!fresh()) return;
  table(
    "groups",
    [
      ["Group", (g) => el("a", { href: `#${g.id}`, class: "group-link", onclick: () => open(g) }, g.name)],
      ["Your role", (g) => g.role],
    ],
    groups,
    { empty: "You are in no group yet: ask for an invite link, or create one." },
  );
  const wanted = location.hash.slice(1);
  const chosen = groups.find((g) => g.id === wanted) ?? (current ? groups.find((g) => g.id === current.id) : null);
  if (chosen) await open(chosen);
  // A link to a group the viewer is not in: ask anyway, and show the hub's refusal.
  else if (wanted) await open({ id: wanted, name: wanted, role: "member" });
});

const open = latestOnly(async (fresh, group) => {
  current = group;
  const detail = document.getElementById("group-detail");
  detail.hidden = false;
  document.getElementById("group-title").textContent = group.name;
  const info = await api(`/api/groups/${encodeURIComponent(group.id)}`);
  if (!fresh()) return;
  document.getElementById("group-billing").textContent =
    info.billing === "credits"
      ? `Billing: credits (consumers pay, GPU owners earn); default price ${info.default_input_per_mtok} in / ${info.default_output_per_mtok} out per million tokens` +
        (info.dynamic_pricing ? `; owners set prices between ${info.min_price_per_mtok ?? "0"} and ${info.max_price_per_mtok ?? "any"}.` : ".")
      : "Billing: mutual (usage is tracked, nothing is charged).";
  const { members } = await api(`/api/groups/${encodeURIComponent(group.id)}/members`);
  if (!fresh()) return;
  table("members", [["Member", (m) => m.username], ["Role", (m) => role(group, m)], ["", (m) => removal(group, m)]], members);
  const manager = MANAGERS.has(group.role);
  document.getElementById("invites-section").hidden = !manager;
  if (manager) await listInvites();
  const { data: aliases } = await api(`/api/groups/${encodeURIComponent(group.id)}/aliases`);
  if (!fresh()) return;
  table("aliases", [["Alias", (a) => a.alias], ["Models", (a) => a.models.join(" | ")]], aliases, { empty: "No aliases." });
});

// The owner changes roles; owners and admins remove members. The hub decides; the page only offers.
function role(group, member) {
  if (group.role !== "owner" || member.role === "owner") return member.role;
  const select = el(
    "select",
    { class: "member-role", "aria-label": `Role of ${member.username}` },
    ["member", "admin"].map((r) => el("option", { value: r, text: r, selected: r === member.role })),
  );
  select.addEventListener("change", () =>
    guarded(async () => {
      await api(`/api/groups/${encodeURIComponent(group.id)}/members/${encodeURIComponent(member.user_id)}`, {
        method: "PATCH",
        body: { role: select.value },
      });
      await open(group);
    }),
  );
  return select;
}

function removal(group, member) {
  if (!MANAGERS.has(group.role) || member.role === "owner" || member.user_id === document.body.dataset.user) return "";
  return button("Remove", () =>
    guarded(async () => {
      await api(`/api/groups/${encodeURIComponent(group.id)}/members/${encodeURIComponent(member.user_id)}`, { method: "DELETE" });
      await open(group);
    }),
  );
}

const listInvites = latestOnly(async (fresh) => {
  const { invites } = await api(`/api/groups/${encodeURIComponent(current.id)}/invites`);
  if (!fresh()) return;
  table(
    "invites",
    [
      ["Invite", (i) => i.id],
      ["Uses", (i) => `${i.uses} / ${i.max_uses}`],
      ["Expires", (i) => when(i.expires_at)],
      ["", (i) => (i.revoked ? "revoked" : button("Revoke", () => guarded(() => revokeInvite(i))))],
    ],
    invites,
    { empty: "No invite links." },
  );
});

async function revokeInvite(invite) {
  await api(`/api/groups/${encodeURIComponent(current.id)}/invites/${encodeURIComponent(invite.id)}`, { method: "DELETE" });
  await listInvites();
}

async function createInvite(event) {
  event.preventDefault();
  const max_uses = Number(document.getElementById("invite-uses").value || 1);
  const expires_in_s = Math.round(Number(document.getElementById("invite-days").value || 7) * 86400);
  const created = await api(`/api/groups/${encodeURIComponent(current.id)}/invites`, {
    method: "POST",
    body: { max_uses, expires_in_s },
  });
  document.getElementById("invite-link").textContent = `${hubUrl()}/join/${created.code}`;
  document.getElementById("invite-link-box").hidden = false;
  await listInvites();
}

async function createGroup(event) {
  event.preventDefault();
  const name = document.getElementById("group-name").value.trim();
  await api("/api/groups", { method: "POST", body: { name } });
  event.target.reset();
  await listGroups();
}

export function start() {
  document.getElementById("new-invite").addEventListener("submit", (e) => guarded(() => createInvite(e)));
  document.getElementById("new-group").addEventListener("submit", (e) => guarded(() => createGroup(e)));
  guarded(listGroups);
}
