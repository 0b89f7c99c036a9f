// The agents a viewer can see, in the shape of /api/dashboard/machines; where that endpoint is not served,
// built from /admin/agents (admins) or /api/agents (owners).
import { api, ApiError, isAdmin } from "/static/core.js";

let dashboard = true;

export async function machines() {
  if (dashboard) {
    try {
      return (await api("/api/dashboard/machines")).machines;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
      dashboard = false;
    }
  }
  if (isAdmin()) {
    const { agents } = await api("/admin/agents");
    return agents.map((a) => ({
      id: a.id,
      name: a.name,
      state: a.state,
      paused: false,
      admin_drained: a.drained_by_admin,
      last_seen: a.last_seen,
      version: a.version ?? null,
      groups: [],
      backends: (a.backends ?? []).map((b) => ({ kind: b.kind ?? "openai", version: b.version ?? null, url: b.url ?? "" })),
      gpus: [],
      models: a.models.map((m) => ({ id: m.id, hot: m.hot, context_length: m.context_length ?? null })),
      slots: a.max_concurrency,
      in_flight: a.in_flight,
      reconnects: null,
      ejections: null,
    }));
  }
  const { agents } = await api("/api/agents");
  return agents.map((a) => ({
    id: a.id,
    name: a.name,
    state: a.state,
    paused: false,
    admin_drained: false,
    last_seen: null,
    version: null,
    groups: a.groups,
    backends: [],
    gpus: [],
    models: a.models,
    slots: null,
    in_flight: null,
    reconnects: null,
    ejections: null,
  }));
}

// Optional richer figures (/api/dashboard/...): null where the hub does not serve them.
export async function optional(path) {
  try {
    return await api(path);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}
