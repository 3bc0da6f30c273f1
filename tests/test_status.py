"""The status server with real sockets: the page and its assets, auth, redaction, the
history ring (memory and SQLite), /metrics as Prometheus parses it, and the hardening
(idle timeout, thread cap, quiet client disconnects)."""

from __future__ import annotations

import base64
import json
import math
import logging
import os
import re
import socket
import struct
import threading
import time
import types
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.config import ConfigError, StatusConfig, load_config
from edge.labels import LABELS
from edge.pipeline.core import FrameResult
from edge.pipeline.mood import Mood
from edge.outages import FLAP_WINDOW_S
from edge.service.history import OUTAGES_KEPT, History
from edge.service.status import Stats, StatusServer
from tests.test_sinks import wait_for

TOKEN = "t0ken-for-the-tests-only"


def result(faces: int, negative: int, state: str = "clear", transition=None, **counts) -> FrameResult:
    return FrameResult(frame_index=0, t_s=0.0, detections=faces, tracks=[], mood=Mood(0.0, faces, negative, counts),
                       transition=transition, alert_state=state)


def sink_stats(**counts) -> dict:
    """One sink's Fanout.stats() entry: every count 0 but those given."""
    keys = ("queued", "sent", "delivered", "spooled", "in_memory", "dead_lettered", "dropped", "lost", "failures")
    return {**dict.fromkeys(keys, 0), **counts}


@pytest.fixture
def serve():
    servers = []

    def make(stats=None, **cfg) -> tuple[str, StatusServer]:
        stats = stats or Stats("ai-edge-litert x", "model.tflite", "video", device="till-3",
                               negative=["angry", "sad"])
        srv = StatusServer(stats, StatusConfig(port=0, **cfg)).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.port}", srv

    yield make
    for s in servers:
        s.stop()


def get(url, headers=None, timeout=10):
    """(status, headers, body) without raising on 4xx/5xx and without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_page_and_assets_come_from_the_package_and_reference_nothing_outside(serve):
    base, _ = serve()
    code, headers, html = get(base + "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "img-src 'none'" in headers["Content-Security-Policy"] and headers["Referrer-Policy"] == "no-referrer"
    html = html.decode()
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert asset.startswith("/static/"), asset  # nothing from a CDN: the Pi may be offline
        code, headers, body = get(base + asset)
        assert code == 200 and body and headers["Content-Type"].split(";")[0] in ("text/javascript", "text/css")
        text = body.decode()
        # the only URL in the assets is SVG's XML namespace, which is never fetched
        assert re.findall(r"https?://[^\s\"')]+", text) in ([], ["http://www.w3.org/2000/svg"])
        assert "<img" not in text and "url(" not in text  # never an image
    assert "<img" not in html
    assert get(base + "/nothing")[0] == 404


def test_status_history_and_recent_alerts_follow_the_pipeline(serve):
    stats = Stats("rt", "m", "video", device="till-3", negative=["angry", "sad"])
    base, _ = serve(stats)
    stats.update(result(3, 0, happy=3), 0, {"detect": 4.0})
    stats.update(result(3, 2, "raised", "raised", angry=2, happy=1), 2, {"detect": 5.0})
    stats.set_sinks({"webhook": sink_stats(failures=1)})
    s = json.loads(get(base + "/status")[2])
    assert s["faces"] == 3 and s["alert_state"] == "raised" and s["alert_raised_at"]
    assert s["counts"] == {**dict.fromkeys(LABELS, 0), "angry": 2, "happy": 1}
    assert s["negative"] == ["angry", "sad"] and s["dropped_frames"] == 2 and s["sink_failures"] == {"webhook": 1}
    assert [a["kind"] for a in s["recent_alerts"]] == ["raised"] and s["recent_alerts"][0]["faces"] == 3
    assert set(s["health"]) == {"cpu_temperature_c", "throttled_flags", "throttled_now", "process_cpu_share",
                                "clock_synced"}
    h = json.loads(get(base + "/history")[2])
    assert h["points"][-1]["faces"] == 3 and h["points"][-1]["alert"] is True
    stats.update(result(1, 0, "clear", "cleared", happy=1), 2, {})
    s = json.loads(get(base + "/status")[2])
    assert s["alert_raised_at"] is None and [a["kind"] for a in s["recent_alerts"]] == ["cleared", "raised"]


def test_status_lists_alerts_and_camera_outages_as_periods_newest_first(monkeypatch):
    """The page listed each raise and each clear as an alert of its own (a manager read "cleared: 10%
    of 4 faces unhappy" as one), and a camera outage, a blank stretch on the chart, not at all:
    `alert_periods` gives each alert from raised to cleared, with the highest share it reached, and
    each outage; recent_alerts stays as it was (fleet scripts read it)."""
    pi = PiClock(monkeypatch, NTP_TIME)
    pi.synced = True
    stats = Stats("rt", "m", "video")
    stats.update(result(3, 0, happy=3), 0, {})
    pi.wait(60)
    stats.update(result(3, 2, "raised", "raised", angry=2, happy=1), 0, {})  # raised at 67% of 3
    for _ in range(30):  # worse for a while: all 4 unhappy
        pi.wait(2)
        stats.update(result(4, 4, "raised", angry=4), 0, {})
    pi.wait(300)
    stats.update(result(4, 0, "clear", "cleared", happy=4), 0, {})
    pi.wait(60)
    stats.camera_down()
    pi.wait(120)
    stats.camera_up()
    stats.update(result(3, 0, happy=3), 0, {})
    pi.wait(60)
    stats.update(result(3, 2, "raised", "raised", angry=2, happy=1), 0, {})
    s = stats.snapshot()
    when = lambda e: e and (e["t"] - NTP_TIME, e["clock_set"])  # noqa: E731
    assert [(p["kind"], when(p["start"]), when(p["end"]), p["ongoing"]) for p in s["alert_periods"]] == [
        ("unhappy", (660, True), None, True),
        ("camera_down", (480, True), (600, True), False),
        ("unhappy", (60, True), (420, True), False)], s["alert_periods"]
    assert [(p["negative_share"], p["faces"], p["peak_share"], p["peak_faces"])
            for p in s["alert_periods"] if p["kind"] == "unhappy"] == [(0.6667, 3, 0.6667, 3), (0.6667, 3, 1.0, 4)]
    assert [a["kind"] for a in s["recent_alerts"]] == ["raised", "cleared", "raised"]  # as before
    pi.wait(30)
    stats.camera_down()  # the alert bridges an outage: still raised, and the camera gives no picture now
    assert [(p["kind"], p["ongoing"]) for p in stats.snapshot()["alert_periods"][:3]] == \
        [("camera_down", True), ("unhappy", True), ("camera_down", False)]


def test_an_alert_the_monitor_stopped_during_is_a_period_without_an_end_not_one_ongoing(tmp_path):
    db = tmp_path / "history.sqlite"
    before = Stats("rt", "m", "video", history=History(db_path=str(db)))
    before.update(result(4, 3, "raised", "raised", angry=3, happy=1), 0, {})
    before.history.close()  # stopped while raised: no clear was recorded
    stats = Stats("rt", "m", "video", history=History(db_path=str(db)))
    stats.update(result(4, 0, happy=4), 0, {})  # the new run starts clear
    (p,) = stats.snapshot()["alert_periods"]
    assert p["kind"] == "unhappy" and p["end"] is None and p["ongoing"] is False and p["peak_share"] == 0.75
    stats.history.close()


def test_status_says_until_when_the_cooldown_holds_a_new_alert_back(serve):
    """The queue unhappy again during the cooldown after a clear: /status says when a new alert
    may be raised (by this machine's clock), and only while that holds."""
    from dataclasses import replace

    stats = Stats("rt", "m", "video", device="till-3")
    base, _ = serve(stats)
    stats.update(replace(result(4, 3, angry=3, happy=1), held_back_s=90.0), 0, {})
    s = json.loads(get(base + "/status")[2])
    until = datetime.fromisoformat(s["alert_held_back_until"])
    assert s["alert_state"] == "clear" and abs((until - datetime.fromisoformat(s["now"])).total_seconds() - 90) <= 2
    stats.update(result(4, 1, angry=1, happy=3), 0, {})
    assert json.loads(get(base + "/status")[2])["alert_held_back_until"] is None


@contextmanager
def monitor_in(tz: str):
    """This process (the monitor's server, and a chromium it starts) in the time zone `tz`."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = tz
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.parametrize("tz, offset_s, name", [("Asia/Kolkata", 19800, "IST"), ("America/Caracas", -4 * 3600, "-04"),
                                                ("UTC", 0, "UTC")])
def test_status_and_history_say_the_monitors_time_zone_beside_its_utc_times(serve, tz, offset_s, name):
    """The page shows the store's local time (a manager at head office may be in another zone):
    /status and /history say this machine's offset from UTC and its zone's name; the times stay UTC."""
    with monitor_in(tz):
        base, _ = serve()
        s, h = (json.loads(get(base + path)[2]) for path in ("/status", "/history"))
    assert s["now"].endswith("+00:00") and s["started_at"].endswith("+00:00")
    for answer in (s, h):
        assert answer["utc_offset_s"] == offset_s and answer["time_zone"] == name, answer


def test_a_time_zone_set_while_the_monitor_runs_is_taken_within_seconds():
    """The IT person installs, sees UTC times on the page, runs timedatectl set-timezone: the page
    followed only after a restart (the C library reads the zone again only when told)."""
    from edge.service.status import HEALTH_EVERY_S, Stats

    with monitor_in("UTC"):
        stats = Stats("rt", "m", "src")
        assert stats.snapshot()["time_zone"] == "UTC"
        os.environ["TZ"] = "Asia/Kolkata"  # as /etc/localtime changes under it: nobody tells the process
        stats._health_t = time.monotonic() - HEALTH_EVERY_S  # the next health reading is due
        s = stats.snapshot()
        assert (s["time_zone"], s["utc_offset_s"], s["zones"][-1]["utc_offset_s"]) == ("IST", 19800, 19800), s


CLOCKS_FORWARD = datetime(2026, 3, 29, 1, tzinfo=timezone.utc).timestamp()  # 01:00 GMT became 02:00 BST in London


def hour_over_the_change(stats, now: float) -> None:
    """The hour up to `now` (half an hour after CLOCKS_FORWARD) in the chart, and two alerts: raised
    at 00:30 GMT, before the clocks went forward, and cleared at 02:10 BST."""
    for t in range(int(now - 3600), int(now), 10):
        stats.history.add(t, 0.6, 3, True)
    stats.history.add_alert(now - 3600, "raised", 0.7, 4)
    stats.history.add_alert(now - 1200, "cleared", 0.1, 4)


def zone_at(answer: dict, t: float) -> tuple[int, str]:
    """The zone an answer's `zones` gives for time `t`, as the page picks it."""
    z = answer["zones"][0]
    for c in answer["zones"]:
        if c["from"] <= t:
            z = c
    return z["utc_offset_s"], z["time_zone"]


def test_every_time_given_carries_the_zone_in_force_then_across_a_change_of_the_clocks(serve, monkeypatch):
    """Half an hour after the clocks went forward in London: an alert raised before the change
    (00:30 GMT) must read 00:30, not 01:30, and the chart's hour, 00:30 GMT to 02:30 BST, needs
    both offsets. Each answer's `zones` gives each of its times the zone of that moment, the
    change found to the second."""
    from edge.service import status

    now = CLOCKS_FORWARD + 1800
    monkeypatch.setattr(status, "time", types.SimpleNamespace(time=lambda: now, monotonic=time.monotonic))
    stats = Stats("rt", "m", "video", device="till-3")
    hour_over_the_change(stats, now)
    stats.data.update(alert_state="raised", alert_raised_at=time.monotonic() - 3600)  # 00:30 GMT, before the change
    with monitor_in("Europe/London"):
        base, _ = serve(stats)
        s, h = (json.loads(get(base + path)[2]) for path in ("/status", "/history"))
    gmt, bst = (0, "GMT"), (3600, "BST")
    assert (s["utc_offset_s"], s["time_zone"]) == bst  # now, as before
    raised_at = datetime.fromisoformat(s["alert_raised_at"]).timestamp()
    assert abs(raised_at - (now - 3600)) < 5 and zone_at(s, raised_at) == gmt
    assert [zone_at(s, a["t"]) for a in s["recent_alerts"]] == [bst, gmt]  # cleared 02:10 BST, raised 00:30 GMT
    assert zone_at(s, now) == bst and len(s["zones"]) == 2
    for answer in (s, h):  # the change to the second: the chart's axis is right across it
        assert zone_at(answer, CLOCKS_FORWARD - 1) == gmt and zone_at(answer, CLOCKS_FORWARD) == bst
    assert len(h["zones"]) == 2 and zone_at(h, h["now"] - h["span_s"]) == gmt and zone_at(h, h["now"]) == bst
    assert all(zone_at(h, p["t"]) == (gmt if p["t"] < CLOCKS_FORWARD else bst) for p in h["points"])


def test_status_says_since_when_the_alert_state_holds(serve):
    """alert_state_since: when the alert card's state began (by this machine's clock): the start,
    the first frame, a transition, the camera declared down, its first frame back. A frame in the
    same state leaves it."""
    stats = Stats("rt", "m", "video", device="till-3")
    base, _ = serve(stats)

    def since(*frame, down=False):
        stats.data["alert_state_since"] = "2000-01-01T00:00:00+00:00"  # a time no step here would write
        if down:
            stats.camera_down()
        elif frame:
            stats.update(result(*frame), 0, {})
        s = json.loads(get(base + "/status")[2])
        new = abs((datetime.fromisoformat(s["now"]) - datetime.fromisoformat(s["alert_state_since"])).total_seconds()) <= 2
        return new or s["alert_state_since"]  # True: set just now

    first = json.loads(get(base + "/status")[2])
    assert first["alert_state_since"] == first["started_at"]
    assert since(2, 0) is True  # starting -> clear
    assert since(2, 0) == "2000-01-01T00:00:00+00:00"  # still clear
    assert since(2, 2, "raised", "raised") is True
    assert since(2, 0, "clear", "cleared") is True
    assert since(down=True) is True
    assert since(2, 0) is True  # the camera back: watched and clear again from now
    assert since(2, 2, "raised", "raised") is True
    assert since(down=True) is True
    # the camera back within the outage the monitor bridges, the alert still raised: the same
    # alert, raised since before the outage (it said the camera's return)
    assert since(2, 2, "raised") == "2000-01-01T00:00:00+00:00"


def test_credentials_in_the_source_url_are_never_shown(serve):
    stats = Stats("rt", "m", "stream rtsp://admin:s3cret@10.0.0.9:554/live?token=abc123", device="x")
    base, _ = serve(stats)
    body = get(base + "/status")[2].decode()
    assert "s3cret" not in body and "abc123" not in body and "admin" not in body
    assert "rtsp://***@10.0.0.9:554/live?***" in body


def test_history_is_bounded_and_averages_each_step(tmp_path):
    h = History(step_s=10, span_s=60)
    t0 = 1_700_000_000.0  # a multiple of 10
    for i in range(200):  # 100 s at 2 samples per second
        h.add(t0 + i / 2, negative_share=0.5 if i % 2 else 0.0, faces=i % 4, raised=35 <= i / 2 < 41)
    pts = h.series()
    assert len(pts) == 7  # 6 closed steps (the span) + the one in progress
    assert [p["t"] - t0 for p in pts] == [30, 40, 50, 60, 70, 80, 90]
    assert all(p["negative_share"] == 0.25 and p["faces"] == 3 for p in pts)
    assert [p["alert"] for p in pts] == [True, True, False, False, False, False, False]  # raised 35-40.5 s


def test_history_survives_a_restart_in_sqlite_and_disk_trouble_falls_back_to_memory(tmp_path, caplog):
    db = tmp_path / "history.sqlite"
    now = time.time()
    h = History(step_s=10, span_s=3600, db_path=str(db))
    for i in range(5):
        h.add(now - 40 + 10 * i, 0.2 * i, i, i == 3)
    h.add_alert(now - 10, "raised", 0.6, 3)
    h.close()
    again = History(step_s=10, span_s=3600, db_path=str(db))
    assert [p["faces"] for p in again.series()] == [0, 1, 2, 3, 4]  # the 4 closed steps and the one under way
    assert again.recent_alerts()[0]["kind"] == "raised"
    again.close()

    caplog.set_level(logging.WARNING)
    h = History(db_path=str(tmp_path / "no-such-dir" / "h.sqlite"))  # not creatable, even for root
    h.add(now, 0.1, 1, False)
    h.add(now + 20, 0.1, 1, False)
    assert len(h.series()) == 2  # the chart carries on in memory
    assert [r.message for r in caplog.records if "memory only" in r.message]


def test_history_after_the_clock_steps_back_keeps_new_points_in_order_in_memory_and_file(tmp_path):
    """NTP setting back a Pi without RTC that started a day ahead: the points from the wrong
    clock leave the chart, the new ones stay, in order. The file keeps both: from inside, a
    clock that was ahead looks the same as one that is behind now."""
    import sqlite3

    db = tmp_path / "history.sqlite"
    now = time.time()
    ahead = now + 86400 - now % 10
    h = History(step_s=10, span_s=3600, db_path=str(db), write_s=0)  # each point written as it closes
    for i in range(200):  # 1000 s on the clock that is a day ahead
        h.add(ahead + 5 * i, 0.1, 2, False)
    back = now - 1000 - now % 10
    for i in range(200):  # then 1000 s on the right clock
        h.add(back + 5 * i, 0.9, 5, True)
    ts = [p["t"] for p in h.series()]
    assert ts == sorted(ts) and ts[0] == back and ts[-1] < ahead
    rows = [t for (t,) in sqlite3.connect(db).execute("SELECT t FROM samples WHERE t < ? ORDER BY t", (ahead,))]
    assert rows == ts[:-1]  # the closed points
    h.close()  # the step under way saved too
    assert [p["t"] for p in History(step_s=10, span_s=3600, db_path=str(db)).series()] == ts  # and after a restart


def test_history_shows_no_point_later_than_the_clock_stepped_back_while_the_camera_is_down(monkeypatch):
    """No frames, so nothing sorts the points by the clock: NTP setting it back 30 min then drew
    the last half hour past the chart's end ("70% at 10:31" on a chart ending at 10:01). Kept,
    they come back once the clock has passed them; one stepped a day forward shows none."""
    import edge.service.status as status

    now = time.time() // 10 * 10 + 9.5  # late in a step: the hour's first point is then the oldest it can be
    stats = Stats("rt", "m", "src")
    for t in range(int(now - 3590), int(now), 5):  # within the hour before now + 1, a step to spare
        stats.history.add(t, 0.3, 3, False)
    stats.camera_down()
    every = [p["t"] for p in stats.history.series()]
    for wall, shown in ((now - 1800, [t for t in every if t <= now - 1800]), (now + 1, every), (now + 86400, [])):
        monkeypatch.setattr(status.time, "time", lambda: wall)
        got = stats.series()
        assert [p["t"] for p in got["points"]] == shown and all(p["t"] <= got["now"] for p in got["points"])


def test_history_written_on_a_clock_that_was_ahead_is_not_loaded_after_a_restart(tmp_path):
    db = tmp_path / "history.sqlite"
    h = History(step_s=10, span_s=3600, db_path=str(db))
    for i in range(5):
        h.add(time.time() + 86400 + 10 * i, 0.1, 2, False)  # before the restart the clock was a day ahead
    h.close()
    assert History(step_s=10, span_s=3600, db_path=str(db)).series() == []


def test_alerts_stamped_by_a_clock_that_was_ahead_neither_top_the_list_nor_push_real_ones_out(tmp_path):
    """A clock 3 h ahead, then set back by NTP: the list is in the order the alerts came, in
    memory and after a restart, and the file keeps the newest ones, not the ones stamped latest."""
    import sqlite3

    db = tmp_path / "history.sqlite"
    now = time.time()
    h = History(alerts_kept=5, db_path=str(db))
    for i in range(3):
        h.add_alert(now + 3 * 3600 + 60 * i, "raised", 0.5, 3)  # the clock ahead
    for i in range(5):
        h.add_alert(now + 60 * i, "cleared" if i % 2 else "raised", 0.6, 4)  # set right
    real = [now + 60 * i for i in reversed(range(5))]
    assert [a["t"] for a in h.recent_alerts()] == real
    h.close()
    assert sorted(t for (t,) in sqlite3.connect(db).execute("SELECT t FROM alerts")) == sorted(real)
    assert [a["t"] for a in History(alerts_kept=5, db_path=str(db)).recent_alerts()] == real


class PiClock:
    """The clocks status and health read, as the test sets them: a Pi without RTC that booted
    without network runs on 1970 (or the last shutdown's time) until NTP sets it."""

    def __init__(self, monkeypatch, wall: float, mono: float = 1000.0):
        from edge.service import health, status

        self.wall, self.mono, self.synced = wall, mono, False
        monkeypatch.setattr(status, "time", types.SimpleNamespace(time=lambda: self.wall, monotonic=lambda: self.mono))
        monkeypatch.setattr(health, "clock_synced", lambda: self.synced)

    def wait(self, s: float) -> None:
        self.wall += s
        self.mono += s

    def ntp_sets(self, wall: float) -> None:
        self.wall, self.synced = wall, True


BOOT_1970 = 30.0  # the clock 30 s after a boot with no real-time clock, no fake-hwclock, no NTP
NTP_TIME = datetime(2026, 5, 12, 9, 30, tzinfo=timezone.utc).timestamp()


def test_alerts_raised_before_ntp_set_the_clock_are_shown_and_kept_at_their_true_time(tmp_path, monkeypatch):
    """A Pi booted without network: its clock reads 1970 until NTP sets it. An alert raised then
    read "1 Jan 1970 00:00:30" on the page and in the history file for good; once the clock is set it
    is at the time it came (the clock now less how long ago, by the monotonic clock), on the page,
    in the file and after a restart. Before, the page says how long ago, not the 1970 time."""
    db = tmp_path / "history.sqlite"
    pi = PiClock(monkeypatch, BOOT_1970)
    stats = Stats("rt", "m", "video", history=History(db_path=str(db)))
    stats.update(result(3, 2, "raised", "raised", angry=2, happy=1), 0, {})
    pi.wait(120)
    (a,) = stats.snapshot()["recent_alerts"]
    assert a["t"] == BOOT_1970 and a.get("clock_set") is False  # 2 min ago by the clock it runs on: the page says so
    pi.ntp_sets(NTP_TIME)
    pi.wait(60)
    stats.update(result(3, 0, "clear", "cleared", happy=3), 0, {})
    s = stats.snapshot()
    assert s["recent_alerts"][1]["time"] == "2026-05-12T09:28:00+00:00"  # was 1970-01-01T00:00:30+00:00
    assert [(a["kind"], a["t"], a["clock_set"]) for a in s["recent_alerts"]] == \
        [("cleared", NTP_TIME + 60, True), ("raised", NTP_TIME - 120, True)]
    assert stats.history.unsettled is False
    stats.history.close()
    again = History(db_path=str(db)).recent_alerts(NTP_TIME + 600, 0.0)
    assert [(a["t"], a["clock_set"]) for a in again] == [(NTP_TIME + 60, True), (NTP_TIME - 120, True)]


def test_a_camera_outage_starts_at_the_last_frame_as_the_charts_blank_stretch_does(monkeypatch):
    """The watch declares the camera down down_after_s after its last frame: the outage's line and the
    card said it started then, while the chart's blank stretch starts at the last frame."""
    pi = PiClock(monkeypatch, NTP_TIME)
    pi.synced = True
    stats = Stats("rt", "m", "video")
    stats.update(result(3, 0, happy=3), 0, {})
    last_frame = pi.mono
    pi.wait(5)  # down_after_s of silence
    stats.camera_down(last_frame)
    pi.wait(60)
    s = stats.snapshot()
    (p,) = s["alert_periods"]
    assert p["start"]["t"] == NTP_TIME and s["alert_state_since"] == p["start"]["time"], (p, s["alert_state_since"])
    pi.synced = False  # stamped by an unset clock: how long ago holds the same
    stats.camera_up()
    stats.update(result(3, 0, happy=3), 0, {})
    last_frame = pi.mono
    pi.wait(10)
    stats.camera_down(last_frame)
    pi.wait(50)
    assert NTP_TIME + 65 + 60 - stats.snapshot()["alert_periods"][0]["start"]["t"] == 60


def test_a_camera_outage_before_ntp_set_the_clock_is_stamped_again_at_its_true_time(monkeypatch):
    """As an alert: the outage's start said how long ago while the clock read 1970, then its true time."""
    pi = PiClock(monkeypatch, BOOT_1970)
    stats = Stats("rt", "m", "video")
    stats.camera_down()
    pi.wait(120)
    (p,) = stats.snapshot()["alert_periods"]
    assert (p["kind"], p["start"]["t"], p["start"]["clock_set"], p["ongoing"]) == ("camera_down", BOOT_1970, False, True)
    pi.ntp_sets(NTP_TIME)
    stats.camera_up()
    pi.wait(5)  # settled at the next look (Stats._settle)
    stats.update(result(3, 0, happy=3), 0, {})
    (p,) = stats.snapshot()["alert_periods"]
    assert (p["start"]["t"], p["start"]["clock_set"], p["end"]["t"], p["ongoing"]) == (NTP_TIME - 120, True, NTP_TIME, False)
    assert stats.history.unsettled is False


def test_camera_outages_are_kept_in_the_history_file_at_their_true_time_across_a_restart(tmp_path, monkeypatch):
    """The chart's blank stretch survives a restart, and so does the line saying the camera gave no
    picture then: one from before NTP set the clock at its true time, one the monitor stopped during
    without an end."""
    db = tmp_path / "history.sqlite"
    pi = PiClock(monkeypatch, BOOT_1970)
    stats = Stats("rt", "m", "video", history=History(db_path=str(db)))
    stats.camera_down()
    pi.wait(60)
    pi.ntp_sets(NTP_TIME)
    stats.camera_up()
    pi.wait(5)
    stats.update(result(3, 0, happy=3), 0, {})  # settles the outage's start: NTP_TIME - 60
    pi.wait(5)
    stats.camera_down()
    stats.history.close()  # stopped while the camera was down
    again = Stats("rt", "m", "video", history=History(db_path=str(db)))
    again.update(result(3, 0, happy=3), 0, {})
    when = lambda e: e and (e["t"] - NTP_TIME, e["clock_set"])  # noqa: E731
    assert [(p["kind"], when(p["start"]), when(p["end"]), p["ongoing"]) for p in again.snapshot()["alert_periods"]] == [
        ("camera_down", (10, True), None, False), ("camera_down", (-60, True), (0, True), False)]
    again.history.close()


def flap(stats: Stats, pi: PiClock, outages: int) -> None:
    """A loose cable, as the watch tells the status of it: `outages` outages of 10 s, one every 30 s."""
    for _ in range(outages):
        stats.camera_down()
        pi.wait(10)
        stats.camera_up()
        stats.update(result(3, 0, happy=3), 0, {})
        pi.wait(20)


def test_a_camera_flapping_more_often_than_the_alerts_kept_has_every_outage_on_status(monkeypatch):
    """The outages were kept by the alerts' count (20 changes): 30 outages in 15 min gave the last 10,
    so the page's joined line said "10 times" from the 20th outage on. Each is there now, with the
    window the page joins them by."""
    pi = PiClock(monkeypatch, NTP_TIME)
    pi.synced = True
    stats = Stats("rt", "m", "video")
    flap(stats, pi, 30)
    s = stats.snapshot()
    assert [(p["start"]["t"] - NTP_TIME, p["end"]["t"] - NTP_TIME, p["joins_dropped"]) for p in s["alert_periods"]] == \
        [(30 * i, 30 * i + 10, False) for i in reversed(range(30))]
    assert s["outage_join_s"] == FLAP_WINDOW_S


@pytest.mark.parametrize("quiet_s, down_now, joins_dropped", [
    (60, False, True),  # the dropped outages ended a minute before the oldest kept: its line counts too few
    (FLAP_WINDOW_S + 60, False, False),  # a quiet spell longer than the window between: the line is whole
    (FLAP_WINDOW_S + 60, True, True)])  # the oldest change kept is an "up" whose "down" was dropped, 20 s before
def test_outages_older_than_those_kept_make_the_oldest_line_say_it_had_more(quiet_s, down_now, joins_dropped):
    """Beyond OUTAGES_KEPT changes the oldest go: the oldest camera_down period says whether they would
    have been on its line (their end within the window before its start), so the page says "more than"."""
    h = History()
    t = time.time() - 3 * 3600
    for n in (10, OUTAGES_KEPT // 2):  # outages of 10 s, one every 30 s: the 10 older ones go
        for _ in range(n):
            h.add_outage(t, "down")
            h.add_outage(t + 10, "up")
            t += 30
        t += quiet_s - 20
    if down_now:
        h.add_outage(t, "down")
    cams = [p for p in h.periods(down=down_now) if p["kind"] == "camera_down"]
    assert len(cams) == OUTAGES_KEPT // 2
    assert [p["joins_dropped"] for p in cams] == [False] * (len(cams) - 1) + [joins_dropped]


def test_an_outage_dropped_without_an_end_does_not_make_the_oldest_line_say_it_had_more():
    """The monitor stopped during an outage (a "down", no "up"), then the camera dropped out again after
    the restart: the page joins no outage without an end to the next, but the dropped "down" was taken
    for the end of the outages dropped, and the oldest line said "more than"."""
    h = History(outages_kept=4)
    t = time.time() - 3600
    for at, kind in ((0, "down"), (60, "down"), (70, "up"), (100, "down"), (110, "up")):  # a restart after 0
        h.add_outage(t + at, kind)
    cams = [p for p in h.periods() if p["kind"] == "camera_down"]
    assert [(p["start"]["t"] - t, p["joins_dropped"]) for p in cams] == [(100, False), (60, False)]
    h.add_outage(t + 120, "down")  # the "down" at 60 goes: its "up" at 70 is the end of the outages dropped
    cams = [p for p in h.periods(down=True) if p["kind"] == "camera_down"]
    assert [(p["start"]["t"] - t, p["joins_dropped"]) for p in cams] == [(120, False), (100, True)]


def test_the_oldest_dated_line_says_it_had_more_when_an_older_outage_has_no_time():
    """Runs before and after one that stopped before NTP set the clock: its outage has no time, so the page
    sorts it last and joins the dropped outage to the next one; that line said "once", not "more than once"."""
    h = History(outages_kept=4)
    t = time.time() - 3600
    h.add_outage(t, "down")
    h.add_outage(t + 10, "up")  # dropped below
    h.add_outage(30.0, "down", clock_set=False)  # stamped 1970 by a run that stopped before NTP: no time now
    h.add_outage(40.0, "up", clock_set=False)
    h.add_outage(t + 100, "down")
    h.add_outage(t + 110, "up")
    cams = [p for p in h.periods() if p["kind"] == "camera_down"]
    assert [(p["start"]["t"], p["joins_dropped"]) for p in cams] == [(t + 100, True), (None, False)]


def test_the_history_file_keeps_as_many_outages_as_memory_and_stays_bounded_across_restarts(tmp_path):
    """Three runs of a flapping camera, 300 changes each: the file holds the newest OUTAGES_KEPT (and the
    one before them, which says the oldest line had more), however many runs; a restart shows them all."""
    import sqlite3

    db = tmp_path / "history.sqlite"
    start = time.time() - 3 * 3600
    for run in range(3):
        h = History(db_path=str(db))
        for i in range(run * 150, (run + 1) * 150):
            h.add_outage(start + 30 * i, "down")
            h.add_outage(start + 30 * i + 10, "up")
        h.close()
        (rows,) = sqlite3.connect(db).execute("SELECT count(*) FROM outages").fetchone()
        assert rows == OUTAGES_KEPT + 1
        cams = [p for p in History(db_path=str(db)).periods() if p["kind"] == "camera_down"]
        newest = (run + 1) * 150
        assert [p["start"]["t"] for p in cams] == [start + 30 * i for i in reversed(range(newest - len(cams), newest))]
        assert len(cams) == OUTAGES_KEPT // 2 and [p["joins_dropped"] for p in cams[-2:]] == [False, True]


def test_outages_beyond_the_alerts_count_stamped_before_ntp_set_the_clock_are_stamped_again_in_the_file(
        tmp_path, monkeypatch):
    """A Pi booted without network and a flapping camera: 60 outage changes stamped 1970, then NTP sets the
    clock. The restamps waited in a queue sized for the alerts (40): the oldest 20 stayed 1970 in the file,
    and had no time after a restart."""
    import sqlite3

    db = tmp_path / "history.sqlite"
    pi = PiClock(monkeypatch, BOOT_1970)
    stats = Stats("rt", "m", "video", history=History(db_path=str(db), write_s=0))  # in the file before NTP
    flap(stats, pi, 30)
    pi.ntp_sets(NTP_TIME)
    pi.wait(5)
    stats.update(result(3, 0, happy=3), 0, {})  # settles them
    assert stats.history.unsettled is False
    stats.history.close()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM outages WHERE clock_set = 0").fetchone() == (0,)
    periods = History(db_path=str(db)).periods(NTP_TIME + 600, 0.0)
    assert [(p["start"]["t"] - NTP_TIME, p["end"]["t"] - NTP_TIME, p["start"]["clock_set"]) for p in periods] == \
        [(30 * i - 900, 30 * i - 890, True) for i in reversed(range(30))]


def test_an_alert_stamped_by_an_unset_clock_before_a_restart_has_no_time_not_a_1970_one(tmp_path, monkeypatch):
    """Raised while the clock read 1970, then the monitor stopped before NTP set it: after the
    restart nothing tells when it came (the monotonic clock it was measured by is gone), so /status
    gives it no time rather than 1970, with clock set or not; its figures stay."""
    db = tmp_path / "history.sqlite"
    pi = PiClock(monkeypatch, BOOT_1970)
    before = Stats("rt", "m", "video", history=History(db_path=str(db)))
    before.update(result(4, 3, "raised", "raised", angry=3, happy=1), 0, {})
    before.history.close()
    pi.ntp_sets(NTP_TIME)  # the next boot, with network
    stats = Stats("rt", "m", "video", history=History(db_path=str(db)))
    stats.update(result(4, 0, "clear", "cleared", happy=4), 0, {})
    s = stats.snapshot()
    assert [(a["kind"], a["t"], a["time"], a.get("clock_set"), a["faces"]) for a in s["recent_alerts"]] == \
        [("cleared", NTP_TIME, "2026-05-12T09:30:00+00:00", True, 4), ("raised", None, None, False, 4)]
    assert [z["from"] for z in s["zones"]] == [math.floor(NTP_TIME)]  # no zone of 1970 asked for
    stats.history.close()


def test_alerts_raised_before_ntp_set_the_clock_are_stamped_again_in_memory_while_the_file_fails(tmp_path,
                                                                                                  monkeypatch):
    """The history file refusing writes while NTP sets the clock: the alert waiting for it is
    written at its true time once the file takes writes, not at the 1970 one."""
    db = tmp_path / "history.sqlite"
    pi = PiClock(monkeypatch, BOOT_1970)
    stats = Stats("rt", "m", "video", history=History(db_path=str(db)))
    stats.history._db.close()
    stats.history._db, stats.history._retry_at = None, math.inf  # failed: tried again later
    stats.update(result(3, 2, "raised", "raised", angry=2, happy=1), 0, {})
    pi.wait(30)
    pi.ntp_sets(NTP_TIME)
    stats.snapshot()
    stats.history._retry_at = 0.0  # due
    stats.history.close()
    assert [(a["t"], a.get("clock_set")) for a in History(db_path=str(db)).recent_alerts()] == [(NTP_TIME - 30, True)]


def test_history_saved_before_a_boot_with_the_clock_behind_is_kept_and_shown_once_the_clock_is_set(
        tmp_path, monkeypatch):
    """A Pi without RTC boots 40 min behind (the unit does not wait for NTP), NTP sets the clock a
    minute later: the half hour saved before the restart is neither lost from the file nor from
    the chart."""
    import sqlite3

    db = tmp_path / "history.sqlite"
    now = 1_700_000_000.0  # a multiple of 10
    h = History(step_s=10, span_s=3600, db_path=str(db))
    for s in range(0, 1800, 5):
        h.add(now - 1800 + s, 0.3, 3, False)
    h.close()
    saved = [t for (t,) in sqlite3.connect(db).execute("SELECT t FROM samples ORDER BY t")]
    assert len(saved) == 180  # the step under way at the stop too

    monkeypatch.setattr(time, "time", lambda: now - 2400)
    h = History(step_s=10, span_s=3600, db_path=str(db))
    for s in range(60):  # the first minute, on the clock that is behind
        h.add(now - 2400 + s, 0.1, 1, False)
    assert [t for (t,) in sqlite3.connect(db).execute("SELECT t FROM samples WHERE t >= ?", (now - 1800,))] == saved
    for s in range(60, 120):  # NTP has set it
        h.add(now + s, 0.1, 1, False)
    ts = [p["t"] for p in h.series()]
    assert ts == sorted(ts) and set(saved) <= set(ts) and ts[-1] == now + 110
    h.close()
    monkeypatch.setattr(time, "time", lambda: now + 120)
    assert set(saved) <= {p["t"] for p in History(step_s=10, span_s=3600, db_path=str(db)).series()}


def test_history_file_stays_bounded_whatever_the_clock_did(tmp_path):
    import sqlite3

    db = tmp_path / "history.sqlite"
    h = History(step_s=10, span_s=600, alerts_kept=3, db_path=str(db))  # 60 points in memory
    t = 1_700_000_000.0
    for i in range(300):
        h.add(t + 10 * i + (86400 if i % 100 < 50 else 0), 0.1, 1, False)  # a day ahead half the time
        h.add_alert(t + 10 * i, "raised", 0.5, 2)
    h.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] <= 2 * 60 + 1
    assert con.execute("SELECT count(*) FROM alerts").fetchone()[0] == 3


def test_history_file_is_committed_once_a_minute_not_per_point_and_an_alert_at_once(tmp_path, monkeypatch):
    """An SD card is worn by each commit (whole WAL pages, its index, the ext4 journal), not by
    the rows: an hour of points is 60 commits, not 360. A power cut loses at most the last
    minute of the chart, an alert none, a stop nothing."""
    import sqlite3

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    db = tmp_path / "history.sqlite"
    now = time.time() // 10 * 10 - 3600
    h = History(step_s=10, span_s=3600, db_path=str(db))
    commits = []
    h._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    for i in range(7200):  # an hour at 2 frames a second, on both clocks
        clock[0] += 0.5
        h.add(now + i / 2, 0.1, 2, False)
    assert len(commits) == 59  # was 359, one per 10-s point closed (the hour's 60th is due after its last)
    h.add_alert(now + 3599.5, "raised", 0.6, 3)
    assert len(commits) == 60  # the alert, with the points of the minute so far
    files = sqlite3.connect(db)
    assert files.execute("SELECT count(*) FROM samples").fetchone()[0] == 359  # every closed point
    assert files.execute("SELECT kind FROM alerts").fetchall() == [("raised",)]
    for i in range(7200, 7300):
        clock[0] += 0.5
        h.add(now + i / 2, 0.1, 2, False)
    assert files.execute("SELECT count(*) FROM samples").fetchone()[0] == 359  # 5 points wait: a power cut loses them
    h.close()
    assert files.execute("SELECT count(*) FROM samples").fetchone()[0] == 365  # the stop: them and the step under way


def history_with_points(db, end: float, seconds: int) -> History:
    """A history kept in `db`, with a point every 10 s in the `seconds` before `end`, each written
    as it closes (write_s=0)."""
    h = History(step_s=10, span_s=3600, db_path=str(db), write_s=0)
    for s in range(0, seconds, 10):
        h.add(end - seconds + s, 0.3, 3, False)
    return h


def test_a_locked_history_file_does_not_hold_up_the_frame_loop_and_is_written_once_free(tmp_path, caplog):
    import sqlite3

    caplog.set_level(logging.INFO)
    db = tmp_path / "history.sqlite"
    now = time.time() // 10 * 10
    h = history_with_points(db, now - 100, 100)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another program writing, for longer than a frame
    t0 = time.monotonic()
    h.add(now - 100, 0.3, 3, False)  # closes a step: a write
    h.add_alert(now - 95, "raised", 0.5, 3)
    assert time.monotonic() - t0 < 0.9  # a bound on a hang, 18x the 50-ms wait (sqlite's own would be 1 s+)
    other.execute("ROLLBACK")
    other.close()
    for s in range(10, 100, 10):
        h.add(now - 100 + s, 0.3, 3, False)
    h.close()
    rows = [t for (t,) in sqlite3.connect(db).execute("SELECT t FROM samples ORDER BY t")]
    assert rows == [now - 200 + s for s in range(0, 200, 10)]  # the points held back while locked too
    assert [a["kind"] for a in History(db_path=str(db)).recent_alerts()] == ["raised"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_a_restart_within_a_step_while_the_file_is_locked_joins_that_steps_saved_point_once(tmp_path):
    """The service stops and starts again within a 10-s step while another program holds the
    file: the saved hour is read at the first write the file takes, and the step's point from
    before the restart joins this run's frames in one point, not two at the same time."""
    import sqlite3

    db = tmp_path / "history.sqlite"
    t = time.time() // 10 * 10 - 30
    h = History(step_s=10, span_s=3600, db_path=str(db))
    h.add(t - 10, 0.0, 1, False)
    h.add(t + 1, 0.2, 2, False)
    h.add(t + 2, 0.2, 2, False)
    h.close()  # the step at t under way at the stop: written as it was
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")  # not even read at the start
    h = History(step_s=10, span_s=3600, db_path=str(db))
    h.add(t + 5, 0.8, 4, False)
    h.add(t + 6, 0.8, 4, False)
    other.execute("ROLLBACK")
    other.close()
    h.add_alert(t + 7, "raised", 0.8, 4)  # a write: the saved hour is read now
    h.add(t + 12, 0.1, 1, False)
    assert [(p["t"] - t, p["negative_share"], p["faces"], p["n"]) for p in h.series()] == [
        (-10, 0.0, 1, 1), (0, 0.5, 4, 4), (10, 0.1, 1, 1)]
    h.close()


def test_rows_a_lock_held_back_are_written_at_the_stop(tmp_path):
    import sqlite3

    db = tmp_path / "history.sqlite"
    now = time.time() // 10 * 10
    h = history_with_points(db, now - 100, 100)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    h.add(now - 100, 0.3, 3, False)  # closes a step while locked: the row waits in memory
    h.add_alert(now - 95, "raised", 0.5, 3)
    other.execute("ROLLBACK")
    other.close()
    h.close()  # the stop: no next write will come
    assert sqlite3.connect(db).execute("SELECT max(t) FROM samples").fetchone()[0] == now - 100  # the step under way
    assert [a["kind"] for a in History(db_path=str(db)).recent_alerts()] == ["raised"]


def history_in_a_missing_folder(tmp_path, monkeypatch):
    """(history, folder, clock, now): a file that cannot be opened, its folder not there yet, on a
    monotonic clock the test moves."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    folder = tmp_path / "state"
    h = History(step_s=10, span_s=3600, db_path=str(folder / "history.sqlite"))
    return h, folder, clock, time.time() // 10 * 10


def test_a_history_file_that_fails_for_good_is_said_once_and_tried_again_slowly(tmp_path, caplog, monkeypatch):
    import sqlite3

    caplog.set_level(logging.WARNING)
    h, folder, clock, now = history_in_a_missing_folder(tmp_path, monkeypatch)
    for s in range(0, 300, 10):
        clock[0] += 10
        h.add(now - 300 + s, 0.3, 3, False)
    assert len(caplog.records) == 1 and "history" in caplog.records[0].getMessage()
    folder.mkdir()  # someone mends it
    clock[0] += 3600  # well past the slow retry
    h.add(now, 0.3, 3, False)
    h.close()
    assert len(sqlite3.connect(folder / "history.sqlite").execute("SELECT t FROM samples").fetchall()) == 31
    assert len(caplog.records) == 1


@pytest.mark.parametrize("retry_due", [True, False])
def test_rows_a_failed_file_did_not_take_are_written_at_the_stop_or_counted(tmp_path, caplog, monkeypatch,
                                                                            retry_due):
    import sqlite3

    caplog.set_level(logging.WARNING)
    h, folder, clock, now = history_in_a_missing_folder(tmp_path, monkeypatch)
    for s in range(0, 40, 10):
        h.add(now - 40 + s, 0.3, 3, False)  # 3 steps closed and 1 under way, none written
    folder.mkdir()  # mended before the stop
    clock[0] += 3600 if retry_due else 1
    h.close()  # was: neither tried nor said
    if retry_due:
        assert len(sqlite3.connect(folder / "history.sqlite").execute("SELECT t FROM samples").fetchall()) == 4
        assert len(caplog.records) == 1  # the failure, said once
    else:
        assert caplog.records[-1].getMessage().startswith(
            f"status history file {folder / 'history.sqlite'}: the last 4 points and alerts were not saved (")


def test_an_alert_waiting_for_a_failed_file_is_not_pushed_out_by_the_points_after_it(tmp_path, monkeypatch):
    """A full card for over an hour: the chart's points past the hour may go, the alert must not."""
    import sqlite3

    h, folder, clock, now = history_in_a_missing_folder(tmp_path, monkeypatch)
    start = now - 2 * 3600
    h.add(start, 0.6, 3, True)
    h.add_alert(start + 1, "raised", 0.6, 3)
    for s in range(10, 2 * 3600, 10):  # two hours of points, none taken by the file
        clock[0] += 10
        h.add(start + s, 0.3, 3, False)
    folder.mkdir()  # space freed
    clock[0] += 3600
    h.close()
    db = sqlite3.connect(folder / "history.sqlite")
    assert db.execute("SELECT kind, t FROM alerts").fetchall() == [("raised", start + 1)]
    assert db.execute("SELECT count(*) FROM samples").fetchone()[0] == 360  # the last hour


def test_a_saved_hour_a_lock_kept_from_being_read_at_the_start_is_read_at_the_first_write(tmp_path, monkeypatch):
    import sqlite3

    db = tmp_path / "history.sqlite"
    now = time.time() // 10 * 10
    before = history_with_points(db, now - 100, 100)  # the run before the restart
    before.add_alert(now - 150, "raised", 0.5, 3)
    before.close()
    real_load_points, calls = History._load_points, []

    def busy_once(self, conn):  # another program held the file while this run read it
        calls.append(1)
        if len(calls) == 1:
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise exc
        real_load_points(self, conn)

    monkeypatch.setattr(History, "_load_points", busy_once)
    h = History(step_s=10, span_s=3600, db_path=str(db))
    assert h.series() == [] and h.recent_alerts() == []
    h.add(now - 100, 0.3, 3, False)
    h.add_alert(now - 95, "cleared", 0.2, 3)  # the first write the file takes
    h.add(now - 90, 0.3, 3, False)
    saved = [now - 200 + s for s in range(0, 100, 10)]  # with the step in progress at that stop
    assert [p["t"] for p in h.series()] == saved + [now - 100, now - 90]  # was: this run's only
    assert [a["kind"] for a in h.recent_alerts()] == ["cleared", "raised"]
    h.close()


@pytest.mark.parametrize("damage", ["garbage", "half", "name", "column", "table"])
def test_a_damaged_history_file_is_moved_aside_and_a_new_one_started(tmp_path, caplog, damage):
    import os

    caplog.set_level(logging.WARNING)
    db = tmp_path / "history.sqlite"
    now = time.time() // 10 * 10 - 100  # both points of the new file in the past when it is read again
    history_with_points(db, now, 1200).close()
    if damage == "garbage":
        db.write_bytes(os.urandom(8192))
    elif damage == "half":
        os.truncate(db, db.stat().st_size // 2)
    else:  # a byte of a name in the schema. An index's: SQLite's error quoted it, which Python could not
        # decode (a UnicodeDecodeError out of edge run at every start). A column's: the schema still parses, so
        # quick_check passed, and every write failed on the missing column, at each start for good. A table's
        # (here alerts, which has no index to miss it), in sqlite_master's name: a new empty table under the
        # right name would hide the saved rows; SQLite finds the name unlike the one its CREATE TABLE gives.
        data = db.read_bytes()  # (all found by fuzzing the file)
        at = data.index({"name": b"sqlite_autoindex_sample_frames_1", "column": b"negative_share",
                         "table": b"tablealertsalerts"}[damage]) + 9
        db.write_bytes(data[:at] + (b"\xbb" if damage == "name" else b"X") + data[at + 1:])
    h = History(step_s=10, span_s=3600, db_path=str(db))
    h.add(now, 0.2, 1, False)
    h.add(now + 10, 0.2, 1, False)
    h.close()
    (aside,) = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert aside.startswith("history.sqlite.corrupt-")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert aside in warning
    assert [p["t"] for p in History(step_s=10, span_s=3600, db_path=str(db)).series()] == [now, now + 10]  # a new file


def test_damaged_history_files_set_aside_are_kept_three_at_most(tmp_path):
    """A card that damages the file again and again must not fill up with the copies."""
    db = tmp_path / "history.sqlite"
    for i in range(5):
        old = tmp_path / f"history.sqlite.corrupt-2026010{i}T000000Z"
        old.write_bytes(b"\0" * 100)
        os.utime(old, (1e9 + i, 1e9 + i))
    (tmp_path / "history.sqlite.corrupt-20260100T000000Z-wal").write_bytes(b"\0")
    db.write_bytes(os.urandom(8192))
    History(step_s=10, span_s=3600, db_path=str(db)).close()
    kept = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    assert len(kept) == 3 and kept[:2] == ["history.sqlite.corrupt-20260103T000000Z",
                                           "history.sqlite.corrupt-20260104T000000Z"], kept
    assert db.exists()


@pytest.mark.parametrize("text", ['[status]\nhistory_db = "config.toml"\n', '{"kind":"raised","t_s":13.4}\n'])
def test_a_history_file_that_is_someone_elses_text_is_left_as_it_is(tmp_path, caplog, text):
    """status.history_db naming the config or the alerts file by mistake: that file is not a
    damaged database to move aside and replace."""
    caplog.set_level(logging.WARNING)
    other = tmp_path / "config.toml"
    other.write_text(text)
    now = time.time() // 10 * 10
    h = History(step_s=10, span_s=3600, db_path=str(other))
    h.add(now, 0.2, 1, False)
    h.add_alert(now + 1, "raised", 0.5, 3)
    h.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"] and other.read_text() == text
    assert [p["t"] for p in h.series()] == [now]  # the chart carries on in memory
    warning = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING][0]
    assert "holds text" in warning and "status.history_db" in warning


def test_a_history_file_that_cannot_be_opened_says_why_not_only_that_sqlite_could_not(tmp_path, caplog):
    """status.history_db naming a folder, or a file in a folder not made: was "unable to open
    database file", which does not say what to change."""
    caplog.set_level(logging.WARNING)
    History(step_s=10, span_s=3600, db_path=str(tmp_path)).close()
    History(step_s=10, span_s=3600, db_path=str(tmp_path / "state" / "history.sqlite")).close()
    folder, missing = (r.getMessage() for r in caplog.records)
    assert f"(it is a folder; set status.history_db to a file, e.g. {tmp_path / 'history.sqlite'})" in folder
    assert f"(its folder {tmp_path / 'state'} does not exist; make it, or set status.history_db" in missing
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cause", ["read-only disk", "folder not writable"])
def test_a_history_file_this_user_cannot_write_says_why_not_only_that_sqlite_could_not(tmp_path, caplog, monkeypatch,
                                                                                       cause):
    """An SD card remounted read-only, the unit's sandbox outside /var/lib/queue-mood, or edge run by
    hand as pi on the service's folder: SQLite says only "unable to open database file"."""
    import os
    import sqlite3

    from edge.service import history

    connect = sqlite3.connect
    # what SQLite raises there: a file it cannot create
    monkeypatch.setattr(history.sqlite3, "connect", lambda *a, **k: connect(str(tmp_path / "no" / "such.sqlite")))
    if cause == "read-only disk":
        real = os.statvfs
        monkeypatch.setattr(history.os, "statvfs", lambda p: types.SimpleNamespace(f_flag=real(p).f_flag | os.ST_RDONLY))
    else:
        monkeypatch.setattr(history.os, "access", lambda p, mode: str(p) != str(tmp_path))
    caplog.set_level(logging.WARNING)
    h = History(step_s=10, span_s=3600, db_path=str(tmp_path / "history.sqlite"))
    h.add(1_800_000_000.0, 0.2, 1, False)
    assert len(h.series()) == 1  # the chart carries on in memory
    (said,) = (r.getMessage() for r in caplog.records)
    assert {"read-only disk": f"the disk of {tmp_path} is mounted read-only",
            "folder not writable": f"this user may not write {tmp_path}; run as the service's user"}[cause] in said


def test_a_history_file_under_a_folder_this_user_cannot_enter_says_so_not_that_it_is_missing(tmp_path, caplog,
                                                                                             monkeypatch):
    """/var/lib/queue-mood (0750, the service's) read by the user pi: the folder is there."""
    import os

    from edge.service import history

    closed, real_stat = tmp_path / "closed", os.stat

    def stat(path, *args, **kwargs):
        if str(path) == str(closed):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(history.os, "stat", stat)
    caplog.set_level(logging.WARNING)
    History(step_s=10, span_s=3600, db_path=str(closed / "history.sqlite")).close()
    (said,) = (r.getMessage() for r in caplog.records)
    assert f"its folder {closed} cannot be reached by this user (Permission denied)" in said and "does not exist" not in said


def test_status_and_metrics_say_when_a_face_was_last_seen(serve):
    """A camera knocked askew or covered still delivers frames, and a queue it cannot see reads as
    calm: the page says when a face was last seen, and /metrics counts frames with faces, which
    head office's QueueMonitorSeesNoFaces compares with the same hours a week before."""
    parser = pytest.importorskip("prometheus_client.parser", reason="/metrics needs prometheus_client (edge extra)")
    stats = Stats("rt", "m", "video", device="till-3")
    base, _ = serve(stats)

    def seen():
        s = json.loads(get(base + "/status")[2])
        body = get(base + "/metrics")[2].decode()
        (frames,) = [x.value for f in parser.text_string_to_metric_families(body) for x in f.samples
                     if x.name == "queue_mood_face_frames_total"]
        return s["face_seen_at"], frames, s["now"]

    stats.update(result(0, 0), 0, {})
    assert seen()[:2] == (None, 0)  # frames, but no face since the start
    stats.update(result(2, 0, happy=2), 0, {})
    stats.update(result(1, 0, happy=1), 0, {})
    at, frames, now = seen()
    assert frames == 2 and abs((datetime.fromisoformat(now) - datetime.fromisoformat(at)).total_seconds()) <= 2
    stats.data["face_seen_at"] -= 3 * 3600  # three hours of empty frames since
    stats.update(result(0, 0), 0, {})
    stats.camera_down()  # an outage says nothing about faces either way
    at, frames, now = seen()
    assert frames == 2 and 3 * 3600 - 2 <= (datetime.fromisoformat(now) - datetime.fromisoformat(at)).total_seconds() <= 3 * 3600 + 2


def test_metrics_parse_as_prometheus_and_carry_the_fleet_series(serve):
    parser = pytest.importorskip("prometheus_client.parser", reason="/metrics needs prometheus_client (edge extra)")
    stats = Stats("ai-edge-litert x", "m", "video", device="till-3")
    base, _ = serve(stats)
    stats.update(result(4, 3, "raised", "raised", angry=3, neutral=1), 5, {"classify": 2.5})
    stats.set_sinks({"mqtt": sink_stats(failures=2)})
    stats.set_source(7, 2)
    code, headers, body = get(base + "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    fams = {f.name: f for f in parser.text_string_to_metric_families(body.decode())}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert value[("queue_mood_faces", ())] == 4 and value[("queue_mood_negative_share", ())] == 0.75
    assert value[("queue_mood_alert_raised", ())] == 1 and value[("queue_mood_alerts_raised_total", ())] == 1
    assert fams["queue_mood_alerts_raised"].type == "counter" and fams["queue_mood_frames"].type == "counter"
    assert {s.labels["emotion"]: s.value for s in fams["queue_mood_faces_by_emotion"].samples} == {
        **dict.fromkeys(LABELS, 0), "angry": 3, "neutral": 1}
    assert value[("queue_mood_sink_failures_total", (("sink", "mqtt"),))] == 2
    assert value[("queue_mood_dropped_frames_total", ())] == 5 and ("queue_mood_fps", ()) in value
    assert value[("queue_mood_camera_read_failures_total", ())] == 7 and value[("queue_mood_camera_reopens_total", ())] == 2
    (info,) = [s for f in fams.values() for s in f.samples if s.name == "queue_mood_info"]
    assert info.labels["device"] == "till-3" and info.value == 1
    from edge.service.health import clock_synced

    assert value[("queue_mood_clock_synced", ())] == int(clock_synced())  # Linux: the kernel always answers


@pytest.mark.parametrize("when", ["camera down", "before the first frame"])
def test_metrics_while_the_camera_is_down_or_before_the_first_frame_say_unknown_not_a_clear_queue_of_0_faces(
        serve, when):
    parser = pytest.importorskip("prometheus_client.parser", reason="/metrics needs prometheus_client (edge extra)")
    stats = Stats("rt", "m", "video", device="till-3")
    base, _ = serve(stats)
    if when == "camera down":
        stats.update(result(4, 3, "raised", "raised", angry=3, neutral=1), 0, {})
        stats.camera_down()
    samples = [s for f in parser.text_string_to_metric_families(get(base + "/metrics")[2].decode()) for s in f.samples]
    unknown = [s for s in samples if s.name in ("queue_mood_faces", "queue_mood_negative_share", "queue_mood_alert_raised",
                                                "queue_mood_faces_by_emotion")]
    assert len(unknown) == 3 + len(LABELS) and all(math.isnan(s.value) for s in unknown)
    assert [s.value for s in samples if s.name == "queue_mood_camera_up"] == [0 if when == "camera down" else 1]


def test_status_says_starting_until_the_first_frame_then_what_it_watched(serve):
    """Between the start and the first frame (or the camera declared down) nothing has been
    watched: no alert state is asserted and no share is known."""
    stats = Stats("rt", "m", "video", device="till-3")
    base, _ = serve(stats)
    s = json.loads(get(base + "/status")[2])
    assert s["alert_state"] == "starting" and s["negative_share"] is None and s["camera"] == "up"
    stats.update(result(2, 0, happy=2), 0, {})
    s = json.loads(get(base + "/status")[2])
    assert s["alert_state"] == "clear" and s["negative_share"] == 0.0 and s["faces"] == 2


def test_clock_synced_is_the_kernels_maximum_error_under_16_s(monkeypatch):
    """adjtimex(2) as timedated reads it: synchronized while the kernel's maximum error is under
    16 s (an NTP client keeps it there), whatever the clock state; None when the call fails."""
    import ctypes

    from edge.service import health

    def kernel(state: int, maxerror_us: int):
        def adjtimex(buf):
            ctypes.c_long.from_buffer(buf, 3 * ctypes.sizeof(ctypes.c_long)).value = maxerror_us
            return state
        return lambda: adjtimex

    for state, maxerror, want in ((5, 16_000_000, False), (0, 3_500, True), (5, 120_000, True),
                                  (0, 16_000_000, False), (-1, 0, None)):
        monkeypatch.setattr(health, "_adjtimex", kernel(state, maxerror))
        assert health.clock_synced() is want and health.read()["clock_synced"] is want
    monkeypatch.setattr(health, "_adjtimex", lambda: None)  # no libc to ask
    assert health.clock_synced() is None


def test_every_sinks_failure_counter_is_in_metrics_at_0_before_any_frame(serve, tmp_path):
    """What edge run does before the first frame (and every second after): Stats.set_sinks(Fanout.stats())."""
    from edge.sinks.jsonl import JsonlSink
    from edge.sinks.log import LogSink

    base, per_sink = _served_with_sinks(serve, [LogSink(), JsonlSink(path=str(tmp_path / "a.jsonl"))])
    assert per_sink("queue_mood_sink_failures_total") == {"log": 0, "jsonl": 0}
    assert json.loads(get(base + "/status")[2])["sink_failures"] == {"log": 0, "jsonl": 0}


def _served_with_sinks(serve, sinks):
    """What edge run does before the first frame: Stats.set_sinks(Fanout.stats()); (base URL,
    metric name -> {sink: value} on /metrics)."""
    parser = pytest.importorskip("prometheus_client.parser", reason="/metrics needs prometheus_client (edge extra)")
    from edge.sinks import Fanout

    stats = Stats("rt", "m", "video", device="till-3")
    base, _ = serve(stats)
    fan = Fanout(sinks, flush_every_s=3600)
    try:
        stats.set_sinks(fan.stats())
    finally:
        fan.close()
    body = get(base + "/metrics")[2].decode()
    samples = [s for f in parser.text_string_to_metric_families(body) for s in f.samples]
    return base, lambda name: {s.labels["sink"]: s.value for s in samples if s.name == name}


def test_a_sink_that_could_not_start_is_sink_disabled_1_in_metrics(serve):
    """Its failure counter starts at 1 (the failed start), a step Prometheus's increase() never
    sees; the gauge is what HQ's QueueMonitorSinkDisabled alert reads."""
    from edge.sinks.base import DisabledSink
    from edge.sinks.log import LogSink

    _, per_sink = _served_with_sinks(serve, [LogSink(), DisabledSink("gpio", "no GPIO here")])
    assert per_sink("queue_mood_sink_disabled") == {"log": 0, "gpio": 1}


def test_metrics_import_does_not_pull_numpy():
    import subprocess
    import sys

    code = ("import sys; from edge.service.exposition import render; from edge.service.status import Stats; "
            "render(Stats('rt', 'm', 'v').snapshot); print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_token_auth_refuses_without_and_accepts_header_link_and_cookie(serve):
    base, _ = serve(token=TOKEN)
    for path in ("/", "/status", "/metrics", "/history", "/static/app.js"):
        code, headers, _ = get(base + path)
        assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
    assert get(base + "/status", {"Authorization": "Bearer wrong-token-of-same-size"})[0] == 401
    assert get(base + "/status", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    code, headers, _ = get(base + f"/?token={TOKEN}")  # the manager's link
    assert code == 303 and headers["Location"] == "/"  # the token leaves the address bar
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Lax" in headers["Set-Cookie"]
    assert get(base + "/status", {"Cookie": cookie})[0] == 200
    assert get(base + "/status", {"Cookie": "qm_token=nope"})[0] == 401


def asked_as(port: int, host: str | None, path: str = "/status", method: str = "GET") -> tuple[int, bytes]:
    """(status, body) of a request whose Host is `host` (None: no Host, as HTTP/1.0 may send)."""
    head = f"{method} {path} HTTP/1.0\r\n" + (f"Host: {host}\r\n" if host is not None else "")
    reply = raw(port, (head + "\r\n").encode())
    first, _, rest = reply.partition(b"\r\n")
    return int(first.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_without_a_token_a_request_addressed_to_another_name_gets_nothing(serve, caplog, monkeypatch):
    """DNS rebinding: a web page on a site of its own points its name at 127.0.0.1, and a browser
    on the Pi (or tunnelled to it) would read the page's counts and the device's name as that
    site's. Without a token only the names no site can take are answered, on every path."""
    from edge.service import status

    monkeypatch.setattr(status, "RATE_BURST", 1000)  # it asks faster than any page does (Rates)
    base, srv = serve(allowed_hosts=["Queue-Pi.lan"])
    port, me = srv.port, socket.gethostname()
    caplog.set_level(logging.DEBUG, logger="edge.service.status")
    bodies = set()
    for path in ("/", "/static/app.js", "/static/style.css", "/status", "/history", "/metrics", "/nothing"):
        for method in ("GET", "HEAD"):
            code, body = asked_as(port, f"rebound.example:{port}", path, method)
            assert code == 403 and (body == b"") == (method == "HEAD"), (path, method, code, body)
            bodies.add(body)
    (said,) = bodies - {b""}  # what to do, the same everywhere: nothing of the monitor's
    assert b"[status] allowed_hosts" in said and b"[status] token" in said and b"till-3" not in said, said
    for host in ("127.0.0.1", f"127.0.0.1:{port}", f"[::1]:{port}", "[::1]", f"localhost:{port}", "LocalHost",
                 "localhost.", me, f"{me}.local:{port}", "queue-pi.lan", f"QUEUE-PI.LAN:{port}", "192.168.1.20", None):
        code, body = asked_as(port, host)
        assert code == 200 and b"till-3" in body, (host, code, body)
    for host in ("localhost.rebound.example", "127.0.0.1.rebound.example", "[::1", "::1", f"x@127.0.0.1:{port}",
                 "localhost:http", f"{me}.rebound.example"):
        assert asked_as(port, host)[0] == 403, host
    assert get(base + "/")[0] == 200 and get(base.replace("127.0.0.1", "localhost") + "/status")[0] == 200
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "rebound.example" in said[0] and "allowed_hosts" in said[0], said  # once, not per request


def test_with_a_token_any_name_is_answered_to_the_credentials(serve):
    """A token (or password) already keeps a rebinding page out, and a reverse proxy passes its own Host."""
    base, srv = serve(token=TOKEN)
    assert asked_as(srv.port, "queue.example.com", "/status")[0] == 401
    head = f"GET /status HTTP/1.0\r\nHost: queue.example.com\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    assert raw(srv.port, head.encode()).startswith(b"HTTP/1.0 200")


@pytest.mark.parametrize("names", [["http://queue-pi.lan"], ["queue-pi.lan:8765"], [""], ["queue pi"], ["a/b"],
                                   ["a" * 254]])  # a DNS name is 253 characters at most
def test_allowed_hosts_takes_bare_host_names_only(names):
    with pytest.raises(ConfigError, match=r"status\.allowed_hosts.*host names .*without scheme, port or path"):
        load_config(None, {"status.allowed_hosts": names})
    with pytest.raises(ConfigError, match=r"status\.allowed_hosts.*a list of strings"):
        load_config(None, {"status.allowed_hosts": "queue-pi.lan"})
    assert load_config(None, {"status.allowed_hosts": ["queue-pi.lan", "pi.local.", "a" * 253 + "."]}).status.allowed_hosts


def test_basic_auth_password(serve):
    base, _ = serve(user="manager", password="correct horse")

    def basic(user, pw):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

    code, headers, _ = get(base + "/")
    assert code == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert get(base + "/", basic("manager", "correct horse"))[0] == 200
    assert get(base + "/", basic("manager", "wrong"))[0] == 401
    assert get(base + "/", basic("someone", "correct horse"))[0] == 401
    assert get(base + "/", {"Authorization": "Basic !!notbase64"})[0] == 401


@pytest.mark.parametrize("cfg, login", [({"token": TOKEN}, "token"), ({"password": "correct horse"}, "password"),
                                        ({"token": TOKEN, "password": "correct horse"}, "token password")])
def test_the_pages_refused_polls_get_no_password_prompt_but_what_opens_the_page(serve, cfg, login):
    """A browser asks for the password on a fetch answered with a Basic challenge, and the page's poll
    gives up after 8 s, taking the prompt away again: the page's own polls (X-Queue-Mood-Poll) get none,
    and what this monitor opens the page with; a visit to the page itself is challenged as before."""
    base, _ = serve(**cfg)
    for path in ("/status", "/history"):
        code, headers, _ = get(base + path, {"X-Queue-Mood-Poll": "1"})
        assert code == 401 and "WWW-Authenticate" not in headers and headers["X-Queue-Mood-Login"] == login, path
    code, headers, _ = get(base + "/")
    assert code == 401 and headers["WWW-Authenticate"].split()[0] == ("Basic" if "password" in cfg else "Bearer")
    assert "X-Queue-Mood-Login" not in headers


def test_read_only(serve):
    base, _ = serve()
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        req = urllib.request.Request(base + "/status", data=b"{}", method=method)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 405 and e.value.headers["Allow"] == "GET, HEAD", method
        assert e.value.headers["X-Content-Type-Options"] == "nosniff"  # the page's headers on errors too
    assert get(base + "/status")[1]["Server"] == "queue-mood"


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


def test_errors_never_echo_the_request_line_with_its_token(serve):
    base, srv = serve(token=TOKEN)
    reply = raw(srv.port, f"GET /a\tb?token={TOKEN} HTTP/1.0\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.0 400") and TOKEN.encode() not in reply and b"nosniff" in reply


def test_a_target_urlsplit_refuses_is_a_400_not_a_warning_per_request(serve, caplog):
    """Anyone on the network, no token needed: a journal line per request would flood it (journald
    then drops the service's own lines, alerts and all)."""
    base, srv = serve(token=TOKEN)
    caplog.set_level(logging.DEBUG, logger="edge.service.status")
    for _ in range(3):
        reply = raw(srv.port, b"GET http://[/status HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.0 400") and b"nosniff" in reply
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_request_head_past_its_cap_is_431_before_it_is_parsed(serve):
    """Left to http.server, a head may be 100 lines of 64 KiB: some 30 MB of parsing a connection
    before the token is looked at (16 such connections at once took the server from 40 to 540 MB).
    The request line and the headers have budgets of their own: a short line leaves the headers no more."""
    from edge.service.status import HEADERS_MAX

    base, srv = serve(token=TOKEN)

    def head(size: int, line: str = "GET /status HTTP/1.0") -> bytes:  # headers of exactly size bytes
        pad = b"X-Pad: " + b"a" * 30000 + b"\r\nX-Pad: "
        return f"{line}\r\n".encode() + pad + b"b" * (size - len(pad) - 4) + b"\r\n\r\n"

    long_line = f"GET /status?pad={'p' * 60000} HTTP/1.0"
    for line in ("GET /status HTTP/1.0", long_line):
        assert raw(srv.port, head(HEADERS_MAX, line)).startswith(b"HTTP/1.0 401")  # read whole; no token
        assert raw(srv.port, head(HEADERS_MAX + 1, line)).startswith(b"HTTP/1.0 431")
    assert get(base + "/status", {"Cookie": f"other={'c' * 4000}; qm_token={TOKEN}"})[0] == 200


def test_the_link_redirects_only_to_the_page_and_renews_the_cookie(serve):
    base, srv = serve(token=TOKEN)
    # a link someone else wrote: /\\evil.example is //evil.example to a browser
    reply = raw(srv.port, f"GET /\\evil.example?token={TOKEN} HTTP/1.0\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.0 303") and b"\r\nLocation: /\r\n" in reply
    code, headers, _ = get(base + f"/status?token={TOKEN}")
    assert code == 303 and headers["Location"] == "/status"
    # opened again with the cookie already set: a fresh cookie, and the token leaves the address bar
    code, headers, _ = get(base + f"/?token={TOKEN}", {"Cookie": f"qm_token={TOKEN}"})
    assert code == 303 and headers["Location"] == "/" and "Max-Age=2592000" in headers["Set-Cookie"]


def test_every_answer_to_the_cookie_renews_it_so_a_polling_wall_display_stays_signed_in(serve):
    base, srv = serve(token=TOKEN)
    cookie = get(base + f"/?token={TOKEN}")[1]["Set-Cookie"].split(";")[0]
    for path in ("/", "/status", "/history"):
        code, headers, _ = get(base + path, {"Cookie": cookie})
        assert code == 200 and headers["Set-Cookie"].startswith(f"{cookie};")
        assert "Max-Age=2592000" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
    # a bearer header (a script, Prometheus) gets no cookie it did not ask for; a refused cookie none
    code, headers, _ = get(base + "/status", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200 and "Set-Cookie" not in headers
    code, headers, _ = get(base + "/status", {"Cookie": "qm_token=wrong-token-0123456789"})
    assert code == 401 and "Set-Cookie" not in headers


def test_a_client_trickling_its_request_loses_the_connection_at_the_idle_timeout(serve):
    base, srv = serve(idle_timeout_s=0.5)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    start, closed = time.monotonic(), False
    s.sendall(b"GET /status HTTP/1.1\r\nX-Pad: ")
    while time.monotonic() - start < 10:  # a byte every 0.1 s: every read comes well within the timeout
        try:
            s.sendall(b"a")
        except OSError:
            closed = True
            break
        time.sleep(0.1)
    s.close()
    assert closed and time.monotonic() - start < 3
    assert get(base + "/status")[0] == 200


class Stalled(Stats):
    """/status answers only once `gate` is set: requests in progress that hold their handlers."""

    def __init__(self, gate):
        super().__init__("ai-edge-litert x", "model.tflite", "video", device="till-3")
        self.gate, self.held = gate, 0

    def snapshot(self):
        self.held += 1  # the request is in progress: its head read, its answer being made
        self.gate.wait(30)
        return super().snapshot()


def in_progress(base, srv, stats, n: int) -> list:
    """n /status requests that hold their handlers (the server's stats are Stalled) until its gate opens."""
    threads = [threading.Thread(target=get, args=(base + "/status",), daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    assert wait_for(lambda: srv.httpd.busy == n and stats.held == n)
    return threads


def waiting(port: int, n: int) -> list:
    """n connections that sent a request line and then nothing: each holds a handler, waiting for its head."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    for s in socks:
        s.sendall(b"GET / HTTP/1.1\r\n")
    return socks


def hung_up(s, wait_s: float = 1.0) -> bool:
    """Whether the server closed this connection (within wait_s)."""
    s.settimeout(wait_s)
    try:
        return s.recv(100) == b""
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


def test_one_network_host_holds_at_most_half_the_handlers(serve, monkeypatch, caplog):
    from edge.service import status

    monkeypatch.setattr(status, "_loopback", lambda host: False)  # the test's 127.0.0.1 stands for a LAN host
    gate = threading.Event()
    stats = Stalled(gate)
    base, srv = serve(stats, max_clients=10, idle_timeout_s=30)
    held = in_progress(base, srv, stats, 5)
    with caplog.at_level(logging.WARNING, logger="edge.service.status"):
        assert get(base + "/")[0] == 503  # a sixth connection from the same host, its five all in progress
        assert get(base + "/")[0] == 503
    assert srv.httpd.busy == 5  # half the handlers left for everyone else
    assert len([r for r in caplog.records if "turned away" in r.getMessage()]) == 1  # one line, not one per request
    gate.set()
    for t in held:
        t.join(10)
    assert wait_for(lambda: srv.httpd.busy == 0)


@pytest.mark.slow
def test_a_host_at_its_share_is_refused_at_once_and_keeps_its_connections(serve, monkeypatch):
    """Refused, not given a thread to cut one of its own: a client reconnecting as fast as it can
    would otherwise cost a thread each time and slow the accepting thread for everyone."""
    from edge.service import status

    monkeypatch.setattr(status, "_loopback", lambda host: False)
    base, srv = serve(max_clients=10, idle_timeout_s=30)
    idle = waiting(srv.port, 5)
    try:
        assert wait_for(lambda: len(srv.httpd._waiting) == 5)
        assert get(base + "/")[0] == 503
        assert not any(map(hung_up, idle)) and srv.httpd.busy == 5
    finally:
        for s in idle:
            s.close()


@pytest.mark.slow
def test_two_hosts_holding_idle_connections_cannot_lock_others_out(serve, monkeypatch, caplog):
    """Found in a review: two addresses on the store network, each at its share of idle connections
    and reconnecting as the idle cut dropped them, kept the page and head office's scrape at 503
    without a credential. A connection that has not sent its request head is cut to make room."""
    from edge.service import status

    monkeypatch.setattr(status, "_loopback", lambda host: False)
    base, srv = serve(token=TOKEN, max_clients=4, idle_timeout_s=30)
    theirs = []

    def hold(host: str):  # one more idle connection from an attacker's address
        mine, their = socket.socketpair()
        srv.httpd.process_request(their, (host, 40000 + len(theirs)))
        mine.sendall(b"GET / HTTP/1.1\r\n")
        theirs.append(mine)

    try:
        for host in ["10.0.0.7", "10.0.0.7", "10.0.0.8", "10.0.0.8"]:
            hold(host)
        with caplog.at_level(logging.WARNING, logger="edge.service.status"):
            for i in range(3):  # head office's scrape, each time into a full server
                assert wait_for(lambda: srv.httpd.busy == 4 and len(srv.httpd._waiting) == 4)
                assert get(base + "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
                assert wait_for(lambda: srv.httpd.busy == 3)  # the scrape's handler has ended
                hold(f"10.0.0.{7 + i % 2}")  # the attacker reconnects
        assert sum(map(hung_up, theirs)) == 3  # one cut for each request, the longest-waiting first
        assert not any(map(hung_up, theirs[-3:]))
        (said,) = [r.getMessage() for r in caplog.records]  # once a minute at most, not once a connection
        assert "that had sent no request, to make room for 127.0.0.1" in said
        assert wait_for(lambda: srv.httpd.busy == 4)  # each place given back once: when cut, not again when its thread ended
    finally:
        for s in theirs:
            s.close()


def test_binding_beyond_loopback_needs_a_token_or_password():
    with pytest.raises(ConfigError, match=r"status\.host.*status\.token, status\.password or status\.metrics_token"):
        load_config(None, {"status.host": "0.0.0.0"})
    with pytest.raises(ConfigError, match=r"status\.token") as e:
        load_config(None, {"status.host": "0.0.0.0", "status.token": "short"})
    assert "short" not in str(e.value)  # never echo a secret
    assert load_config(None, {"status.host": "0.0.0.0", "status.token": TOKEN}).status.token == TOKEN
    assert load_config(None, {"status.host": "::1"}).status.host == "::1"
    assert load_config(None, {"status.host": "192.168.1.20", "status.password": "long enough"})


def test_idle_connection_is_closed_and_the_thread_freed(serve):
    base, srv = serve(idle_timeout_s=0.3)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    s.sendall(b"GET /status HTTP/1.1\r\n")  # starts a request, then goes quiet
    assert s.recv(1024) == b""  # the server hung up on it
    s.close()
    assert get(base + "/status")[0] == 200


def test_thread_cap_answers_503_instead_of_piling_up_threads(serve):
    gate = threading.Event()
    stats = Stalled(gate)
    base, srv = serve(stats, max_clients=2, idle_timeout_s=30)
    held = in_progress(base, srv, stats, 2)
    assert get(base + "/")[0] == 503
    gate.set()
    for t in held:
        t.join(10)
    # a client has its answer a moment before the handler's thread gives its place back
    assert wait_for(lambda: srv.httpd.busy == 0)
    assert get(base + "/")[0] == 200


def test_client_disconnects_are_debug_lines_without_traceback(serve, caplog, capfd):
    base, srv = serve()
    caplog.set_level(logging.DEBUG, logger="edge.service.status")
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # half a request, then a reset
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    deadline = time.monotonic() + 10
    while not any("went away" in r.message for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("went away" in r.message for r in caplog.records)
    assert all(r.levelno == logging.DEBUG and not r.exc_info for r in caplog.records)
    assert "Traceback" not in capfd.readouterr().err
    assert get(base + "/status")[0] == 200


@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:pw@10.0.0.9:554/stream1", "rtsp://***@10.0.0.9:554/stream1"),
    ("http://cam.local/video?user=a&token=xyz", "http://cam.local/video?***"),
    ("https://[fe80::1]:8443/a#frag", "https://[fe80::1]:8443/a#***"),
    ("http://user:pw@host:99999/", "http://***"),  # unparseable (port): only the scheme is left
])
def test_redact_url(url, shown):
    from edge.redact import redact_text, redact_url

    assert redact_url(url) == shown
    assert redact_text(f"stream {url} (reopening)") == f"stream {shown} (reopening)"
    assert redact_text("video /tmp/a b.mp4") == "video /tmp/a b.mp4"


def test_a_stream_url_with_credentials_is_not_echoed_when_it_fails():
    from tests.conftest import run_cli

    r = run_cli("run", "--source", "http://viewer:s3cret@127.0.0.1:9/cam.mjpg?token=abc123", timeout=120)
    assert r.returncode == 2 and "Cannot open stream http://***@127.0.0.1:9/cam.mjpg?***" in r.stderr, r.stderr
    assert "s3cret" not in r.stdout + r.stderr and "abc123" not in r.stdout + r.stderr


def test_doctor_warns_when_the_network_address_answers_without_auth(serve):
    from edge.config import Config
    from edge.ops.doctor.context import OK, WARN, DoctorSettings, _Context
    from edge.ops.doctor.status_page import _lan_address, check_status

    lan = _lan_address()
    if lan is None:
        pytest.skip("this machine has no non-loopback address to probe")
    open_srv = StatusServer(Stats("rt", "m", "v"), StatusConfig(host="0.0.0.0", port=0))  # as an old version would
    open_srv.start()
    try:
        cfg = Config()
        cfg.status.port = open_srv.port
        ctx = _Context(DoctorSettings())
        check_status(ctx, cfg)
        warn = [c for c in ctx.checks if c.name == "status auth"]
        assert warn and warn[0].status == WARN and f"{lan}:{open_srv.port}" in warn[0].detail
    finally:
        open_srv.stop()
    guarded = StatusServer(Stats("rt", "m", "v"), StatusConfig(host="0.0.0.0", port=0, token=TOKEN)).start()
    try:
        cfg = load_config(None, {"status.host": "0.0.0.0", "status.token": TOKEN, "status.port": guarded.port})
        ctx = _Context(DoctorSettings())
        check_status(ctx, cfg)
        assert [c.status for c in ctx.checks] == [OK] and "a token required" in ctx.checks[0].detail
    finally:
        guarded.stop()


def test_doctor_fails_a_status_port_another_program_holds_and_explains_port_0():
    import socket

    from edge.config import Config
    from edge.ops.doctor.context import FAIL, OK, DoctorSettings, _Context
    from edge.ops.doctor.status_page import check_status

    def status_line(port):
        cfg = Config()
        cfg.status.port = port
        ctx = _Context(DoctorSettings())
        check_status(ctx, cfg)
        (line,) = [c for c in ctx.checks if c.name == "status page"]
        return line

    with socket.socket() as other:  # another program on the port: edge run would start without its page
        other.bind(("127.0.0.1", 0))
        other.listen()
        line = status_line(other.getsockname()[1])
        assert line.status == FAIL and "taken by another program" in line.detail
    ours = StatusServer(Stats("rt", "m", "v"), StatusConfig(port=0)).start()  # the monitor itself: fine
    try:
        line = status_line(ours.port)
        assert line.status == OK and "queue-mood monitor running now" in line.detail
    finally:
        ours.stop()
    line = status_line(0)
    assert line.status == OK and "localhost:0" not in line.detail and "port = 0" in line.detail


def test_doctor_warns_of_a_history_file_edge_run_cannot_write_and_makes_none(tmp_path, monkeypatch):
    """status.history_db in a folder that does not exist, or on a disk mounted read-only: edge run keeps
    the chart in memory only and says so in its log, while `edge doctor` said nothing of it."""
    from edge.ops.doctor import diagnose
    from edge.ops.doctor.context import OK, WARN, DoctorSettings

    monkeypatch.setattr("edge.ops.doctor.camera.service_active", lambda: False)

    def row(history_db: Path):
        config = tmp_path / "store.toml"
        config.write_text(f'[sinks]\nspool_dir = "{tmp_path / "spool"}"\n[status]\nport = 0\n'
                          f'history_db = "{history_db}"\n')
        (found,) = [c for c in diagnose(DoctorSettings(config=str(config))) if c.name == "status history"]
        return found.status, found.detail

    status, detail = row(tmp_path / "gone" / "history.sqlite")
    assert status == WARN and detail == (
        f"{tmp_path / 'gone' / 'history.sqlite'} cannot be written (its folder {tmp_path / 'gone'} does not exist; "
        "make it, or set status.history_db to a file in a folder that does): edge run keeps the page's last hour in "
        "memory only, lost at each restart"), detail
    assert row(tmp_path / "history.sqlite") == (OK, f"the page's last hour is kept in {tmp_path / 'history.sqlite'} "
                                                    "across restarts")
    assert not (tmp_path / "history.sqlite").exists()  # the doctor makes no file of its own
    import edge.service.history

    real = os.statvfs

    def statvfs(path):  # the card remounted read-only after errors (root may write anything else)
        st = real(path)
        fields = {k: getattr(st, k) for k in dir(st) if k.startswith("f_")}
        return types.SimpleNamespace(**{**fields, "f_flag": st.f_flag | os.ST_RDONLY}) if str(path) == str(tmp_path) else st

    monkeypatch.setattr(edge.service.history.os, "statvfs", statvfs)
    status, detail = row(tmp_path / "history.sqlite")
    assert status == WARN and f"the disk of {tmp_path} is mounted read-only" in detail, detail


def test_doctor_as_root_fails_a_status_port_the_services_user_may_not_listen_on(monkeypatch, tmp_path):
    """`sudo edge doctor --config /etc/queue-mood/config.toml` with [status] port = 80 bound the port as
    root and said OK; the service's user (its unit grants no capability) may not, and ran without its page."""
    import shutil

    from edge.config import Config
    from edge.ops.doctor.context import FAIL, OK, DoctorSettings, _Context
    from edge.ops.doctor import status_page
    from edge.ops.doctor.status_page import check_status

    unit = tmp_path / "queue-mood.service"
    shutil.copy(Path(__file__).parents[1] / "deploy" / "queue-mood.service", unit)
    monkeypatch.setattr("edge.ops.doctor.config.UNIT_FILE", unit)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(status_page, "unprivileged_port_start", lambda: 1024, raising=False)
    monkeypatch.setattr(status_page, "port_verdict", lambda host, port: None)  # free: root may bind any port
    monkeypatch.setattr(status_page, "_lan_address", lambda: None)

    def status_line(port: int, home: str = "/var/lib/queue-mood"):
        cfg = Config()
        cfg.status.port = port
        ctx = _Context(DoctorSettings())
        ctx.home = home  # set for the installed service's config only
        check_status(ctx, cfg)
        (line,) = [c for c in ctx.checks if c.name == "status page"]
        return line.status, line.detail

    status, detail = status_line(80)
    assert status == FAIL and detail == (
        "port 80: this doctor, as root, may listen there, but not the service's user queue-mood (ports below 1024 "
        "need root), so edge run would run without its page; choose [status] port above 1023, e.g. 8765"), detail
    assert status_line(8080)[0] == OK
    assert status_line(80, home="")[0] == OK  # another config: root's own edge run may listen there
    (tmp_path / "queue-mood.service.d").mkdir()  # a drop-in that grants the service the capability
    (tmp_path / "queue-mood.service.d" / "port.conf").write_text(
        "[Service]\nAmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n")
    assert status_line(80)[0] == OK


def test_process_cpu_share_is_cpu_seconds_per_wall_second_over_the_interval():
    from edge.service.health import CpuShare

    clock, cpu = [100.0], [7.0]
    share = CpuShare(every_s=5.0, clock=lambda: clock[0], cpu=lambda: cpu[0])
    assert share.sample() is None  # nothing to average yet
    clock[0], cpu[0] = 103.0, 7.6
    assert share.sample() is None  # not every_s yet
    clock[0], cpu[0] = 110.0, 9.5
    assert share.sample() == pytest.approx(0.25)  # 2.5 CPU s over 10 s: a quarter of a core
    clock[0], cpu[0] = 115.0, 14.5
    assert share.sample() == pytest.approx(1.0)  # one core busy over the next 5 s


def test_fps_is_frames_per_second_when_frames_come_in_bursts(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    stats = Stats("rt", "m", "video")
    for i in range(400):  # a frame 1 ms after the last, then one 99 ms later: 20 frames a second
        clock[0] += 0.001 if i % 2 else 0.099
        stats.update(result(1, 0), 0, {})
    assert stats.data["fps"] == pytest.approx(20.0, rel=0.1)  # the old mean of 1/dt read about 500


def test_a_host_turned_away_by_a_full_server_is_not_counted_and_no_timer_is_left(serve, monkeypatch):
    from edge.service import status

    monkeypatch.setattr(status, "_loopback", lambda host: False)
    gate = threading.Event()
    stats = Stalled(gate)
    base, srv = serve(stats, max_clients=1, idle_timeout_s=30)
    held = in_progress(base, srv, stats, 1)
    for _ in range(3):  # another host meets the full server: refused, and its count given back each time
        mine, theirs = socket.socketpair()
        srv.httpd.process_request(theirs, ("10.0.0.9", 40000))
        assert mine.recv(100).startswith(b"HTTP/1.0 503")
        mine.close()
    assert "10.0.0.9" not in srv.httpd._held
    gate.set()
    held[0].join(10)
    assert wait_for(lambda: not srv.httpd._held and not [t for t in threading.enumerate() if isinstance(t, threading.Timer)])
    assert get(base + "/")[0] == 200


def test_loopback_includes_ipv4_mapped_addresses():
    from edge.service.status import _loopback

    assert all(_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.2"))
    assert not any(_loopback(h) for h in ("192.168.1.5", "::ffff:192.168.1.5", "fe80::1", "not-an-ip"))


def palettes() -> dict[str, dict[str, str]]:
    """The page's colour variables (style.css), per colour scheme."""
    from edge.service import status

    css = (Path(status.__file__).parent / "web" / "style.css").read_text()
    blocks = {"light": re.search(r"^:root \{([^}]*)\}", css, re.M),
              "dark": re.search(r"@media \(prefers-color-scheme: dark\) \{\s*:root \{([^}]*)\}", css)}
    return {name: dict(re.findall(r"--([\w-]+):\s*(#[0-9a-f]{6})", block.group(1))) for name, block in blocks.items()
            if block}


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    def luminance(hex_):
        c = [int(hex_[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in c)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# (text, background): every text colour on the backgrounds it is drawn on
TEXT_ON = [("fg", "bg"), ("fg", "card"), ("fg", "raised-bg"), ("fg", "warn-bg"),  # figures, advice, stale banner
           ("muted", "bg"), ("muted", "card"), ("muted", "raised-bg"), ("muted", "warn-bg"),  # "since …", headings
           ("share", "raised-bg"), ("ok", "card"), ("warn", "warn-bg"),  # RAISED, clear, CAMERA DOWN
           ("warn", "card")]  # "unhappy again: a new alert can be raised from …", 16 px


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_pages_text_meets_wcag_aa_contrast_on_every_background_it_stands_on(scheme):
    """In a bright shop and, with the screen's dark setting (prefers-color-scheme), in a dim back office."""
    assert scheme in palettes(), "style.css has no palette for this colour scheme"
    colours = palettes()[scheme]
    assert set(colours) == set(palettes()["light"]), "every colour of the light palette has a dark one"
    low = {f"{fg} on {bg}": round(contrast(colours[fg], colours[bg]), 2) for fg, bg in TEXT_ON
           if contrast(colours[fg], colours[bg]) < 4.5}
    assert low == {}, low


def test_a_host_guessing_credentials_is_refused_for_a_while_and_said_once(serve, monkeypatch, caplog):
    """Found in a review: a script tried 533 passwords a second, unlogged. Twenty different wrong
    ones in a minute close the door to that host; the same wrong value again (a page polling with
    an old cookie) counts once, and this Pi itself is never shut out."""
    from edge.service import status

    monkeypatch.setattr(status, "RATE_BURST", 1000)  # it guesses faster than the rate allows (Rates)
    base, srv = serve(token=TOKEN)
    for _ in range(40):  # this Pi itself (a check, a proxy) is never counted
        assert get(base + f"/status?token=local-{_:04d}-0123456789")[0] == 401
    monkeypatch.setattr(status, "_loopback", lambda host: False)  # the test's 127.0.0.1 stands for a LAN host
    for _ in range(40):  # an old cookie, polled: one wrong value
        assert get(base + "/status", {"Cookie": "qm_token=an-old-cookie-0123456789"})[0] == 401
    for i in range(status.GUESSES_MAX - 2):
        assert get(base + f"/status?token=guess-{i:04d}-0123456789")[0] == 401
    with caplog.at_level(logging.WARNING, logger="edge.service.status"):
        assert get(base + "/status", {"Authorization": "Bearer guess-last-0123456789"})[0] == 401
        code, headers, body = get(base + "/status", {"Authorization": f"Bearer {TOKEN}"})  # the right one, too late
        assert code == 429 and 0 < int(headers["Retry-After"]) <= 60 and b"try again" in body
        assert get(base + "/status?token=another-guess-0123456789")[0] == 429
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "127.0.0.1" in said[0] and "wrong tokens or passwords" in said[0], said
    assert TOKEN not in caplog.text and "guess-" not in caplog.text
    monkeypatch.setattr(status.time, "monotonic", lambda real=time.monotonic: real() + 61)  # a minute later
    assert get(base + "/status", {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def connect(srv, host: str, token: str = TOKEN):
    """One /status request from `host` handed to the server (a socket pair stands for its connection): the client's end."""
    mine, theirs = socket.socketpair()
    mine.settimeout(10)
    mine.sendall(f"GET /status HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    srv.httpd.process_request(theirs, (host, 40000))
    return mine


def asked(srv, host: str, token: str = TOKEN) -> bytes:
    """The start of the answer to one /status request from `host`."""
    with connect(srv, host, token) as mine:
        return mine.recv(100)


TOO_MANY = b"HTTP/1.0 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"


def test_a_host_asking_faster_than_any_page_is_answered_429_before_anything_else(serve, monkeypatch, caplog):
    """Found in a review: one host on the store network asking 1,100 times a second (401s, no
    token) cost the monitor half a core of a fast x86, and the frame loop's detect time quadrupled;
    a Pi's cores are several times slower. Past RATE_BURST at once and RATE_PER_S a second a
    host is answered 429 without a thread, a parse or a credential looked at; loopback too."""
    from edge.service import status

    clock = [1000.0]
    monkeypatch.setattr(status, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    monkeypatch.setattr(status, "HOLD_S", 0.0)  # answered at once (held a second: the test below)
    base, srv = serve(token=TOKEN)
    for host in ("10.0.0.5", "127.0.0.1"):
        assert all(asked(srv, host).startswith(b"HTTP/1.0 200") for _ in range(status.RATE_BURST))
        with caplog.at_level(logging.WARNING, logger="edge.service.status"):
            for _ in range(50):  # the right token changes nothing: it is not looked at
                assert asked(srv, host) == TOO_MANY
    assert asked(srv, "10.0.0.6").startswith(b"HTTP/1.0 200")  # another host is served meanwhile
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "10.0.0.5" in said[0] and "429" in said[0], said  # once a minute, not once a request
    clock[0] += 1.0  # a second later: RATE_PER_S more
    served = [asked(srv, "10.0.0.5").startswith(b"HTTP/1.0 200") for _ in range(20)]
    assert served == [True] * int(status.RATE_PER_S) + [False] * (20 - int(status.RATE_PER_S))
    clock[0] += status.REFUSAL_LOG_EVERY_S
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.service.status"):
        assert all(asked(srv, "10.0.0.5").startswith(b"HTTP/1.0 200") for _ in range(status.RATE_BURST))
        assert asked(srv, "10.0.0.5").startswith(b"HTTP/1.0 429")
    (said,) = [r.getMessage() for r in caplog.records]
    assert "(109 more like it since the last one said" in said, said  # 49 + loopback's 50 + 10: counted, not lost
    assert wait_for(lambda: srv.httpd.busy == 0)


def test_a_refusal_past_the_rate_is_answered_a_second_late_without_a_thread(serve, monkeypatch):
    """Answered at once, a client asking again as soon as answered (a reload loop, a script) was
    refused some 9,000 times a second, and that still cost the monitor 0.43 core. Held HOLD_S, its
    8 connections ask 8 times a second. At most HOLD_MAX are held; a stop answers them."""
    from edge.service import status

    clock = [1000.0]
    monkeypatch.setattr(status, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    base, srv = serve(token=TOKEN)
    assert all(asked(srv, "10.0.0.5").startswith(b"HTTP/1.0 200") for _ in range(status.RATE_BURST))
    assert wait_for(lambda: srv.httpd.busy == 0)
    held = [connect(srv, "10.0.0.5") for _ in range(status.HOLD_MAX)]
    assert srv.httpd.busy == 0 and len(srv.httpd._holding) == status.HOLD_MAX  # held, no thread for any
    for s in held[:2]:
        s.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing said yet
            s.recv(100)
        s.setblocking(True)
    assert connect(srv, "10.0.0.5").recv(100) == TOO_MANY  # past HOLD_MAX: at once
    clock[0] += status.HOLD_S
    assert [s.recv(100) for s in held] == [TOO_MANY] * status.HOLD_MAX  # answered by the serving loop
    refilled = int(status.RATE_PER_S * status.HOLD_S)  # the second's requests
    assert all(asked(srv, "10.0.0.5").startswith(b"HTTP/1.0 200") for _ in range(refilled))
    last = connect(srv, "10.0.0.5")  # held: the stop answers it
    assert wait_for(lambda: len(srv.httpd._holding) == 1)
    srv.stop()
    assert last.recv(100) == TOO_MANY
    for s in (*held, last):
        s.close()


def test_a_page_and_a_scrape_never_meet_the_rate_and_the_table_stays_bounded():
    """What real clients ask, on a clock the test moves: four page loads at once (7 requests each:
    the link's redirect, the page, script, style, favicon, the first two polls), then the polls for an
    hour, with a scrape every 5 s and a reload every 10 s; never refused. Hosts past HOSTS_MAX: the longest unheard is forgotten."""
    from edge.service.status import HOSTS_MAX, RATE_BURST, Rates

    rates, t = Rates(), 0.0
    assert not any(rates.wait_s("10.0.0.5", t) for _ in range(4 * 7))
    for tick in range(1, 3600 * 10):  # tenths of a second
        t = tick / 10
        asks = (tick % 20 == 0) * 4 + (tick % 100 == 0) * 4 + (tick % 50 == 0) + (tick % 100 == 0) * 7
        assert not any(rates.wait_s("10.0.0.5", t) for _ in range(asks)), t
    assert sum(not rates.wait_s("10.0.0.6", t) for _ in range(1000)) == RATE_BURST  # a flood is not
    for i in range(HOSTS_MAX):
        rates.wait_s(f"fd00::{i:x}", t)
    assert len(rates._hosts) == HOSTS_MAX and "10.0.0.5" not in rates._hosts and "fd00::0" in rates._hosts


V6 = "2001:db8:0:5"  # a client's IPv6 /64, whose addresses it may take at will


def test_an_ipv6_client_is_counted_by_its_64_and_an_ipv4_one_by_its_address():
    from edge.service.status import host_key

    assert {host_key(f"{V6}::{i:x}") for i in range(1, 500, 7)} | {host_key(f"{V6}:ffff:ffff:ffff:ffff")} == {
        f"{V6}::/64"}
    assert host_key(f"{V6[:-1]}6::1") == f"{V6[:-1]}6::/64"  # the next /64: another host
    assert host_key("10.0.0.5") == host_key("::ffff:10.0.0.5") == "10.0.0.5"  # a dual-stack bind's IPv4 client
    assert host_key("10.0.0.6") == "10.0.0.6" and host_key("::1") == "::1" and host_key("127.0.0.2") == "127.0.0.2"
    assert host_key("fe80::1%eth0") == host_key("fe80::2") == "fe80::/64" and host_key("not-an-ip") == "not-an-ip"


def test_guesses_from_addresses_of_one_ipv6_64_count_as_one_hosts_and_its_requests_as_each_addresss():
    """Found in a review: an IPv6 host owns its /64 (SLAAC, privacy addresses) and a new address
    for each guess passed the guess limit: unlimited passwords from one laptop on the store's
    network. Another /64, and IPv4 hosts, are not affected. The request rate stays per address:
    the browsers of a store's LAN (one /64) must not share one page's allowance."""
    from edge.service.status import GUESSES_MAX, RATE_BURST, Guesses, Rates

    guesses = Guesses()
    for i in range(1, GUESSES_MAX):
        assert not guesses.wrong(f"{V6}::{i:x}", b"guess-%d" % i, 0.0)
    assert guesses.wrong(f"{V6}::abcd", b"guess-last", 0.0)
    assert guesses.wait_s(f"{V6}:1:2:3:4", 1.0) > 0  # any address of that /64
    assert guesses.wait_s(f"{V6[:-1]}6::1", 1.0) == 0 and guesses.wait_s("10.0.0.5", 1.0) == 0
    for i in range(GUESSES_MAX):  # IPv4, mapped or not, as one host
        guesses.wrong("10.0.0.5" if i % 2 else "::ffff:10.0.0.5", b"guess-%d" % i, 0.0)
    assert guesses.wait_s("10.0.0.5", 1.0) > 0 and guesses.wait_s("10.0.0.6", 1.0) == 0

    rates = Rates()
    assert not any(rates.wait_s(f"{V6}::1", 0.0) for _ in range(RATE_BURST))
    assert rates.wait_s(f"{V6}::1", 0.0) > 0
    assert not any(rates.wait_s(f"{V6}::2", 0.0) for _ in range(RATE_BURST))  # another browser of that LAN


def test_an_ipv6_client_changing_address_meets_the_guesses_but_its_lan_neighbours_keep_their_rate_and_connections(
        serve, monkeypatch, caplog):
    """Through the server: each guess from another address of one /64; the log names the address and its /64.
    The rate and the share of connections count each address: two browsers of one LAN are two hosts."""
    from edge.service import status

    clock = [1000.0]
    monkeypatch.setattr(status, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    monkeypatch.setattr(status, "HOLD_S", 0.0)
    base, srv = serve(token=TOKEN, max_clients=10)
    with caplog.at_level(logging.WARNING, logger="edge.service.status"):
        for i in range(status.GUESSES_MAX):
            assert asked(srv, f"{V6}::{i + 1:x}", f"guess-{i:04d}-0123456789").startswith(b"HTTP/1.0 401")
        with connect(srv, f"{V6}::ffff") as mine:  # the right token, from yet another address, too late
            answer = b"".join(iter(lambda: mine.recv(4096), b""))  # all of it: HTTP/1.0, closed after
        assert answer.startswith(b"HTTP/1.0 429") and b"this network (an IPv6 /64" in answer
        assert asked(srv, f"{V6[:-1]}6::1").startswith(b"HTTP/1.0 200")  # another /64 is served
        clock[0] += status.GUESS_WINDOW_S + 1  # the guesses forgotten, and the rate refilled
        assert all(asked(srv, f"{V6}::1").startswith(b"HTTP/1.0 200") for _ in range(status.RATE_BURST))
        assert asked(srv, f"{V6}::1") == TOO_MANY
        assert asked(srv, f"{V6}::2").startswith(b"HTTP/1.0 200")  # its neighbour on the LAN is not held back
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and f"{V6}::14 (counted as {V6}::/64)" in said[0], said  # the 20th guess
    assert f"{V6}::1 asked more" in said[1], said
    assert wait_for(lambda: srv.httpd.busy == 0 and not srv.httpd._held)
    clock[0] += 10  # the rate refilled: now connections held open, from another address each
    idle = []

    def hold(host: str):  # a connection that sends a request line and then nothing: it holds a handler
        mine, theirs = socket.socketpair()
        mine.sendall(b"GET / HTTP/1.1\r\n")
        srv.httpd.process_request(theirs, (host, 40000))
        idle.append(mine)
        return mine

    try:
        for _ in range(srv.httpd._per_host):
            hold(f"{V6}::1")
        assert wait_for(lambda: srv.httpd.busy == srv.httpd._per_host)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edge.service.status"):
            assert hold(f"{V6}::1").recv(100).startswith(b"HTTP/1.0 503")  # the address holds its share
        (said,) = [r.getMessage() for r in caplog.records]
        assert f"turned away {V6}::1 (it already holds its share" in said, said
        hold(f"{V6}::2")
        assert wait_for(lambda: srv.httpd.busy == srv.httpd._per_host + 1)  # its neighbour on the LAN is not
    finally:
        for s in idle:
            s.close()


def test_the_metrics_token_opens_metrics_only(serve):
    """Head office's scrape token is the same on every Pi: it must not open any Pi's page, and the
    manager's token, handed out with the link, stays this Pi's own."""
    fleet = "fleet-scrape-token-0123456789"
    base, srv = serve(token=TOKEN, metrics_token=fleet)
    assert get(base + "/metrics", {"Authorization": f"Bearer {fleet}"})[0] == 200
    assert get(base + "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    for path in ("/", "/status", "/history"):
        assert get(base + path, {"Authorization": f"Bearer {fleet}"})[0] == 401, path
    assert get(base + f"/?token={fleet}")[0] == 401 and get(base + f"/metrics?token={fleet}")[0] == 401
    assert get(base + "/metrics", {"Cookie": f"qm_token={fleet}"})[0] == 401
    base, srv = serve(metrics_token=fleet)  # a Pi scraped by head office, its page not on the network
    assert get(base + "/metrics", {"Authorization": f"Bearer {fleet}"})[0] == 200 and get(base + "/")[0] == 401
    assert load_config(None, {"status.host": "0.0.0.0", "status.metrics_token": fleet}).status.metrics_token == fleet
    with pytest.raises(ConfigError, match=r"status\.metrics_token.*a token of its own") as e:
        load_config(None, {"status.host": "0.0.0.0", "status.token": fleet, "status.metrics_token": fleet})
    assert fleet not in str(e.value)
    with pytest.raises(ConfigError, match=r"status\.metrics_token.*at least 16"):
        load_config(None, {"status.metrics_token": "short"})


def test_the_cookie_is_not_the_token_and_an_old_cookie_is_replaced(serve):
    """Browsers send a host's cookies to every port on it (another web service on the Pi): the cookie
    opens this page and nothing else. A cookie from before (the token itself) still opens it, once,
    and is replaced by the new kind."""
    base, srv = serve(token=TOKEN)
    cookie = get(base + f"/?token={TOKEN}")[1]["Set-Cookie"].split(";")[0]
    value = cookie.partition("=")[2]
    assert TOKEN not in cookie and len(value) >= 40
    assert get(base + "/status", {"Cookie": cookie})[0] == 200
    assert get(base + "/metrics", {"Authorization": f"Bearer {value}"})[0] == 401
    code, headers, _ = get(base + "/status", {"Cookie": f"qm_token={TOKEN}"})
    assert code == 200 and headers["Set-Cookie"].startswith(f"{cookie};")
    other = serve(token="another-pi-token-0123456789")[0]
    assert get(other + "/status", {"Cookie": cookie})[0] == 401


def test_a_request_must_name_one_host_and_an_absolute_target_is_judged_by_its_own(serve):
    """RFC 9112 3.2: an HTTP/1.1 request without Host, or with two, is a 400; a target written whole
    (GET http://name/ ...) names the host itself, whatever Host says. HTTP/0.9 gets no answer:
    it would be the page without any of its headers."""
    base, srv = serve()

    def code(head: str) -> int:
        reply = raw(srv.port, head.encode())
        return int(reply.split()[1]) if reply else 0

    assert code("GET /status HTTP/1.1\r\nConnection: close\r\n\r\n") == 400
    assert code("GET /status HTTP/1.1\r\nHost: localhost\r\nHost: rebound.example\r\nConnection: close\r\n\r\n") == 400
    assert code("GET http://rebound.example/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n") == 403
    assert code("GET http://localhost/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n") == 200
    assert code("GET http:/status HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n") == 400
    assert code("GET /status HTTP/1.0\r\n\r\n") == 200  # HTTP/1.0 need not send one
    assert raw(srv.port, b"GET /\r\n") == b""


def test_a_history_file_from_before_outages_were_saved_lists_its_alerts_as_periods(tmp_path):
    """The file a Pi upgraded today already has (alerts, no outages table): its alerts are periods at
    once, and the outages table it gains leaves the tables an older release checks as they were
    (install.sh's rollback runs that release on this file)."""
    import sqlite3

    from edge.service import history

    db = tmp_path / "history.sqlite"
    old = sqlite3.connect(db)
    for stmt in history.SCHEMA:
        if "outages" not in stmt:
            old.execute(stmt)
    now = time.time()
    old.executemany("INSERT INTO alerts VALUES (?, ?, ?, ?)",
                    [(now - 600, "raised", 0.5, 4), (now - 300, "cleared", 0.1, 4), (now - 100, "raised", 0.6, 3)])
    old.commit()
    old.close()
    h = History(db_path=str(db))
    assert [(p["kind"], p["end"] is None, p["negative_share"]) for p in h.periods(raised=False)] == [
        ("unhappy", True, 0.6), ("unhappy", False, 0.5)]
    h.add_outage(time.time(), "down")
    h.close()
    with sqlite3.connect(db) as after:
        tables = {name for (name,) in after.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"samples", "sample_frames", "alerts", "alerts_clock_unset", "outages"}
        assert after.execute("SELECT count(*) FROM alerts").fetchone() == (3,)
