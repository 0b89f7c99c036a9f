// Shared helpers for the dashboard's pages. Data from the hub (model, agent, GPU names...) is untrusted:
// it only ever reaches the page through textContent and attribute setters, never as markup.

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A call to the hub's JSON API with this browser's session; state changes carry the CSRF token.
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
  if (method !== "GET") init.headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401 && !init.headers.Authorization) {
    // The session ended (signed out elsewhere, expired, password changed): sign in again, then come back.
    location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
  }
  if (!response.ok) {
    const message = data?.error?.message ?? data?.message ?? `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

// An element with attributes and children; strings become text nodes.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function setText(id, value) {
  const node = document.getElementById(id);
  if (node) node.textContent = value === undefined || value === null ? "" : String(value);
}

// Render rows into a container as a table: columns are [label, row => string | Node].
export function table(container, columns, rows, { empty = "Nothing yet.", rowKey } = {}) {
  const target = typeof container === "string" ? document.getElementById(container) : container;
  // Re-rendering identical rows would replace buttons under the pointer: skip it.
  const signature = JSON.stringify(rows);
  if (target.dataset.rows === signature) return;
  target.dataset.rows = signature;
  if (!rows.length) {
    target.replaceChildren(el("p", { class: "muted", text: empty }));
    return;
  }
  const head = el("thead", {}, el("tr", {}, columns.map(([label]) => el("th", { text: label }))));
  const body = el(
    "tbody",
    {},
    rows.map((row) =>
      el(
        "tr",
        rowKey ? { dataset: { key: rowKey(row) } } : {},
        columns.map(([, cell]) => el("td", {}, cell(row) ?? "")),
      ),
    ),
  );
  target.replaceChildren(el("table", {}, head, body));
}

export function badge(state) {
  return el("span", { class: `badge badge-${String(state).replace(/[^a-z_-]/gi, "")}`, text: state });
}

export function button(label, onclick, attrs = {}) {
  return el("button", { type: "button", onclick, ...attrs }, label);
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function credits(value) {
  return value === undefined || value === null ? "—" : Number(value).toLocaleString(undefined, { maximumFractionDigits: 6 });
}

export function showError(id, error) {
  const node = document.getElementById(id);
  if (!node) return;
  node.hidden = !error;
  node.textContent = error ? String(error.message ?? error) : "";
}

// A page's refresh, of which only the latest call renders: `refresh(current, ...args)` checks `current()` after each
// await. Calls overlap (the first load, a change's refresh, the stream's, the poll's), and an answer asked for
// before a change (a key created, a machine drained) that arrives after the one asked for after it would show
// the page as it was before the change.
export function latestOnly(refresh) {
  let generation = 0;
  return (...args) => {
    const mine = ++generation;
    return refresh(() => mine === generation, ...args);
  };
}

// Call fn now and then every `ms` while the page is visible; errors are shown, not fatal.
export function every(ms, fn, onError = console.error) {
  let timer = null;
  const tick = async () => {
    try {
      await fn();
    } catch (error) {
      onError(error);
    }
    timer = setTimeout(tick, ms);
  };
  tick();
  return () => clearTimeout(timer);
}

export const isAdmin = () => document.body.dataset.role === "admin";
export const hubUrl = () => document.body.dataset.hub;
