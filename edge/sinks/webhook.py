"""POSTs each event as JSON (stdlib urllib). Events go through an on-disk spool and are
retried, in order, with an exponential back-off plus jitter, so a dead server is not hit on
every event and a fleet of Pis does not retry in step. An event whose payload the server
rejects (400, 413, 415, 422) is dead-lettered instead of blocking the ones behind it; every
other answer that is not 2xx is retried (not before its Retry-After, up to the longest back-off):
an expired token (401/403) or a moved endpoint (3xx, 404, 405, 410) is the receiver's setting,
not the event's fault, and gets one ERROR line per outage saying what to check. Redirects are not followed (urllib would resend a POST as a
GET without the event and count it delivered).

Each POST carries an `Idempotency-Key: <event_id>` header: an event whose answer was lost
(a timeout after the server processed it) is sent again, and the receiver can drop it.

Credentials in the URL (`https://user:password@host/hook`) are sent as an `Authorization: Basic`
header (unless `headers` sets Authorization): urllib would take them for part of the host."""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import unquote, urlsplit, urlunsplit

from edge.errors import check, check_range, check_url
from edge.redact import redact_url
from edge.sinks.base import MAX_TIMEOUT_S, AlertEvent, Sink, register
from edge.sinks.restamp import spooled
from edge.sinks.spool import DEFAULT_SPOOL_DIR, Spool
from edge.words import plural

log = logging.getLogger(__name__)

REJECTED = (400, 413, 415, 422)  # the payload itself is refused: sending it again can never succeed
AUTH = (401, 403)
MOVED = (404, 405, 410)  # and every 3xx
TRANSIENT_4XX = (408, 409, 425, 429)  # a timeout, the Idempotency-Key still in progress, too early, a rate limit
# The answer's body is not used. Read whole, a receiver streaming one (a URL naming a download)
# filled memory by GBs: the deadline's shutdown does not stop a read while data keeps coming.
MAX_ANSWER_BYTES = 1 << 16
DIGITS = re.compile(r"[0-9]+")  # a header's number: str.isdigit() also takes "²", which int() refuses


def advice(status: int) -> str:
    """What the operator should check after this HTTP status; "" for the receiver's own
    passing trouble (5xx, a rate limit), which clears by itself."""
    if status in AUTH:
        return "check the credentials (the user:password in sinks.webhook.url or its Authorization header)"
    if status in MOVED or 300 <= status < 400:
        return "check sinks.webhook.url (has the receiver moved?)"
    if 400 <= status < 500 and status not in TRANSIENT_4XX:
        return "check the receiver and the [sinks.webhook] settings"
    return ""


def tcp_reachable(host: str, port: int, timeout_s: float = 3.0) -> str:
    """'' when a TCP connection to host:port opens, else the reason it did not."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return ""
    except OSError as exc:
        return str(exc) or type(exc).__name__


# OpenSSL's verify codes for a certificate outside its dates (X509_V_ERR_CERT_NOT_YET_VALID,
# _HAS_EXPIRED): judged by this machine's clock, which on a Pi without RTC whose NTP has not got
# through is the last shutdown's time or 1970, so a certificate renewed since is "not yet valid".
CERT_DATES = {9: "not yet valid", 10: "expired"}
CLOCK = -1  # such a refusal among a webhook outage's causes, which are otherwise HTTP statuses (0: no answer)


def clock_refused(exc: BaseException) -> str:
    """For a certificate refused for its dates (exc, or the URLError around it): what to check,
    this machine's clock first; else ''."""
    cause = exc if isinstance(exc, ssl.SSLCertVerificationError) else getattr(exc, "reason", None)
    what = CERT_DATES.get(getattr(cause, "verify_code", None))
    if not what:
        return ""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"its certificate is {what} by this machine's clock ({now}): if that time is wrong, set it (a Pi has "
            "no real-time clock: check `timedatectl` and that the network lets it reach an NTP server, UDP 123)"
            + ("; if it is right, renew the receiver's certificate" if what == "expired" else ""))


def tls_refused(host: str, port: int, timeout_s: float = 3.0) -> tuple[str, str]:
    """('', '') when host:port completes a TLS handshake with a certificate this machine trusts for
    host (as each https POST checks it), else (why not, what every POST fails until): a port that
    merely opens says nothing of a self-signed or expired certificate, which fails every POST."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            with ssl.create_default_context().wrap_socket(sock, server_hostname=host):
                return "", ""
    except ssl.SSLCertVerificationError as exc:
        if dated := clock_refused(exc):
            return dated, "the certificate's dates hold by this machine's clock"
        why = f"certificate not trusted: {exc.verify_message or exc}"
    except OSError as exc:  # ssl.SSLError included: not TLS there (a plain http port), an old protocol
        why = str(exc) or type(exc).__name__
    return why, "the receiver's certificate is trusted on this machine"


# Its own generator: a sink thread drawing from the global one would shift what a process
# that seeded it (training, in the same Python) draws next.
_jitter = random.Random()


def jittered(delay_s: float) -> float:
    """50-100 % of a back-off delay, at random: Pis that failed together do not retry together."""
    return delay_s * _jitter.uniform(0.5, 1.0)


def split_credentials(url: str) -> tuple[str, str]:
    """(url without its `user:password@`, the matching `Basic ...` Authorization value or "")."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, ""
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])), f"Basic {token}"


class Rejected(Exception):
    """The receiver refused this event for good: retrying it can never succeed."""


class Refused(OSError):
    """A non-2xx answer worth retrying later; retry_after_s: how long the receiver asked to be left alone."""

    def __init__(self, status: int, text: str, retry_after_s: float = 0.0):
        super().__init__(f"HTTP {status} {text}")
        self.status, self.retry_after_s = status, retry_after_s


def _http_date(value: str | None) -> float | None:
    """An HTTP date (a header's) in seconds since the epoch; None when absent or unreadable."""
    try:
        when = email.utils.parsedate_to_datetime((value or "").strip())
    except (TypeError, ValueError):
        return None
    return when.timestamp() if when.tzinfo else None


def retry_after_s(value: str | None, date: str | None = None) -> float:
    """A Retry-After header (RFC 9110: seconds or an HTTP date) in seconds; 0 when absent or unreadable.
    A date is reckoned from the answer's own Date (`date`) where it has one: a Pi without RTC can
    be hours or years off the receiver's clock, which would make a date wait for nothing (the
    receiver's rate limit refusing each early try) or as long as the longest back-off."""
    value = (value or "").strip()
    if DIGITS.fullmatch(value):
        return float(value)
    when = _http_date(value)
    if when is None:
        return 0.0
    sent = _http_date(date)
    return max(0.0, when - (time.time() if sent is None else sent))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx is raised as an HTTPError and retried: a POST must not become a GET


class Deadline:
    """Ends a request that outlasts its time: urllib's timeout bounds each socket read, not the
    request, so a receiver trickling a byte a second would hold the sink for ever. At the
    deadline the request's socket is shut down, which fails the read in progress."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def connection(self, http_class):
        """http_class (an http.client connection) whose socket this deadline watches once connected."""
        def make(*args, **kwargs):
            conn = http_class(*args, **kwargs)
            connect = conn.connect

            def watched_connect() -> None:
                connect()
                with self._lock:
                    self._sock = conn.sock
                if self.expired:  # the connect itself took the time
                    self._expire()

            conn.connect = watched_connect
            return conn
        return make

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                try:  # socket.socket's own shutdown: an SSL socket's would also drop its TLS state under the reader
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
                except OSError:
                    pass  # closed already

    def end(self) -> None:
        with self._lock:
            self._sock = None
        self._timer.cancel()


def whole(resp: http.client.HTTPResponse, body: bytes) -> bool:
    """Whether body is all of the answer. http.client raises when a chunked body or one with a
    Content-Length ends early, so only a body read to the connection's end (neither) is in doubt."""
    length = resp.headers.get("Content-Length", "")
    return bool(resp.chunked) or (bool(DIGITS.fullmatch(length)) and int(length) == len(body))


class _WatchedOpen:
    """Opens each request's connection under its `deadline` (a Deadline), when it has one."""

    def do_open(self, http_class, req, **kwargs):
        deadline = getattr(req, "deadline", None)
        return super().do_open(deadline.connection(http_class) if deadline else http_class, req, **kwargs)


class _HTTPHandler(_WatchedOpen, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_WatchedOpen, urllib.request.HTTPSHandler):
    pass


def _opener() -> urllib.request.OpenerDirector:
    """A new opener for each POST (alerts are rare): from Python 3.13 an HTTPSHandler holds the TLS
    context made with it, so one opener for the process would never see a CA trusted after the
    start (a store's own, as edge doctor advises), where 3.11 makes one for each connection."""
    return urllib.request.build_opener(_NoRedirect, _HTTPHandler, _HTTPSHandler)


HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)


@dataclass
class WebhookSinkConfig:
    """Alert sink: each event POSTed as JSON; undelivered events are spooled and retried."""

    url: str = ""  # where events are POSTed, e.g. `"https://hooks.example.com/queue-mood"`
    timeout_s: float = 5.0  # give up on one attempt after this long (it is retried later)
    headers: dict = field(default_factory=dict)  # extra HTTP headers, e.g. `{"Authorization" = "Bearer TOKEN"}`

    def validate(self, p):
        check_url(self.url, f"{p}.url", ("http", "https"), redact_url(self.url))
        check_range(self.timeout_s, 0, MAX_TIMEOUT_S, f"{p}.timeout_s", "seconds", lo_open=True)
        for name, value in self.headers.items():
            where = f"{p}.headers.{name}"
            check(bool(HEADER_NAME.match(name)), where, name, "a header name of letters, digits and -")
            # CR/LF would end the header and let the value inject others; the value is not echoed (a token).
            check(isinstance(value, str) and not set(value) & set("\r\n\0"), where, value,
                  "a string without line breaks", "(hidden)")


@register
class WebhookSink(Sink):
    key = "webhook"
    Config = WebhookSinkConfig
    order = 20
    spooled = True  # build_sinks passes spool=Spool(<spool_dir>/webhook)

    def __init__(self, url: str, timeout_s: float = 5.0, headers: dict | None = None, *,
                 spool: Spool | None = None, retry_min_s: float = 2.0, retry_max_s: float = 120.0):
        self.url, basic_auth = split_credentials(url)
        self.shown_url = redact_url(url)  # credentials and tokens in the path or query never reach the log
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json", "User-Agent": "queue-mood", **(headers or {})}
        if basic_auth and not any(name.lower() == "authorization" for name in self.headers):
            self.headers["Authorization"] = basic_auth
        self.spool = spool if spool is not None else Spool(DEFAULT_SPOOL_DIR / self.key)
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.delivered = 0
        self._delay = 0.0  # current back-off (undithered); 0 while the server answers
        self._next_try = 0.0  # monotonic time before which nothing is sent
        self._reported: set[int] = set()  # statuses (0: no answer, CLOCK) of the current outage already logged

    def _post(self, payload: dict) -> None:
        headers = {**self.headers, "Idempotency-Key": str(payload.get("event_id", ""))}
        req = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        req.deadline = Deadline(self.timeout_s)  # timeout_s for the whole request, not for each read
        try:
            with _opener().open(req, timeout=self.timeout_s) as resp:  # a status >= 300 raises HTTPError
                body = resp.read(MAX_ANSWER_BYTES + 1)  # a longer answer is not read on: its status is the answer
                if len(body) <= MAX_ANSWER_BYTES and not whole(resp, body):
                    # The deadline can pass just after a whole answer was read: that one was delivered.
                    if req.deadline.expired:
                        raise TimeoutError  # cut off: no answer, however it parsed
                    length = resp.headers.get("Content-Length", "")
                    if DIGITS.fullmatch(length):  # read(amt) returns a cut answer where read() raised
                        raise http.client.IncompleteRead(body, int(length) - len(body))
                if not 200 <= resp.status < 300:
                    raise Refused(resp.status, resp.reason)
        except urllib.error.HTTPError as exc:
            if exc.code in REJECTED:
                raise Rejected(f"HTTP {exc.code} {exc.reason}") from None
            answer = exc.headers or {}
            moved_to = answer.get("Location") if 300 <= exc.code < 400 else None
            raise Refused(exc.code, str(exc.reason) + (f" to {redact_url(moved_to)}" if moved_to else ""),
                          retry_after_s(answer.get("Retry-After"), answer.get("Date"))) from None
        except (OSError, http.client.HTTPException):
            if req.deadline.expired:  # the shut-down socket's error would hide why
                raise TimeoutError(f"no complete answer within timeout_s ({self.timeout_s:g} s)") from None
            raise
        finally:
            req.deadline.end()
        self.delivered += 1

    def _failed(self, exc: Exception) -> None:
        self._delay = min(max(2 * self._delay, self.retry_min_s), self.retry_max_s)
        # A rate limit's (429) or an overloaded receiver's (503) Retry-After is honoured, up to
        # retry_max_s: trying sooner earns more refusals, and some services revoke a hook that does.
        asked = min(exc.retry_after_s, self.retry_max_s) if isinstance(exc, Refused) else 0.0
        self._next_try = time.monotonic() + max(jittered(self._delay), asked)
        dated = clock_refused(exc)
        # a certificate refused for its dates is a cause of its own (CLOCK): said after a network
        # error that began the outage (the Pi's network up after its first alert), as a status is
        status = exc.status if isinstance(exc, Refused) else CLOCK if dated else 0
        if status in self._reported or (not status and self._reported):
            return  # once per outage and cause, not once per retry
        first = not self._reported
        self._reported.add(status)
        what = advice(status)
        if what:  # a setting to fix: nothing arrives until someone does
            log.error("Webhook %s answered %s: %s; events are spooled and retried with back-off.",
                      self.shown_url, exc, what)
        elif dated:  # the same, and the likelier fix is this machine's
            log.error("Webhook %s refused: %s; events are spooled and retried with back-off.", self.shown_url, dated)
        elif first:
            log.warning("Webhook %s failed (%s); spooling events, retrying with back-off.", self.shown_url, exc)

    def _succeeded(self) -> None:
        if self._reported:
            log.info("Webhook %s reachable again.", self.shown_url)
        self._reported.clear()
        self._delay = self._next_try = 0.0

    def _drain(self) -> None:
        for event_id, payload in self.spool.pending():
            if not isinstance(payload, dict):  # valid JSON, but not what put() writes (a hand edit): never sendable
                self.failed += 1
                self.spool.dead_letter(event_id, "its spool file does not hold a JSON object")
                continue
            try:
                self._post(payload)
            except Rejected as exc:
                self.failed += 1
                self.spool.dead_letter(event_id, f"webhook {self.shown_url} answered {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - any other failure means "try later"
                self.failed += 1
                self._failed(exc)
                return
            self.spool.ack(event_id)
        self._succeeded()

    def send(self, event: AlertEvent) -> None:
        # On disk before the first try (alerts are rare, the write is small): a stop or a crash
        # during a request that hangs loses nothing, and order is kept behind older events.
        self.spool.put(spooled(event))
        self.flush()

    def keep(self, event: AlertEvent) -> bool:
        self.spool.put(spooled(event))
        return True

    def flush(self) -> None:
        if len(self.spool) and time.monotonic() >= self._next_try:
            self._drain()

    def close(self) -> None:
        if len(self.spool):
            self._drain()  # one last try on shutdown, back-off or not; the rest stays on disk

    def check(self) -> str:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        why = tcp_reachable(parts.hostname or "", port)
        backlog = f"; {plural(len(self.spool), 'event')} spooled" if len(self.spool) else ""
        if why:
            return f"webhook {parts.hostname}:{port} not reachable ({why}){backlog}"
        why, until = tls_refused(parts.hostname or "", port) if parts.scheme == "https" else ("", "")
        if why:  # "failed": the doctor FAILs it, as a setting to fix (nothing arrives until then)
            return (f"webhook {parts.hostname}:{port} reachable, but its TLS handshake failed ({why}): every POST "
                    f"fails until {until}{backlog}")
        return f"webhook {parts.hostname}:{port} reachable{backlog}"
