// The page's one Server-Sent Events stream (/api/dashboard/stream): `now`, `request`, `event`, `agent`
// and `dropped` events. Where the hub does not serve it, `fallback` runs instead (polling).
const handlers = new Map();
let source = null;
let opened = false;
const fallbacks = [];

export function on(event, handler) {
  if (!handlers.has(event)) {
    handlers.set(event, []);
    if (source) listen(event);
  }
  handlers.get(event).push(handler);
}

function listen(event) {
  source.addEventListener(event, (message) => {
    let body;
    try {
      body = JSON.parse(message.data);
    } catch {
      return;
    }
    for (const handler of handlers.get(event) ?? []) handler(body);
  });
}

// Open the stream; if it never opens (no such endpoint, or no session), run the fallbacks once.
export function connect() {
  source = new EventSource("/api/dashboard/stream");
  for (const event of handlers.keys()) listen(event);
  source.addEventListener("open", () => {
    opened = true;
  });
  source.addEventListener("error", () => {
    if (!opened && source.readyState === EventSource.CLOSED) {
      for (const fallback of fallbacks.splice(0)) fallback();
    }
  });
}

export function otherwise(fallback) {
  fallbacks.push(fallback);
}
