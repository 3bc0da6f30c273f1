"""Credentials out of URLs before the status server shows them or the service logs them.

A stand-in until the shared `edge.redact` lands (issue 13); `redact_text` applies the same
rule to every URL inside a longer string such as a source's description."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def redact_url(url: str) -> str:
    """`url` without user:password, query or fragment (where tokens travel); the scheme, host,
    port and path stay so an operator still recognises the camera or endpoint."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # unparseable: it may still hold a secret, so show only the scheme
        return f"{url.split('://', 1)[0]}://{HIDDEN}"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{HIDDEN}@" if parts.username or parts.password else "") + host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, HIDDEN if parts.query else "",
                       HIDDEN if parts.fragment else ""))


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted; text without URLs comes back unchanged."""
    return _URL.sub(lambda m: redact_url(m.group()), text)
