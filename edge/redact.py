"""Credentials out of URLs before they are shown (/status, errors) or logged: `redact_url`
keeps what an operator needs to recognise the target (scheme, host, port, a short first path
segment) and replaces user:password, the rest of the path and the query, which commonly carry tokens
(`https://hooks.example/services/T0/B0/SECRET`, `rtsp://admin:pw@cam/...`, `?token=...`)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 and C1 control characters
# A URL in text ends at a space or a quote (a repr, JSON), but its user:password may hold quotes
# (RFC 3986 allows ' there unencoded): up to its last @ it is taken whole, else the
# part of a password after a quote was printed.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^\s/]*@)?[^\s'\"]+")
TOKEN_LEN = 24  # a path segment this long is treated as a secret even when it comes first


def redact_url(url: str) -> str:
    """`url` with credentials, path beyond its first segment, query and fragment hidden.

    Strings that are not URLs (a file path, a camera index) come back unchanged.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unparseable URL may still hold a secret: show only the scheme
        return f"{url.split('://', 1)[0]}://{HIDDEN}"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = (f"{HIDDEN}@" if parts.username or parts.password else "") + host + (f":{port}" if port else "")
    segments = [s for s in parts.path.split("/") if s]
    path = ""
    if segments:
        first = segments[0] if len(segments[0]) < TOKEN_LEN else HIDDEN
        path = "/" + first + ("/" + HIDDEN if len(segments) > 1 and first != HIDDEN else "")
    query = HIDDEN if parts.query else ""
    fragment = HIDDEN if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (a source's description, a log line); text
    without URLs comes back unchanged."""
    return _URL.sub(lambda m: redact_url(m.group()), text)


def escape_controls(text: str) -> str:
    """text with its control characters written as \\xNN: a journal line gets no raw bytes, no
    terminal escape sequence and no line break that would make the rest pass for a line of its own."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
