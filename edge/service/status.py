"""The local status server: a live page for the store manager at `/`, JSON at `/status` and
`/history`, and Prometheus metrics at `/metrics`. Read-only (GET/HEAD only) and never an
image: the page shows counts and shares, as the sinks do.

Safe to leave running for months: loopback unless `[status] host` says otherwise, and then
a token or basic-auth password is required (compared in constant time); without either, only
requests addressed to this machine by a name no other site can take are answered (LocalNames:
DNS rebinding); URLs with
credentials are redacted; idle connections time out; the number of handler threads is
capped (extra clients get 503 at once), one host on the network may hold at most half of
them, and a connection that has not sent its request is cut to make room; a host asking faster
than any page or scrape does is answered 429, a second late, before anything else is done
(Rates); a host guessing credentials (an IPv6 one: its /64, host_key) is refused for a while
(Guesses); clients that hang up are logged at debug level."""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import math
import re
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from time import tzset  # apart from `time`, whose clocks tests replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from edge.errors import UserError
from edge.labels import LABELS
from edge.outages import FLAP_WINDOW_S
from edge.service import health
from edge.service.health import wall_iso
from edge.service.history import History
from edge.redact import escape_controls, redact_text
from edge.release import current as current_release

if TYPE_CHECKING:  # edge.config pulls in the plugin registries (and numpy); /metrics does not need them
    from edge.config import StatusConfig

log = logging.getLogger(__name__)

HEALTH_EVERY_S = 5.0  # sysfs reads are cheap, but not per request
COOKIE = "qm_token"
POLL_HEADER = "X-Queue-Mood-Poll"  # sent by the page's own polls of /status and /history (web/app.js)
COOKIE_MAX_AGE_S = 30 * 24 * 3600  # renewed by every answer to it: the idle time that signs a browser out
_QUERY = re.compile(r"\?[^\s\"]*")  # a link's ?token= never reaches the log
REFUSAL_LOG_EVERY_S = 60.0
GUESSES_MAX, GUESS_WINDOW_S = 20, 60.0  # different wrong credentials a host may offer in a window (Guesses)
HOSTS_MAX = 1024  # hosts a per-host table (Guesses: host_key, an IPv6 one by its /64; Rates) remembers
# Requests a host may make: RATE_BURST at once, then RATE_PER_S a second (Rates). The page asks
# for /status every 2 s and /history every 10 s; a load is at most 7 (the link's redirect, the
# page, its script and style, a favicon, the first two polls); Prometheus scrapes every 15 s or so.
RATE_PER_S, RATE_BURST = 10.0, 30
# A request past the rate is answered this late, its socket held (no thread): a client asking again
# as soon as it is answered, as a reload loop or a script does, then asks once a second a connection,
# not thousands of times (measured on a 2-core AMD EPYC with AVX-512 VNNI: 8 connections cost the
# monitor 0.43 core answered at once, nothing to see held; README). At most HOLD_MAX held (one file
# each: a service may open 1,024), then answered at once.
HOLD_S, HOLD_MAX = 1.0, 256
DATA_PATHS = ("/status", "/history", "/metrics")  # served beside the page's assets
# What a request's head may take: its line (http.server stops it at 64 KiB) and headers. Left to
# http.server, 100 header lines of 64 KiB each cost the parse some 30 MB a connection, all before
# the credentials are looked at; a browser's, cookies and all, is well under 8 KiB.
REQUEST_LINE_MAX = 65537
HEADERS_MAX = 32 * 1024
# Kept as time.monotonic() and turned into this machine's time at each snapshot: a Pi without RTC
# boots with its clock behind (fake-hwclock: the last shutdown's) and NTP steps it later, so a
# time stamped by the wall clock before that would read "clear since 27 Nov (72 h)" until the next
# change. A string there (a stand-in or a picture setting the time itself) is shown as it is.
STAMPS = ("started_at", "alert_state_since", "alert_raised_at", "face_seen_at")


def _loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback  # ::ffff:127.0.0.2 on a dual-stack bind too


def host_key(address: str) -> str:
    """What the guess limit (Guesses) counts a client address as: an IPv4 address (::ffff:10.0.0.5
    on a dual-stack bind too) or loopback as itself, any other IPv6 address as its /64. An IPv6
    host is given a whole /64 (SLAAC, privacy addresses) and may take any address in it at will:
    counted per address, one laptop could guess without limit. Hosts sharing a /64 (a store's LAN)
    share the limit, which only guessing reaches. The request rate and the share of connections
    stay per address: they are there for a page reloading in a loop or a scrape set too fast, which
    keep their address, and per /64 every browser on such a LAN would share one page's allowance."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    ip = getattr(ip, "ipv4_mapped", None) or ip
    if ip.version == 4 or ip.is_loopback:
        return str(ip)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))  # a link-local one's zone (%eth0) dropped


def _named(address: str) -> str:
    """A client for a log line: its own address, and the /64 its guesses count as (host_key)."""
    key = host_key(address)
    return f"{address} (counted as {key})" if "/" in key else address


ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}
SECURITY_HEADERS = {
    # Nothing external, no images at all (privacy), no framing; the page's token never leaks in a Referer.
    "Content-Security-Policy": "default-src 'self'; img-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def local_zone(wall: float) -> dict:
    """This machine's time zone at `wall`: its offset from UTC (`utc_offset_s`, east positive) and its
    name as the system gives it (`time_zone`: "CET", "BST", or "+03" where the zone has none). The
    times in /status stay UTC; the page shows them as the store's local time, as its staff read a
    clock, and names the zone where the browser's differs (a manager at head office elsewhere)."""
    local = datetime.fromtimestamp(wall, timezone.utc).astimezone()
    return {"utc_offset_s": int(local.utcoffset().total_seconds()), "time_zone": local.tzname() or ""}


def zones(times) -> list[dict]:
    """This machine's zone over `times` (seconds: the times an answer holds), as the page needs it
    to show each in the local time of its own day, not of today's (an alert raised before the
    clocks went forward would read an hour off): one entry per zone in force among them, oldest
    first, each in force from its `from` (the first one before it too). Usually one entry; a change
    between two of the times is found to the second, so the chart's axis is right across it."""
    out: list[dict] = []
    last_t = last = None
    for t in sorted({math.floor(t) for t in times if math.isfinite(t)}):
        try:
            zone = local_zone(t)
        except (OverflowError, OSError, ValueError):  # a time no calendar has: shown without a zone of its own
            continue
        if last is None:
            out.append({"from": t, **zone})
        elif zone != last:
            lo, hi = last_t, t  # the change falls in (lo, hi]
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if local_zone(mid) == last else (lo, mid)
            out.append({"from": hi, **zone})
        last_t, last = t, zone
    return out


def _seconds(stamp) -> float | None:
    """An ISO time of /status in seconds; None for anything else (null, a stand-in's odd string)."""
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


class Stats:
    """Written by the pipeline thread, read by the HTTP threads; a lock keeps snapshots whole."""

    def __init__(self, runtime: str, model: str, source: str, *, device: str = "", labels=LABELS,
                 negative=(), history: History | None = None, alert_advice: str = "", release: dict | None = None):
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.history = history or History()
        # Until the first frame (or the camera is declared down) nothing has been watched: the
        # alert state is "starting" and the share unknown (None), never a clear queue of 0 faces.
        self.data = {"device": device, "runtime": runtime, "model": model, "source": redact_text(source),
                     "release": release or current_release(),  # which build head office is looking at
                     "started_at": self.started, "alert_state_since": self.started, "frames": 0, "dropped_frames": 0, "fps": 0.0, "faces": 0,
                     "negative_share": None, "counts": dict.fromkeys(labels, 0), "alert_state": "starting",
                     "alert_raised_at": None, "alert_held_back_until": None, "alert_advice": alert_advice, "alerts_raised": 0, "negative": list(negative), "stage_ms": {},
                     "sink_failures": {}, "camera": "up", "camera_down_total": 0, "camera_read_failures": 0,
                     "camera_reopens": 0, "frame_size": None, "sinks": {},
                     # a camera knocked askew or covered delivers frames and looks calm: when it last
                     # saw a face (None: not since the start), and a counter head office compares by week
                     "face_seen_at": None, "face_frames": 0}
        self._last_t: float | None = None
        self._dt: float | None = None  # running mean of the time between frames
        self._before_down: tuple[str, float] | None = None  # (alert state, since) when the camera went down
        self._health: dict = {}
        self._health_t = -HEALTH_EVERY_S
        self._cpu = health.CpuShare(HEALTH_EVERY_S)
        self._disks: health.DiskSpace | None = None  # the state folders' disks, once edge run names them
        self._settle_at = 0.0  # time.monotonic() of the next look whether NTP has set the clock (_settle)

    def update(self, result, dropped: int, stage_ms: dict):
        now, wall = time.monotonic(), time.time()
        with self._lock:
            d = self.data
            if self._last_t is not None and now > self._last_t:
                # Average the frame interval, not its inverse: frames that come in bursts (a detector
                # frame, then carried ones) would otherwise read as thousands of fps.
                dt = now - self._last_t
                self._dt = dt if self._dt is None else 0.9 * self._dt + 0.1 * dt
                d["fps"] = 1.0 / self._dt
            self._last_t = now
            d["frames"] += 1
            d["camera"] = "up"
            d["dropped_frames"] = dropped
            d["faces"] = result.mood.faces
            if result.mood.faces:
                d["face_seen_at"] = now
                d["face_frames"] += 1
            d["negative_share"] = round(result.mood.negative_share, 4)
            d["counts"] = {**d["counts"], **result.mood.counts}
            if result.alert_state != d["alert_state"]:  # a transition, the first frame, or the camera back
                # back from an outage with the alert still raised (the monitor bridged it): the same alert,
                # raised since then, not now (a clear queue is watched again from now)
                before = self._before_down
                d["alert_state_since"] = before[1] if before and before[0] == result.alert_state == "raised" else now
            self._before_down = None
            d["alert_state"] = result.alert_state
            # the queue unhappy again while the cooldown after a clear holds a new alert back: until when
            held = result.held_back_s
            d["alert_held_back_until"] = None if held is None else wall_iso(wall + held)
            d["stage_ms"] = {k: round(v, 3) for k, v in stage_ms.items()}
            if result.transition:
                d["alerts_raised"] += result.transition == "raised"
                d["alert_raised_at"] = now if result.transition == "raised" else None
                self.history.add_alert(wall, result.transition, result.mood.negative_share, result.mood.faces,
                                       clock_set=health.clock_synced() is not False, mono=now)
            self.history.add(wall, result.mood.negative_share, result.mood.faces, result.alert_state == "raised")
            self._settle(now, wall)

    def _settle(self, now: float, wall: float) -> None:
        """Alerts raised before NTP set the clock, stamped again at their true time once it has
        (History.settle): else the page and the history file keep "1 Jan 1970" for one raised
        minutes ago. Looked at every HEALTH_EVERY_S, from frames and answers: a frame pays one comparison."""
        if now < self._settle_at:
            return
        self._settle_at = now + HEALTH_EVERY_S
        if self.history.unsettled and health.clock_synced() is not False:
            self.history.settle(wall, now)

    def camera_down(self, last_frame: float | None = None):
        """No frames: nothing is known about the queue, so no mood and no alert is asserted. Down
        since `last_frame` (its time.monotonic(); else now): the chart's blank stretch starts there,
        not down_after_s later when the watch declared it, and so do the card's and the list's."""
        with self._lock:
            now = time.monotonic()
            since = now if last_frame is None else min(last_frame, now)
            if self.data["alert_state"] != "unknown":
                self._before_down = (self.data["alert_state"], self.data["alert_state_since"])
            self.data.update(camera="down", fps=0.0, faces=0, negative_share=None, alert_state="unknown",
                             alert_state_since=since, alert_held_back_until=None,
                             counts=dict.fromkeys(self.data["counts"], 0))
            self.data["camera_down_total"] += 1
            self._outage("down", now - since)
            self._last_t = self._dt = None  # the fps average restarts with the next frame

    def camera_up(self):
        with self._lock:
            self.data["camera"] = "up"
            self._outage("up")

    def _outage(self, kind: str, ago_s: float = 0.0) -> None:
        """The outage's start or end (`ago_s` seconds ago) in the history, for the page's list of recent alerts and outages."""
        now = time.monotonic()
        self.history.add_outage(time.time() - ago_s, kind, clock_set=health.clock_synced() is not False, mono=now - ago_s)

    def set_source(self, read_failures: int, reopens: int, frame_size: tuple[int, int] | None = None):
        """A live source's failed reads and reopen attempts since the start (0 for a recording),
        and the size of the frames it delivers ("WxH"; None for a recording, or before a frame)."""
        with self._lock:
            self.data.update(camera_read_failures=read_failures, camera_reopens=reopens,
                             frame_size="x".join(map(str, frame_size)) if frame_size else None)

    def set_disks(self, folders: dict):
        """Report the free space of these folders' disks with the health readings (health.DiskSpace)."""
        self._disks, self._health_t = health.DiskSpace(folders), -HEALTH_EVERY_S  # read at the next snapshot

    def set_sinks(self, sinks: dict):
        """Per-sink delivery counts from Fanout.stats(); their failures are also `sink_failures`, so
        every sink's counter is there from the start and still moves while no frames come."""
        with self._lock:
            self.data["sinks"] = sinks
            self.data["sink_failures"] = {key: s.get("failures", 0) for key, s in sinks.items()}

    def snapshot(self) -> dict:
        """What /status shows: the current mood, alert (and since when its state holds:
        `alert_state_since`), recent alerts and health, and this machine's time (`now`): every time here is by its clock, which on a Pi without NTP can be
        hours or days off the browser's, so the page reckons how long ago by it. Times are UTC;
        `utc_offset_s` and `time_zone` say this machine's local time now (local_zone), `zones` at
        each time given here (zones). `outage_join_s`: outages starting within it of the end of the one
        before are one line on the page (a flapping camera), as the sinks are told of one per such window."""
        now = time.monotonic()
        if now - self._health_t >= HEALTH_EVERY_S:  # outside the lock: sysfs may be slow
            # A zone set since the start (timedatectl set-timezone, often on the first day): the C
            # library reads /etc/localtime again only when told, and the page's times follow it.
            tzset()
            disks = {"disks": self._disks.read()} if self._disks else {}
            self._health, self._health_t = {**health.read(), **disks, "process_cpu_share": self._cpu.sample()}, now
        with self._lock:
            now, wall = time.monotonic(), time.time()
            d = json.loads(json.dumps(self.data))
            for key in STAMPS:
                if isinstance(d[key], (int, float)):
                    d[key] = wall_iso(wall - (now - d[key]))
            self._settle(now, wall)
            alerts = self.history.recent_alerts(wall, now)
            # raised still: so too while the camera is down, if it was when the camera went (the alert bridges an outage)
            raised = (self._before_down or (d["alert_state"],))[0] if d["camera"] == "down" else d["alert_state"]
            periods = self.history.periods(wall, now, raised=raised == "raised", down=d["camera"] == "down")
            shown = [wall, *(a["t"] for a in alerts), *(e["t"] for p in periods for e in (p["start"], p["end"]) if e),
                     *map(_seconds, (d[k] for k in (*STAMPS, "alert_held_back_until")))]
            return {**d, "now": wall_iso(wall), **local_zone(wall), "zones": zones(t for t in shown if t is not None),
                    "uptime_s": round(now - self.started, 1), "health": dict(self._health), "recent_alerts": alerts,
                    "alert_periods": periods, "outage_join_s": FLAP_WINDOW_S}

    def series(self) -> dict:
        """What /history shows: the chart's points over the last span, and this machine's time
        (`now`, in seconds like the points' `t`): the chart ends there, not at the browser's.
        `zones` covers the span, whose axis may cross a change of the clocks."""
        with self._lock:
            wall = time.time()
            points = self.history.series(wall)
            # the span's ends (its first point may be a step older): a change between them is found to the second
            span = (wall - self.history.span_s, *(p["t"] for p in points[:1]), wall)
            return {"step_s": self.history.step_s, "span_s": self.history.span_s, "now": round(wall, 3),
                    **local_zone(wall), "zones": zones(span), "points": points}


def _page_cookies(headers) -> list[str]:
    """The values of this page's cookie (COOKIE) in a request's Cookie header."""
    parts = (p.strip().partition("=") for p in (headers.get("Cookie") or "").split(";"))
    return [value for name, _, value in parts if name == COOKIE]


class Auth:
    """A bearer token (header, the page's cookie, or ?token= once in a link) and/or a basic-auth
    user and password, for people; a metrics token (a bearer header, /metrics only) for head
    office's scrape. With none configured everything is allowed (loopback only: the config
    refuses another host without one)."""

    def __init__(self, token: str = "", user: str = "", password: str = "", metrics_token: str = ""):
        self.token, self.user, self.password = token.encode(), user.encode(), password.encode()
        self.metrics_token = metrics_token.encode()
        # The cookie holds a value made from the token, not the token: browsers send a host's
        # cookies to every port on it (another web service on the Pi), and it opens the page only.
        self._cookie = base64.urlsafe_b64encode(hmac.digest(self.token, b"queue-mood page cookie", "sha256")
                                                ).rstrip(b"=") if token else b""

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.password or self.metrics_token)

    def _token_ok(self, given: str, token: bytes | None = None) -> bool:
        token = self.token if token is None else token
        return bool(token) and hmac.compare_digest(given.encode(), token)

    def _basic_ok(self, encoded: str) -> bool:
        if not self.password:
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # both compared, always: the time taken does not say which one was wrong
        return hmac.compare_digest(user, self.user) & hmac.compare_digest(password, self.password)

    @staticmethod
    def presented(headers, query: dict) -> bytes:
        """What a request offers as credentials (its link's token, Authorization, this page's cookie),
        as one value: b"" when it offers none."""
        return "\n".join([query.get("token", [""])[0], headers.get("Authorization") or "", *_page_cookies(headers)]
                         ).strip().encode()

    def check(self, headers, query: dict, path: str = "/") -> str:
        """How the request is allowed: "link" (its ?token=), "cookie", "header", "open" (no
        credentials configured), or "" when it is not; "renew" for a cookie from before the cookie
        was made from the token (it held the token itself), which the answer replaces. The link's
        token is looked at first, so opening the link again renews the cookie and takes the token
        out of the address bar."""
        if not self.enabled:
            return "open"
        given = query.get("token", [""])[0]
        if given and self._token_ok(given):
            return "link"
        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and (self._token_ok(value.strip()) or (
                path == "/metrics" and self._token_ok(value.strip(), self.metrics_token))):
            return "header"
        if scheme.lower() == "basic" and self._basic_ok(value.strip()):
            return "header"
        for value in _page_cookies(headers):
            if self._token_ok(value, self._cookie):
                return "cookie"
            if self._token_ok(value):
                return "renew"
        return ""

    def cookie(self) -> str:
        return f"{COOKIE}={self._cookie.decode()}; HttpOnly; SameSite=Lax; Path=/; Max-Age={COOKIE_MAX_AGE_S}"

    def challenge(self) -> str:
        return 'Basic realm="queue-mood", charset="UTF-8"' if self.password else 'Bearer realm="queue-mood"'

    def login(self) -> str:
        """What a person may open the page with here, for the page's own refused polls (POLL_HEADER):
        "token", "password" or "token password"."""
        return " ".join(name for name, set_ in (("token", self.token), ("password", self.password)) if set_) or "token"


class Guesses:
    """Wrong credentials per client host (host_key). A host that offered GUESSES_MAX different
    wrong ones within GUESS_WINDOW_S is refused (429) until the oldest of them is that old: a
    person who mistypes, or a page polling with an old cookie (the same value each time), never
    gets there; a script guessing a password at hundreds a second does at once. This Pi itself
    is not counted."""

    def __init__(self):
        self._lock = threading.Lock()
        self._wrong: dict[str, dict[bytes, float]] = {}  # host -> {hash of what it offered: when}

    def _recent(self, host: str, now: float) -> dict[bytes, float]:
        seen = {k: t for k, t in self._wrong.get(host, {}).items() if now - t < GUESS_WINDOW_S}
        if seen:
            self._wrong[host] = seen
        else:
            self._wrong.pop(host, None)
        return seen

    def wait_s(self, host: str, now: float) -> float:
        """How long this host is still refused (0: not refused)."""
        with self._lock:
            seen = self._recent(host_key(host), now)
            return GUESS_WINDOW_S - (now - min(seen.values())) if len(seen) >= GUESSES_MAX else 0.0

    def wrong(self, host: str, offered: bytes, now: float) -> bool:
        """Count a refused request's credentials; True when this one used up the host's guesses."""
        if _loopback(host) or not offered:
            return False
        host = host_key(host)
        with self._lock:
            seen = self._recent(host, now)
            seen[hashlib.sha256(offered).digest()[:8]] = now
            self._wrong[host] = seen
            if len(self._wrong) > HOSTS_MAX:  # many hosts (the /64s of an IPv6 /48): the oldest forgotten
                self._wrong.pop(next(h for h in self._wrong if h != host))
            return len(seen) == GUESSES_MAX


class Rates:
    """Requests per client address, counted as a token bucket: RATE_BURST at once,
    refilled at RATE_PER_S. Found in a review: one host asking 1,100 times a second (401s, no token) cost the
    monitor half a core, and a Pi's cores are several times slower; a kiosk reloading in a loop
    or a scraper set too fast does the same. Loopback is counted too: it is the same CPU, and
    nothing on the Pi asks that fast. Used by the accepting thread alone."""

    def __init__(self):
        self._hosts: dict[str, tuple[float, float]] = {}  # host -> (requests it may make at once, when counted)

    def wait_s(self, host: str, now: float) -> float:
        """Count a request from `host`: 0 when it may be served, else how long until one may be."""
        left, then = self._hosts.pop(host, (RATE_BURST, now))
        left = min(RATE_BURST, left + max(0.0, now - then) * RATE_PER_S)
        wait = 0.0 if left >= 1 else (1 - left) / RATE_PER_S
        self._hosts[host] = (left - 1 if not wait else left, now)  # put last: the first is the longest unheard
        if len(self._hosts) > HOSTS_MAX:  # many addresses (an IPv6 /64): the longest unheard forgotten
            del self._hosts[next(iter(self._hosts))]
        return wait


# A Host header: a bracketed IPv6 address or a name, then an optional port.
_HOST = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::\d*)?|([^\[\]:/@\s]*)(?::\d*)?")
MISNAMED = (b"Without a token this monitor answers only its IP address, localhost or its host name: open it by "
            b"one of those, add this name to [status] allowed_hosts, or set [status] token in its config.\n")


def _bare(name: str) -> str:
    return name.lower().rstrip(".")


class LocalNames:
    """The names a request may be addressed to (its Host) when no credentials are configured.
    A web page elsewhere can point a name of its own at 127.0.0.1 (DNS rebinding) and, from a
    browser on the Pi or one reaching it through an SSH tunnel, read this page as its own site;
    its requests then carry that name. An IP address, localhost, this machine's host name (with
    or without .local) and the names of status.allowed_hosts are none a site can take."""

    def __init__(self, extra=()):
        self._names = {"localhost", *map(_bare, extra)}

    def allows(self, host: str | None) -> bool:
        if not host:  # HTTP/1.0 sends none (a script, a check)
            return True
        m = _HOST.fullmatch(host.strip())
        name = _bare(m.group(1) or m.group(2)) if m else ""
        if not name:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        if name in self._names:
            return True
        own = _bare(socket.gethostname()).removesuffix(".local")  # asked each time: a first boot may rename the Pi
        return name in (own, own + ".local")


class _CappedHead:
    """The connection's reader: its first line (the request line) may take REQUEST_LINE_MAX bytes,
    the lines after it HEADERS_MAX together; past them, parse_headers' LineTooLong, which
    http.server answers 431. A GET's head is all that is ever read."""

    def __init__(self, rfile):
        self._rfile, self._left, self._first = rfile, HEADERS_MAX, True

    def readline(self, limit: int = -1) -> bytes:
        if self._first:  # http.server gives the request line its own limit (414 past it)
            self._first = False
            return self._rfile.readline(limit)
        line = self._rfile.readline(self._left + 1 if limit < 0 else min(limit, self._left + 1))
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong("request head")
        return line

    def __getattr__(self, name):  # close() and the rest: the reader's own
        return getattr(self._rfile, name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the listen backlog (socketserver's default is 5)

    def __init__(self, address, handler, max_clients: int):
        self.max_clients, self.busy = max_clients, 0
        # One host on the network holds at most half the slots, so a client that opens many
        # connections cannot lock the manager's page out (loopback is this Pi: a proxy, a check).
        # At least 4 (or the whole pool when smaller): a browser loads the page, its script and
        # the polls over parallel connections.
        self._per_host = max(min(4, max_clients), max_clients // 2)
        self._held: dict[str, int] = {}  # address -> connections it holds
        # Connections that have not sent a whole request head (new, or kept alive between
        # requests), with since when: the first to be cut when room is needed. Without that, two
        # hosts holding idle connections (and reconnecting when the idle cut drops them) would keep
        # everyone else out, head office's scrape included, without ever sending a credential.
        self._waiting: dict = {}  # handler -> monotonic time it started waiting
        self._lock = threading.RLock()  # _make_room gives a cut connection's place back under it
        self._released: set = set()  # sockets cut whose place was given back before their thread ended
        self._last_cut_log = float("-inf")
        self._cut_count = 0
        self._rates = Rates()
        self._said: dict[str, tuple[float, int]] = {}  # refusal log line -> (when last said, refusals since)
        self._holding: collections.deque = collections.deque()  # (when due, socket, answer) of refusals held (HOLD_S)
        super().__init__(address, handler)

    def set_waiting(self, handler, waiting: bool):
        with self._lock:
            if waiting:
                self._waiting[handler] = time.monotonic()
            else:
                self._waiting.pop(handler, None)

    def _answer(self, request, head: bytes):
        try:
            request.sendall(head)
        except OSError:
            pass
        self.shutdown_request(request)

    def service_actions(self):
        """After each connection accepted, and every poll_interval: answer the refusals held that are due."""
        super().service_actions()
        now = time.monotonic()
        while self._holding and self._holding[0][0] <= now:
            self._answer(*self._holding.popleft()[1:])

    def server_close(self):
        while self._holding:
            self._answer(*self._holding.popleft()[1:])
        super().server_close()

    def _refuse(self, request, head: bytes, line: str, *args, hold_s: float = 0.0):
        """Answer `head` without a thread and close, `hold_s` later (HOLD_MAX held at most); say `line` % args
        (and how many refusals of its kind were not said) once a minute at most: a flood is one line a
        minute, not one a request."""
        now = time.monotonic()
        if hold_s and len(self._holding) < HOLD_MAX:
            self._holding.append((now + hold_s, request, head))
        else:
            self._answer(request, head)
        said_at, unsaid = self._said.get(line, (float("-inf"), 0))
        if now - said_at < REFUSAL_LOG_EVERY_S:
            self._said[line] = (said_at, unsaid + 1)
            return
        self._said[line] = (now, 0)
        more = f" ({unsaid} more like it since the last one said, once a minute at most)" if unsaid else ""
        log.warning(line + more, *args)

    def _make_room(self, host: str) -> str:
        """With the lock held: "" once `host` may open one more connection, or why it may not. A host
        at its share is refused at once (a thread for each of its reconnections would slow this
        accepting thread for everyone). When every handler is taken, the connection that has waited
        longest for a request head is cut and its place given at once: its thread, its socket shut,
        ends within moments, and this thread goes on accepting meanwhile."""
        if not _loopback(host) and self._held.get(host, 0) >= self._per_host:
            return f"it already holds its share of connections, {self._per_host}"
        if self.busy < self.max_clients:
            return ""
        if not self._waiting:  # each handler busy with a request, which takes moments
            return "every handler is busy with a request"
        victim = min(self._waiting, key=self._waiting.__getitem__)
        del self._waiting[victim]
        victim.cut()
        self._release(victim.client_address[0], victim.request, early=True)
        self._cut_count += 1
        if (now := time.monotonic()) - self._last_cut_log >= REFUSAL_LOG_EVERY_S:
            self._last_cut_log = now
            log.warning("status page: cut a connection from %s that had sent no request, to make room for %s (%d so "
                        "far; a client holding connections open, said once a minute at most)",
                        victim.client_address[0], host, self._cut_count)
        return ""

    def process_request(self, request, client_address):
        host = client_address[0]
        # Before anything else, the thread included: a connection is a request (HTTP/1.0, each closed after its answer).
        if wait := self._rates.wait_s(host, time.monotonic()):
            self._refuse(request, b"HTTP/1.0 429 Too Many Requests\r\nRetry-After: %d\r\nContent-Length: 0\r\n\r\n"
                         % math.ceil(wait), "status page: %s asked more than %d times a second (%d at once) and is "
                         "answered 429, a second late, meanwhile: a page reloading in a loop, or a scrape set too "
                         "fast?", host, RATE_PER_S, RATE_BURST, hold_s=HOLD_S)
            return
        with self._lock:
            why = self._make_room(host)
            if not why:
                self._held[host] = self._held.get(host, 0) + 1
                self.busy += 1
        if why:
            self._refuse(request, b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n",
                         "status page: turned away %s (%s); the page may not load for others meanwhile.", host, why)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(host, request)
            raise

    def _release(self, host: str, request, early: bool = False):
        """Give back a connection's place when its thread ends, or `early`, when it is cut to make
        room (then not again when its thread ends)."""
        with self._lock:
            if request in self._released:
                self._released.discard(request)
                return
            if early:
                self._released.add(request)
            self.busy -= 1
            left = self._held.get(host, 0) - 1
            if left > 0:
                self._held[host] = left
            else:
                self._held.pop(host, None)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(client_address[0], request)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            log.debug("status client %s went away: %s", client_address[0], exc)
        else:
            log.warning("status request from %s failed: %s: %s", client_address[0], type(exc).__name__, exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _read_assets() -> dict[str, tuple[bytes, str]]:
    """The page's files by URL path, read from the package once; one missing from the install is a
    UserError naming it (as an OSError it read as a port that "cannot listen (No such file or directory)")."""
    assets = {}
    for path, (name, ctype) in ASSETS.items():
        file = resources.files("edge.service").joinpath("web", name)
        try:
            assets[path] = (file.read_bytes(), ctype)
        except OSError as exc:
            from edge.ops.bundle import package_repair_advice  # lazily: only a broken install needs it

            raise UserError(f"the page's file {file} cannot be read ({exc.strerror or exc}): the installed package "
                            f"is incomplete; {package_repair_advice(str(file))}.") from exc
    return assets


class StatusServer:
    """The HTTP server on a daemon thread; takes the [status] section whole."""

    def __init__(self, stats: Stats, cfg: StatusConfig):
        auth = Auth(cfg.token, cfg.user, cfg.password, cfg.metrics_token)
        guesses = Guesses()
        local = LocalNames(cfg.allowed_hosts)
        misnamed_said = threading.Event()  # said once: each request of a rebinding page would be a line
        assets = _read_assets()
        failures_said: set[tuple[str, str]] = set()  # (path, exception type): each logged once, not at every poll

        class Handler(BaseHTTPRequestHandler):
            timeout = cfg.idle_timeout_s  # a silent client loses its thread after this
            server_version = "queue-mood"
            sys_version = ""

            def setup(self):
                super().setup()
                self.rfile = _CappedHead(self.rfile)
                # The socket timeout is per read, so a client trickling a byte at a time would
                # keep its thread for good: the whole connection gets idle_timeout_s.
                self._done, self._done_lock = False, threading.Lock()
                self._deadline = threading.Timer(cfg.idle_timeout_s, self.cut)
                self._deadline.daemon = True
                self._deadline.start()

            def cut(self):
                with self._done_lock:  # never after finish: the socket's number may be a new client's by then
                    if self._done:
                        return
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

            def handle_one_request(self):
                self.server.set_waiting(self, True)  # until its head is read: the first to be cut for room
                super().handle_one_request()

            def parse_request(self):
                if len(self.raw_requestline.split()) == 2:  # HTTP/0.9: its answer would be bare, without the page's headers
                    self.close_connection = True
                    return False
                ok = super().parse_request()
                self.server.set_waiting(self, False)
                return ok

            def finish(self):
                self.server.set_waiting(self, False)
                with self._done_lock:
                    self._done = True
                self._deadline.cancel()
                super().finish()

            def version_string(self):
                return self.server_version

            def send_error(self, code, message=None, explain=None):
                """http.server's own errors (bad syntax, a method other than GET/HEAD, a too-long
                line) as plain text with the page's headers, never echoing the request line, whose
                ?token= the sender may not be the owner of."""
                allow = None
                if code == 501:  # an unsupported method: the resource exists, it is read-only
                    code, allow = 405, {"Allow": "GET, HEAD"}
                self.close_connection = True
                body = f"{code} {self.responses.get(code, ('Error',))[0]}\n".encode()
                self._send(code, body, "text/plain; charset=utf-8", self.command != "HEAD", allow)

            def do_GET(self):
                self._serve(send_body=True)

            def do_HEAD(self):
                self._serve(send_body=False)

            def _serve(self, send_body: bool):
                try:
                    url = urlsplit(self.path)
                except ValueError:  # "GET http://[/": a 400, not a dropped connection and a warning per request
                    self.send_error(400)
                    return
                path = url.path.rstrip("/") or "/"
                hosts = self.headers.get_all("Host") or []
                if len(hosts) > 1 or (not hosts and self.request_version == "HTTP/1.1") or (  # RFC 9112 3.2
                        url.scheme and not url.netloc):  # "GET http:/status": a scheme without the host it names
                    self.send_error(400)
                    return
                # An absolute-form target (GET http://name/ ...) names the host itself: that is the one judged.
                host = url.netloc if url.scheme else hosts[0] if hosts else None
                # With credentials, a rebinding page has none to send (and a proxy passes its own Host).
                if not auth.enabled and not local.allows(host):
                    if not misnamed_said.is_set():
                        misnamed_said.set()
                        log.warning("status page: turned away a request addressed to %r, which is not this Pi's "
                                    "address, localhost or its host name (a web page trying DNS rebinding, or a name "
                                    "to add to [status] allowed_hosts); said once", escape_controls(host[:100]))
                    self._send(403, MISNAMED, "text/plain; charset=utf-8", send_body)
                    return
                client, query = self.client_address[0], parse_qs(url.query)
                if wait := guesses.wait_s(client, time.monotonic()):
                    who = b"this network (an IPv6 /64 counts as one host)" if "/" in host_key(client) else \
                        b"this address"
                    self._send(429, b"Too many wrong tokens or passwords from %s; try again in a minute.\n" % who,
                               "text/plain; charset=utf-8", send_body, {"Retry-After": str(math.ceil(wait))})
                    return
                via = auth.check(self.headers, query, path)
                if not via and guesses.wrong(client, auth.presented(self.headers, query), time.monotonic()):
                    log.warning("status page: %s offered %d different wrong tokens or passwords within %d s and is "
                                "refused for a while (someone guessing, or a script with an old token)",
                                escape_controls(_named(client)), GUESSES_MAX, GUESS_WINDOW_S)
                if not via:
                    # The page's own polls get no challenge, but what would open the page: a browser asks for the
                    # password on a fetch answered with a Basic one too, and the poll gives up after 8 s, taking
                    # the prompt away again (a login box flickering on a wall display, under a banner saying the
                    # monitor was not reachable); the page says what to do, and a reload asks for the password.
                    how = {"X-Queue-Mood-Login": auth.login()} if self.headers.get(POLL_HEADER) else \
                        {"WWW-Authenticate": auth.challenge()}
                    self._send(401, b"This page needs its link with the token (ask whoever installed the monitor "
                                    b"for it), or the password; the token is [status] token in the monitor's "
                                    b"config.\n", "text/plain; charset=utf-8", send_body, how)
                    return
                if via == "link":  # keep the token in a cookie and out of the address bar and history
                    # Lax, not Strict: a link tapped in webmail or on an intranet page is a request from
                    # another site, and Strict withholds the cookie on this very redirect. The page only
                    # reads, so a cross-site GET can change nothing.
                    known = path in assets or path in DATA_PATHS
                    self._send(303, b"", "text/plain", send_body, {
                        "Location": path if known else "/",  # never a place the link's sender chose
                        "Set-Cookie": auth.cookie()})
                    return
                # Every answer to the cookie renews it: a wall display that only polls stays signed in
                # for as long as it polls, not 30 days from the day the link was opened.
                renew = {"Set-Cookie": auth.cookie()} if via in ("cookie", "renew") else None
                try:
                    code, body, ctype = self._answer(path)
                except ConnectionError:
                    raise  # the client's connection: nothing can be answered on it (handle_error says so)
                except Exception as exc:  # a bug or a bad row: an answer the page can show, not a dropped connection
                    key = (path, type(exc).__name__)
                    if key not in failures_said:
                        failures_said.add(key)
                        log.error("status page: %s failed (%s: %s); it answers 500 meanwhile (said once per kind "
                                  "of failure)", path, type(exc).__name__, exc, exc_info=exc)
                    code, body, ctype = 500, b"The monitor could not put this answer together; its journal " \
                                             b"says why.\n", "text/plain; charset=utf-8"
                self._send(code, body, ctype, send_body, renew if code == 200 else None)

            def _answer(self, path: str) -> tuple[int, bytes, str]:
                if path in assets:
                    return 200, *assets[path]
                if path == "/status":
                    return 200, json.dumps(stats.snapshot(), indent=1).encode(), "application/json"
                if path == "/history":
                    return 200, json.dumps(stats.series()).encode(), "application/json"
                if path == "/metrics":
                    try:
                        from edge.service.exposition import render

                        return 200, *render(stats.snapshot)
                    except ImportError:
                        return 503, b"/metrics needs prometheus_client: pip install 'queue-mood[edge]'\n", \
                            "text/plain; charset=utf-8"
                return 404, b"Not found; try /, /status, /history or /metrics.\n", "text/plain; charset=utf-8"

            def _send(self, code: int, body: bytes, ctype: str, send_body: bool, extra: dict | None = None):
                self.send_response(code)
                for k, v in {**SECURITY_HEADERS, "Content-Type": ctype, "Content-Length": str(len(body)),
                             **(extra or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def log_message(self, fmt, *args):  # scrapes and page polls stay out of the journal
                text = escape_controls(fmt % args)
                log.debug("status %s: %s", self.address_string(), _QUERY.sub("?***", text))

        server_cls = _Server6 if ":" in cfg.host else _Server
        self.httpd = server_cls((cfg.host, cfg.port), Handler, cfg.max_clients)
        self.port = self.httpd.server_address[1]
        self.auth = auth
        # poll_interval: how long stop() waits for the serving loop; short, so a stop stays prompt.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="status-http", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
