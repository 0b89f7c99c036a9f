"""What of an agent's response head may reach a client: the hub trusts no agent's headers.

An agent is run by someone else, and its response is served on the hub's origin. So the hub checks
every head itself, once per response, whatever the agent claims to have filtered:

- A malformed head (a status outside 200-299 and 400-599, a header name that is not an HTTP token, a
  control character such as CR or LF in a value, a content-length that is not one decimal number, too
  many or too large headers) fails the request with 502 ``upstream_error`` before anything reaches the
  client, and the stream is reset.
- A successful answer must be ``application/json`` or ``text/event-stream``: anything else (``text/html``
  first of all) is refused the same way, so no page an agent writes is ever served from the hub.
- Only `RELAYED_HEADERS` go on; ``Set-Cookie``, CORS headers, ``Location`` and the rest never do.
"""

from __future__ import annotations

import re

from potluck.hub.errors import UpstreamError
from potluck.protocol.agent import HeadMessage

RELAYED_HEADERS = frozenset({"content-type", "content-length", "retry-after"})
"""The only response headers an agent's head contributes (lower case); the hub sets the others."""

RELAYED_CONTENT_TYPES = frozenset({"application/json", "text/event-stream"})
"""Media types of a successful answer the hub relays (an error's body is always rewrapped as JSON)."""

MAX_HEADERS = 64
MAX_HEADER_BYTES = 8192
"""Per header name, and per value."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_LENGTH = re.compile(r"[0-9]{1,15}")
_COMMON = {
    spelling: name
    for name in ("content-type", "content-length", "retry-after", "cache-control", "x-request-id")
    for spelling in (name, name.title())
}


class MalformedHeadError(UpstreamError):
    """The agent's head is malformed or not allowed: the client gets 502, another agent may be tried."""

    def __init__(self, message: str) -> None:
        super().__init__(f"the agent sent a response the hub does not relay: {message}", retriable=True)


def checked_head(head: HeadMessage) -> HeadMessage:
    """The head as it may reach a client (only `RELAYED_HEADERS`); raises MalformedHeadError."""
    status = head.status
    if not (200 <= status <= 299 or 400 <= status <= 599):
        raise MalformedHeadError(f"status {status}")
    headers = head.headers
    if len(headers) > MAX_HEADERS:
        raise MalformedHeadError(f"{len(headers)} headers")
    kept: dict[str, str] = {}
    for name, value in headers:
        lower = _COMMON.get(name)  # the names every head carries skip the token check
        if lower is None:
            if len(name) > MAX_HEADER_BYTES or not _TOKEN.fullmatch(name):
                raise MalformedHeadError(f"header {name[:64]!r}")
            lower = name.lower()
        if len(value) > MAX_HEADER_BYTES or not _VALUE.fullmatch(value):
            raise MalformedHeadError(f"header {name[:64]!r}")
        if lower in RELAYED_HEADERS:
            _keep(kept, lower, value.strip(" \t"))
    if status < 400:
        media = kept.get("content-type", "").partition(";")[0].strip().lower()
        if media not in RELAYED_CONTENT_TYPES:
            raise MalformedHeadError(f"content type {media or 'missing'!r}")
    return HeadMessage(status, list(kept.items()))


def _keep(kept: dict[str, str], name: str, value: str) -> None:
    seen = kept.get(name)
    if name == "content-length" and not _LENGTH.fullmatch(value):
        raise MalformedHeadError(f"content-length {value[:64]!r}")
    if seen is not None and seen != value:  # two lengths (or types) that disagree: which one would a client take?
        raise MalformedHeadError(f"two {name} headers")
    kept[name] = value
