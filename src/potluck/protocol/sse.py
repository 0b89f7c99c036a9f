"""Server-sent events as OpenAI streams them: ``data: <json>\\n\\n`` ... ``data: [DONE]\\n\\n``.

`SSEUsageScanner` sees the stream's bytes once, as they pass, and (1) returns only whole events,
so whatever the hub appends after them (a terminal error event) never lands inside one, (2) picks
the usage out of the chunk that carries it, and (3) optionally removes a usage-only chunk the
client did not ask for. It never re-encodes an event it keeps.
"""

from __future__ import annotations

import re

import msgspec

from potluck.protocol.agent import Usage
from potluck.protocol.openai import UsageEnvelope

DONE_EVENT = b"data: [DONE]\n\n"
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_EVENT_END = re.compile(rb"\r?\n\r?\n")
_decode_usage = msgspec.json.Decoder(UsageEnvelope).decode


def whole_events_end(data: bytes) -> int:
    """Where the last whole event of ``data`` ends (after its blank line, LF or CRLF); 0 when none is whole."""
    cut = data.rfind(b"\n\n")
    if cut >= 0:
        return cut + 2
    cut = data.rfind(b"\r\n\r\n")  # CRLF framing, which some servers use
    return cut + 4 if cut >= 0 else 0


def error_event(body: bytes) -> bytes:
    """A terminal error as an SSE event (OpenAI's shape: the error object as data)."""
    return b"data: " + body + b"\n\n"


class SSEUsageScanner:
    __slots__ = ("_pending", "error", "strip_usage", "usage")

    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self.usage: Usage | None = None
        self.error: None = None
        """Always None: SSE carries its errors in-band, as events the client reads."""
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes from the backend; return the complete events to relay now."""
        if self._pending:
            data = self._pending + data
        cut = whole_events_end(data)
        if not cut:
            self._pending = data
            return b""
        if cut == len(data):
            complete, self._pending = data, b""
        else:
            complete, self._pending = data[:cut], data[cut:]
        match = _USAGE_OBJECT.search(complete)
        if match is not None:
            complete = self._take_usage(complete, match)
        return complete

    def finish(self) -> bytes:
        """What is left when the backend closes: a final event without its blank line."""
        rest, self._pending = self._pending, b""
        match = _USAGE_OBJECT.search(rest) if rest else None
        if match is not None:
            rest = self._take_usage(rest + b"\n\n", match)
        return rest

    def abort(self, message: str) -> bytes:
        """Nothing: a stream relayed untouched that breaks off gets its terminal error event from the hub."""
        return b""

    def _take_usage(self, events: bytes, match: re.Match[bytes] | None) -> bytes:
        """Read the usage of the event(s) holding a usage object; drop unwanted usage-only ones.

        ``match`` is the first usage object in ``events``. Only the events around a match are looked
        at, and every byte is searched once: a burst of many events costs one pass.
        """
        kept: list[bytes] = []
        pos = 0  # start of what is not yet copied to `kept`
        while match is not None:
            start = _event_start(events, match.start())
            end_match = _EVENT_END.search(events, match.end())
            end = len(events) if end_match is None else end_match.end()
            body_end = len(events) if end_match is None else end_match.start()
            if self._is_unwanted_usage(events[start:body_end]):
                kept.append(events[pos:start])
                pos = end
            match = _USAGE_OBJECT.search(events, end)
        if not kept:
            return events
        kept.append(events[pos:])
        return b"".join(kept)

    def _is_unwanted_usage(self, event: bytes) -> bool:
        """Record the event's usage; True if it is a usage-only chunk the client did not ask for."""
        payload = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
        try:
            chunk = _decode_usage(payload)
        except msgspec.DecodeError:
            return False
        if chunk.usage is None:
            return False
        self.usage = chunk.usage
        return self.strip_usage and not chunk.choices


def _event_start(events: bytes, index: int) -> int:
    """Where the event containing ``index`` begins: after the previous blank line (LF or CRLF)."""
    lf = events.rfind(b"\n\n", 0, index)
    # A CRLF blank line matters only after the last LF one (the two cannot overlap so as to end
    # later): searching from there keeps a burst of LF events from being scanned twice.
    crlf = events.rfind(b"\r\n\r\n", max(lf, 0), index)
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def usage_from_json(body: bytes) -> Usage | None:
    """Usage of a non-streamed response, or None when it has none or is not JSON."""
    try:
        return _decode_usage(body).usage
    except msgspec.DecodeError:
        return None


def add_include_usage(body: bytes) -> bytes:
    """Ask the backend for a usage chunk, keeping every other field of the client's body.

    When the body has no ``stream_options`` key the field is spliced in after the opening brace,
    leaving every other byte as the client sent it; otherwise the object is decoded and re-encoded.
    """
    stripped = body.lstrip()
    if not stripped.startswith(b"{"):
        return body
    if b'"stream_options"' not in body:
        rest = stripped[1:].lstrip()
        sep = b"" if rest.startswith(b"}") else b","
        return b'{"stream_options":{"include_usage":true}' + sep + stripped[1:]
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body
    if not isinstance(obj, dict):
        return body
    options = obj.get("stream_options")
    if not isinstance(options, dict):
        options = {}
    options["include_usage"] = True
    obj["stream_options"] = options
    return msgspec.json.encode(obj)
