"""The manager's page in a real headless browser (Debian's chromium) while `edge run`
processes a video: the DOM is filled by the page's own polling, and without the token
nothing is served."""

from __future__ import annotations

import json
import re
import threading
import time
import types
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from benchmarks.page_shot import LivePage, chromium, chromium_binary, screenshot
from edge.service.history import OUTAGES_KEPT
from tests.live_edge import TOKEN
from tests.test_status import monitor_in, result

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not chromium_binary(), reason="needs Debian's chromium (apt install chromium)")]


@pytest.fixture(autouse=True)
def ntp_has_set_the_clock(monkeypatch):
    """The stand-in monitor's clock is set by NTP, as a store's Pi's is, whatever this machine's: the page writes times of
    day then (a test about an unset clock says so)."""
    from edge.service import health

    monkeypatch.setattr(health, "clock_synced", lambda: True)


def test_page_shows_live_faces_and_alert_in_a_browser(edge_runs, tmp_path):
    run = edge_runs("till-1")
    now = run.wait_until(lambda s: s["alert_state"] == "raised" and s["faces"] >= 1)
    base = f"http://127.0.0.1:{run.port}"

    with pytest.raises(urllib.error.HTTPError) as refused:  # no token, no page
        urllib.request.urlopen(base + "/", timeout=10)
    assert refused.value.code == 401
    assert chromium(base + "/", "--dump-dom").stdout.count('id="faces"') == 0  # the browser gets nothing either

    link = f"{base}/?token={TOKEN}"  # what the manager bookmarks; the server swaps it for a cookie
    dom = chromium(link, "--dump-dom").stdout
    assert 'data-live="1"' in dom, dom[-3000:]  # the page's polling filled it in
    faces = int(re.search(r'id="faces">(\d+)<', dom).group(1))
    after = run.wait_until(lambda s: True)
    assert min(now["faces"], after["faces"]) <= faces <= max(now["faces"], after["faces"]) + 1
    assert re.search(r'id="alert-state">RAISED<', dom)
    # a time and how long ago; how long ago only, where this machine's clock is not set by NTP (edge run's health says so)
    ago = r"since (?:under 1|\d+) min ago" if now["health"]["clock_synced"] is False else rf"since {ANOTHER_DAY}\d[^<]* \((?:under 1|\d+) min\)"
    assert re.search(rf'id="alert-since">{ago}<', dom), re.findall(r'id="alert-since">[^<]*', dom)
    from edge.config import StatusConfig

    assert f'id="alert-advice">{StatusConfig.alert_advice}<' in dom  # the config's instruction reaches the page
    assert re.search(r'<li>[^<]* – now \((?:under 1|\d+) min\): queue unhappy, up to \d+% of \d+ faces</li>', dom)  # the recent alerts
    assert int(re.search(r'data-points="(\d+)"', dom).group(1)) >= 1  # the chart drew the history
    assert "<img" not in dom

    screenshot(link, tmp_path / "status-page.png")
    assert (tmp_path / "status-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


ADVICE = "Call a second cashier to till 2."  # a store's status.alert_advice
# The date the page writes before a time that is not of the monitor's today ("Dec 1 "): an alert
# raised before the monitor's midnight, minutes ago, reads so after it, and a time after it so before.
ANOTHER_DAY = r"(?:[A-Z][a-z]{2} \d{1,2} )?"


@contextmanager
def stand_in(answers=(), fill=None, **cfg):
    """A real StatusServer over a stand-in Stats, given its figures by `fill(stats)` when given;
    yields the page's URL and the list of what was done. `answers` tells each /status in turn what to do: "ok", "camera down" (the camera went
    silent first), "raised yesterday" (an alert raised 26 h ago), "drop" (the connection closes
    without an answer), "stop" (this answer goes out, then the server stops listening) or "hang"
    (no answer, the connection left open, until the end); after the list, "ok"."""
    from edge.config import StatusConfig
    from edge.service.status import Stats, StatusServer

    done: list = []
    hung = threading.Event()

    class StandIn(Stats):
        def snapshot(self):
            what = answers[len(done)] if len(done) < len(answers) else "ok"
            done.append(what)
            if what == "camera down":
                self.camera_down()
            elif what == "raised yesterday":
                since = datetime.now(timezone.utc) - timedelta(hours=26)
                self.data.update(alert_state="raised", alert_raised_at=since.isoformat(timespec="seconds"))
            elif what == "drop":
                raise ConnectionResetError("dropped on purpose")  # the handler closes without answering
            elif what == "stop":
                srv.httpd.shutdown()
                srv.httpd.server_close()
            elif what == "hang":
                hung.wait(120)
            return super().snapshot()

    stats = StandIn("rt", "model.tflite", "rtsp://cam", device="till-9", negative=["angry", "sad"],
                    alert_advice=ADVICE)
    if fill:
        fill(stats)
    srv = StatusServer(stats, StatusConfig(port=0, **cfg)).start()
    try:
        yield f"http://127.0.0.1:{srv.port}/", done
    finally:
        hung.set()
        srv.stop()


def page_dom(answers=(), fill=None) -> tuple[str, list]:
    """The page's DOM after its polling (see stand_in), and what was done."""
    with stand_in(answers, fill) as (url, done):
        return chromium(url, "--dump-dom").stdout, done


def watched(stats):
    """One frame processed, as edge run hands it over: 2 calm faces, the alert clear."""
    stats.update(result(2, 0, happy=2), 0, {})


def emotion_counts(dom: str) -> list[str]:
    """The faces per emotion, as the page's table shows them."""
    rows = re.findall(r'<tr><th scope="row">(\w+)(?:<span[^>]*>[^<]*</span>)*</th><td><div class="bar[^"]*"[^>]*></div></td>'
                      r'<td>([^<]*)</td></tr>', dom)
    return [n for _, n in rows]


def test_camera_down_is_shown_as_such_and_never_as_clear():
    """/status after the camera went silent (alert_state "unknown", negative_share null): the
    page says the queue is not watched, with no share and no "clear"."""
    dom, _ = page_dom(["camera down"])
    assert 'data-live="1"' in dom, dom[-3000:]
    assert re.search(r'id="alert-state">CAMERA DOWN<', dom)
    assert "<title>CAMERA DOWN · Queue mood</title>" in dom
    assert re.search(r'id="negative-share">–<', dom)  # no share is known, so no 0%
    assert emotion_counts(dom) == ["–"] * 7, dom[-3000:]  # nor 0 faces of each emotion
    assert ">clear<" not in dom and "alert-clear" not in dom
    assert 'class="card alert-down"' in dom
    assert re.search(rf'id="alert-since">since {ANOTHER_DAY}\d[^<]* \(under 1 min\): the queue is not being watched — check the '
                     r'camera<', dom), re.findall(r'id="alert-since">[^<]*', dom)
    assert re.search(r'id="alert-advice" hidden', dom)  # what to do about an unhappy queue: not now


def test_a_monitor_that_has_processed_no_frame_yet_says_starting_never_clear():
    """The first seconds after a start: no frame yet, and the camera not yet declared down
    (alert_state "starting", negative_share null). Nothing has been watched: no "clear", no
    0 faces."""
    dom, _ = page_dom()
    assert 'data-live="1"' in dom, dom[-3000:]
    assert re.search(r'id="alert-state">starting<', dom)
    assert 'class="card alert-starting"' in dom and "<title>Queue mood</title>" in dom
    assert "The monitor has not watched the queue yet" in dom
    assert re.search(r'id="faces">–<', dom) and re.search(r'id="negative-share">–<', dom)
    assert emotion_counts(dom) == ["–"] * 7, dom[-3000:]
    assert ">clear<" not in dom and "alert-clear" not in dom
    assert re.search(r'id="alert-advice" hidden', dom)


@pytest.mark.parametrize("state", ["clear", "camera down"])
def test_clear_and_camera_down_say_since_when_like_a_raised_alert(state):
    """Since when the queue has been clear (the alert cleared, or the first frame) or unwatched
    (the camera declared down): a time, and how long by the Pi's clock."""
    def for_25_min(stats):
        watched(stats)
        if state == "camera down":
            stats.camera_down()
        since = datetime.now(timezone.utc) - timedelta(minutes=25)
        stats.data["alert_state_since"] = since.isoformat(timespec="seconds")

    dom, _ = page_dom(fill=for_25_min)
    # with its date in the first 25 minutes after midnight, when that time was yesterday
    assert re.search(r'id="alert-since">since (?:[A-Z][a-z]{2} \d{1,2} )?\d[^<]* \(25 min\)[:<]', dom), \
        re.findall(r'id="alert-since">[^<]*', dom)


def test_a_minute_not_yet_past_reads_under_1_min_never_0_min(monkeypatch):
    """The manager opens the page from the alert's notification seconds after it came: it read
    "since 17:45:41 (0 min)" and, in the recent alerts, "0 min ago raised", as if it had lasted no
    time, or none had come."""
    from edge.service import health

    monkeypatch.setattr(health, "clock_synced", lambda: False)  # the recent alerts say how long ago too

    def raised_now(stats):
        stats.update(result(4, 3, "raised", "raised", angry=3, happy=1), 0, {})

    dom, _ = page_dom(fill=raised_now)
    assert re.search(r'id="alert-since">since under 1 min ago<', dom), re.findall(r'id="alert-since">[^<]*', dom)
    assert re.search(r"<li>under 1 min ago – now \(under 1 min\): queue unhappy, up to \d+% of 4 faces</li>", dom), \
        re.findall(r"<li>[^<]*", dom)
    assert re.search(r"<th[^>]*>up for</th><td>under 1 min</td>", dom), dom[-2000:]
    assert not re.search(r"\b0 min", dom)


def test_a_queue_unhappy_again_during_the_cooldown_is_said_beside_clear():
    """After an alert clears, the policy raises no new one for alert.cooldown_s: a queue that turns
    unhappy again meanwhile reads "clear" with 3 of 4 faces unhappy, and the card says why."""
    from dataclasses import replace

    dom, _ = page_dom(fill=lambda stats: stats.update(replace(result(4, 3, angry=3, happy=1), held_back_s=90.0), 0, {}))
    assert re.search(r'id="alert-state">clear<', dom) and re.search(r'id="negative-share">75%<', dom), dom[-3000:]
    assert re.search(r'<p class="held" id="alert-held">unhappy again: a new alert can be raised from '
                     rf'{ANOTHER_DAY}\d[\d:]+[^<]*</p>', dom), re.findall(r'id="alert-held"[^<]*', dom)
    dom, _ = page_dom(fill=watched)  # clear and calm: nothing to say
    assert re.search(r'id="alert-held" hidden', dom)


def test_figures_go_stale_with_a_banner_when_the_monitor_stops_answering():
    """The monitor answers one /status and then stops listening: the page marks the last
    figures as old and says since when there has been no data."""
    dom, done = page_dom(["stop"], fill=watched)
    assert done == ["stop"]
    assert 'data-live="1"' in dom, dom[-3000:]  # the first poll drew the figures
    assert re.search(r'<body[^>]* class="[^"]*\bstale\b', dom), dom[:1500]
    assert re.search(rf'No data since {ANOTHER_DAY}\d\d:\d\d:\d\d(?: [AP]M)? — the monitor is not reachable', dom), dom[:1500]
    assert "<title>NO DATA · Queue mood</title>" in dom  # a background tab says it too, not the last state
    # drawn at different polls, maybe one each side of the monitor's midnight (or noon): their times' form, no date
    banner_time = re.search(rf"No data since {ANOTHER_DAY}([^—]*) —", dom).group(1)
    since_time = re.search(rf'id="alert-since">since {ANOTHER_DAY}([^(<]*) \(', dom).group(1)
    form = lambda t: re.sub(r"[AP]M", "XM", re.sub(r"\d", "0", t))  # noqa: E731
    assert form(banner_time) == form(since_time)  # in the browser's locale, as every time
    assert re.search(r'id="alert-state">clear<', dom)  # the last figures stay, marked as old


def test_a_poll_that_never_gets_an_answer_turns_the_figures_stale():
    """The connection drops mid-request (Wi-Fi gone, the Pi unplugged): neither an answer nor a
    reset reaches the browser, which would wait for minutes. The server's idle timeout cannot
    end it from there (an hour here); the page gives up on the poll and says the data is old."""
    with stand_in(["ok"] + ["hang"] * 20, watched, idle_timeout_s=3600) as (url, done), LivePage(url) as page:
        banner = page.wait_for("!document.getElementById('stale').hidden && document.getElementById('stale').textContent")
        assert re.fullmatch(rf"No data since {ANOTHER_DAY}\d\d:\d\d:\d\d(?: [AP]M)? — the monitor is not reachable", banner or ""), \
            (banner, done)
        assert page.js("document.body.classList.contains('stale')")
        assert page.js("document.getElementById('alert-state').textContent") == "clear"  # the last figures, marked as old


@pytest.mark.parametrize("width", [390, 250])  # a phone; a desktop browser's narrowest window (500) at 200% zoom
def test_the_page_fits_a_phone_with_a_network_cameras_url_in_health(width):
    """A network camera's address is one long word: the health card wraps it instead of running
    its values (stage times, the clock's warning) off the right of a phone's screen. Nothing
    needs scrolling sideways, down to 250 CSS px."""
    def network_camera(stats):
        stats.data["source"] = "rtsp://***@192.168.100.164:554/Streaming/Channels/101?transportmode=unicast"

    with stand_in(fill=network_camera) as (url, _), LivePage(url, window=f"{width},844") as page:
        assert page.wait_for("document.body.dataset.live === '1'")
        wide = page.js("""[...document.querySelectorAll('td, th')].filter((td) =>
            td.getBoundingClientRect().right > td.closest('.card').getBoundingClientRect().right).map((td) => td.textContent)""")
        assert wide == [], wide
        assert page.js("document.documentElement.scrollWidth") <= width


@pytest.mark.parametrize("state", ["raised", "camera down"])
def test_the_alert_state_stays_on_a_phone_at_200_percent_zoom(state):
    """A 390-px phone zoomed to 200% lays the page out 195 CSS px wide: the state, the one word a
    manager looks for, stays whole inside its card, and nothing needs scrolling sideways."""
    def unhappy(stats):
        stats.update(result(4, 3, "raised", "raised", angry=3, happy=1), 0, {})
        if state == "camera down":
            stats.camera_down()

    with stand_in(fill=unhappy) as (url, _), LivePage(url, window="195,844") as page:
        assert page.wait_for("document.body.dataset.live === '1'")
        assert page.js("document.getElementById('alert-state').textContent") == {"raised": "RAISED", "camera down": "CAMERA DOWN"}[state]
        assert page.js("""(() => { const s = document.getElementById('alert-state'), c = document.getElementById('alert-card');
            return s.scrollWidth <= s.clientWidth && s.getBoundingClientRect().right <= c.getBoundingClientRect().right; })()""")
        assert page.js("document.documentElement.scrollWidth") <= 195


@pytest.mark.parametrize("state", ["raised", "camera down"])
def test_a_wall_display_shows_the_state_large_and_the_whole_page_on_one_screen(state):
    """A 1920x1080 screen across the room: the state in letters about 2 cm tall on a 24" screen, and
    nothing below the screen's edge, as nobody scrolls a wall display."""
    from benchmarks.page_shot import made_up_hour

    def hour(stats):
        made_up_hour(stats, time.time())
        if state == "camera down":
            stats.camera_down()

    with stand_in(fill=hour) as (url, _), LivePage(url, window="1920,1080") as page:
        assert page.wait_for("document.body.dataset.live === '1' && document.getElementById('chart').dataset.points")
        assert page.js("parseFloat(getComputedStyle(document.getElementById('alert-state')).fontSize)") >= 72
        assert page.js("document.documentElement.scrollHeight") <= 1080
        assert page.js("document.documentElement.scrollWidth") <= 1920
        assert page.js("""(() => { const s = document.getElementById('alert-state').getBoundingClientRect(),
            c = document.getElementById('alert-card').getBoundingClientRect(); return s.right <= c.right && s.bottom <= c.bottom; })()""")


def test_a_refused_poll_says_to_open_the_link_again_not_that_the_monitor_is_unreachable():
    """A tab left open past its cookie's 30 days: the monitor is there but answers 401, so the
    banner says what helps (the link) instead of sending someone to look at a Pi that runs."""
    with stand_in(token=TOKEN) as (url, _), LivePage(f"{url}?token={TOKEN}") as page:
        assert page.wait_for("document.body.dataset.live === '1'")
        page.forget_cookies()
        banner = page.wait_for("!document.getElementById('stale').hidden && document.getElementById('stale').textContent")
        assert re.fullmatch(rf"No data since {ANOTHER_DAY}\d\d:\d\d:\d\d(?: [AP]M)? — the monitor refuses this page: open its link with the "
                            r"token again", banner or ""), banner
        assert page.js("document.title") == "NO DATA · Queue mood"


def test_a_page_whose_password_was_changed_says_to_give_the_new_one_not_that_the_monitor_is_unreachable():
    """[status] password changed while a page is open (a wall display): its polls are refused. They used to be
    answered with a Basic challenge, for which the browser asks for the password (headless: never answered),
    until the poll gave up after 8 s: the banner said the monitor was not reachable, beside one that ran."""
    from edge.config import StatusConfig
    from edge.service.status import Stats, StatusServer

    stats = Stats("rt", "model.tflite", "rtsp://cam", device="till-9")
    watched(stats)
    srv = StatusServer(stats, StatusConfig(port=0, user="manager", password="pw-of-the-store")).start()
    try:
        with LivePage(f"http://manager:pw-of-the-store@127.0.0.1:{srv.port}/") as page:
            assert page.wait_for("document.body.dataset.live === '1'")
            srv.auth.password = b"the-new-pw-of-the-store"
            banner = page.wait_for("!document.getElementById('stale').hidden && document.getElementById('stale').textContent")
            assert re.fullmatch(rf"No data since {ANOTHER_DAY}\d\d:\d\d:\d\d(?: [AP]M)? — the monitor refuses this page: "
                                r"reload it and give the user and password", banner or ""), banner
    finally:
        srv.stop()


def test_a_page_opened_with_user_and_password_in_its_link_shows_the_queue():
    """With [status] password, a till's browser may be given http://manager:PASSWORD@pi:8765/ to
    open without a prompt: the page's polls reach the monitor (chromium refuses a fetch of a
    relative path against that address: the page read "No data yet — the monitor is not
    reachable" beside a monitor that ran)."""
    with stand_in(fill=watched, user="manager", password="pw-of-the-store") as (url, _), \
            LivePage(url.replace("http://", "http://manager:pw-of-the-store@")) as page:
        assert page.wait_for("document.body.dataset.live === '1'"), page.js("document.getElementById('stale').textContent")
        assert page.js("document.getElementById('alert-state').textContent") == "clear"
        assert page.js("document.getElementById('stale').hidden")


def test_the_stale_banner_goes_once_a_poll_succeeds_again():
    """One /status poll gets no answer, the next ones do: the page ends live, without the banner
    or the dashed outlines."""
    dom, done = page_dom(["ok", "drop"])
    assert len(done) >= 3 and 'data-live="1"' in dom, dom[-3000:]
    assert not re.search(r'<body[^>]* class="[^"]*\bstale\b', dom)
    assert re.search(r'<p id="stale"[^>]* hidden', dom)
    assert "<title>Queue mood</title>" in dom


def test_a_failing_history_does_not_call_a_monitor_that_answers_status_unreachable():
    """/history answers 500 (a damaged chart file) while /status works: the header line keeps
    saying when the figures were updated, instead of flickering "not reachable"."""
    def broken_chart(stats):
        stats.series = lambda: 1 / 0  # the handler answers 500

    with stand_in(fill=broken_chart) as (url, _), LivePage(url) as page:
        assert page.wait_for("document.body.dataset.live === '1'")
        page.js("window.said = []; new MutationObserver(() => window.said.push(document.getElementById('updated')"
                ".textContent)).observe(document.getElementById('updated'), {childList: true, characterData: true, "
                "subtree: true}); true")
        time.sleep(12)  # past the next /history poll (every 10 s), every text the line took recorded
        seen = set(page.js("window.said"))
        assert seen and not [s for s in seen if "not reachable" in s or "answered" in s], seen

def test_an_alert_raised_yesterday_shows_its_date_and_how_long_it_has_been_raised():
    dom, _ = page_dom(["raised yesterday"] * 50)
    assert re.search(r'id="alert-state">RAISED<', dom), dom[-3000:]
    assert "<title>ALERT · Queue mood</title>" in dom
    since = re.search(r'id="alert-since">since ([^<]*)<', dom).group(1)
    assert re.search(r"[A-Za-z]", since.split(" (")[0]) and since.endswith("(26 h 00 min)"), since  # a date, not a bare time
    assert re.search(rf'<p class="advice" id="alert-advice">{ADVICE}</p>', dom)  # what the staff should do


@pytest.mark.parametrize("pi_ahead_h", [-48, 3])
def test_a_pi_clock_hours_off_the_browsers_still_says_how_long_ago_and_draws_the_hour(monkeypatch, pi_ahead_h):
    """A Pi without NTP runs on the clock of its last shutdown (it has no real-time clock), so
    every time it stamps is hours or days off the browser's: how long an alert has been raised,
    and where the chart's hour ends, go by the Pi's clock."""
    from benchmarks.page_shot import made_up_hour
    from edge.service import status

    ahead_s = pi_ahead_h * 3600
    monkeypatch.setattr(status, "time", types.SimpleNamespace(time=lambda: time.time() + ahead_s,
                                                              monotonic=time.monotonic))
    # an alert raised a minute ago, by the Pi's clock
    dom, _ = page_dom(fill=lambda stats: made_up_hour(stats, time.time() + ahead_s))
    assert re.search(r'id="alert-since">since [^<]* \([12] min\)<', dom), re.findall(r'id="alert-since">[^<]*', dom)
    assert int(re.search(r'data-points="(\d+)"', dom).group(1)) >= 330  # the hour is drawn (less its 3-min outage)
    xs = [float(x) for line in re.findall(r'<polyline points="([^"]*)"', dom) for x in re.findall(r"([\d.]+),", line)]
    assert xs and min(xs) < 84 + 10 and max(xs) <= 600 - 46  # across the chart, not piled up or past its edge


def test_a_monitor_up_for_hours_says_so_in_hours():
    def up_since_this_morning(stats):
        stats.started -= 5 * 3600 + 7 * 60

    dom, _ = page_dom(fill=up_since_this_morning)
    assert "<th scope=\"row\">up for</th><td>5 h 07 min</td>" in dom, re.findall(r"up for</th><td>[^<]*", dom)


def test_the_health_table_says_when_a_face_was_last_seen():
    """A camera knocked askew still delivers frames and reads as a calm queue: the row tells it."""
    def seen(faces_now, hours_ago):
        def fill(stats):
            stats.update(result(2, 0, happy=2), 0, {})
            stats.data["face_seen_at"] -= hours_ago * 3600
            if not faces_now:
                stats.update(result(0, 0), 0, {})
        dom, _ = page_dom(fill=fill)
        return re.findall(r'<th scope="row">last face seen</th><td>([^<]*)</td>', dom)

    assert seen(True, 0) == ["now"]
    (said,) = seen(False, 3)
    # three hours ago may be yesterday: then the date comes first
    assert re.fullmatch(r"(?:[A-Z][a-z]{2} \d{1,2} )?\d\d:\d\d:\d\d.* \(3 h 00 min ago\)", said), said
    dom, _ = page_dom(fill=lambda stats: stats.update(result(0, 0), 0, {}))
    assert '<th scope="row">last face seen</th><td>none since the start</td>' in dom


def test_the_health_table_says_which_release_runs():
    """Head office's fleet table names each Pi's commit and bundle; the IT person at the Pi, asked
    which build it runs, had only edge doctor."""
    release = {"version": "0.1.0", "commit": "4b3525592abf", "bundle_created": "2026-12-02T18:17:41+00:00",
               "model_sha256": "038903d760b3" + "0" * 52}

    def built(stats):
        stats.data["release"] = release

    dom, _ = page_dom(fill=built)
    assert re.findall(r'<th scope="row">release</th><td>([^<]*)</td>', dom) == [
        "commit 4b3525592abf, bundle made 2026-12-02, model 038903d760b3"]
    dom, _ = page_dom(fill=lambda stats: stats.data.update(release={"version": "0.1.0", "commit": None,
                                                                    "bundle_created": None, "model_sha256": None}))
    assert '<th scope="row">release</th>' not in dom  # nothing known: no row of dashes


def test_the_health_table_says_the_free_space_on_the_monitors_disks(tmp_path):
    """The IT person's glance at a card filling up (head office's QueueMonitorDiskLow reads the
    same figures); a second disk is named by its folder."""
    import os

    fs = os.statvfs(tmp_path)
    dom, _ = page_dom(fill=lambda stats: stats.set_disks({"spool": tmp_path}))
    (said,) = re.findall(r'<th scope="row">disk free</th><td>([^<]*)</td>', dom)
    assert re.fullmatch(r"[\d.]+ [GM]iB of [\d.]+ [GM]iB", said) and "(spool)" not in said, said
    size = fs.f_blocks * fs.f_frsize  # in edge doctor's and the alert's units
    assert said.endswith(f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{round(size / 2**20)} MiB"), said
    dom, _ = page_dom(fill=lambda stats: stats.set_disks({"spool": tmp_path, "jsonl": "/dev/shm"}))
    (said,) = re.findall(r'<th scope="row">disk free</th><td>([^<]*)</td>', dom)
    assert "(spool), " in said and said.endswith("(jsonl)"), said
    assert "READ-ONLY" not in said

    def read_only(stats):  # ext4 remounted the card so: its free space reads as before
        stats.set_disks({"spool": tmp_path})
        stats._disks.statvfs = lambda folder: os.statvfs_result((*os.statvfs(folder)[:8], os.ST_RDONLY, 255))

    dom, _ = page_dom(fill=read_only)
    (said,) = re.findall(r'<th scope="row">disk free</th><td>([^<]*)</td>', dom)
    assert re.fullmatch(r"[\d.]+ [GM]iB of [\d.]+ [GM]iB, READ-ONLY: nothing can be saved there; see edge doctor", said), said
    dom, _ = page_dom()
    assert "disk free" not in dom  # a Stats with no folders named (not edge run): no row


def test_the_chart_leaves_the_minutes_without_frames_empty():
    """20 minutes of the hour without a point (the camera was down, or the monitor stopped): the
    lines break there instead of drawing a slope through figures nobody saw."""
    now = time.time()

    def hour_with_a_gap(stats):
        for t in range(int(now - 3600), int(now), 2):
            if not now - 40 * 60 < t < now - 20 * 60:
                calm = t > now - 30 * 60
                stats.history.add(t, 0.1 if calm else 0.7, 2 if calm else 4, False)

    dom, _ = page_dom(fill=hour_with_a_gap)
    lines = re.findall(r'<polyline points="([^"]*)" class="(share|faces)"', dom)
    assert sorted(cls for _, cls in lines) == ["faces", "faces", "share", "share"], dom[-3000:]
    for coords, _ in lines:  # 10 s steps are about 1.5 wide; the 20 minutes about 166
        xs = [float(xy.split(",")[0]) for xy in coords.split()]
        assert max(b - a for a, b in zip(xs, xs[1:])) < 5
    # A blank stretch reads as a quiet queue to a manager (a camera down for 20 minutes, nothing on
    # the page said so once it was back): the legend says what it means.
    assert "blank: not watched (no frames)" in chart_legend(dom), chart_legend(dom)


def test_the_readme_picture_is_made_from_the_page_over_a_made_up_hour(tmp_path):
    from benchmarks import page_shot

    out = page_shot.run(tmp_path / "page.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    from edge.service.status import Stats

    stats = Stats("rt", "m", "src")
    page_shot.made_up_hour(stats, 1_800_000_000.0)
    kinds = [a["kind"] for a in stats.history.recent_alerts()]
    assert kinds == ["raised", "cleared", "raised"]  # newest first: one spell over, one raised now
    assert [p["kind"] for p in stats.snapshot()["alert_periods"]] == ["unhappy", "camera_down", "unhappy"]  # an outage between
    assert stats.snapshot()["alert_state"] == "raised" and len(stats.history.series()) >= 330  # at its made-up time, less the outage


def test_a_screen_reader_hears_the_alert_raised_once_not_every_poll():
    """The state's change is announced (an aria-live region), with what to do; "since … (N min)",
    changing every minute, and the figures, every poll, are outside any live region."""
    with stand_in(["ok"] * 3 + ["raised yesterday"] * 100, watched) as (url, _), LivePage(url) as page:
        assert page.wait_for("document.getElementById('alert-announce')?.textContent") == "Alert clear"
        live = page.js("[...document.querySelectorAll('[aria-live], [role=alert], [role=status], [role=log]')]"
                       ".map((e) => e.id)")
        assert sorted(live) == ["alert-announce", "stale"], live
        assert page.js("document.getElementById('alert-announce').getAttribute('aria-live')") == "polite"
        page.js("""window.announced = [];
            new MutationObserver(() => announced.push(document.getElementById('alert-announce').textContent))
              .observe(document.getElementById('alert-announce'), {childList: true, characterData: true, subtree: true})""")
        assert page.wait_for("document.getElementById('alert-state').textContent === 'RAISED'")
        time.sleep(5)  # more polls, the same state
        assert page.js("announced") == [f"Alert raised: {ADVICE}"]


def test_each_table_row_is_named_by_a_row_header_a_screen_reader_says_with_its_value():
    """"frame rate" with "4.9 fps", "happy" with its count: the first cell of every row of the
    expressions and health tables is a row header, set as the plain cell it replaced."""
    with stand_in(fill=watched) as (url, _), LivePage(url) as page:
        assert page.wait_for("document.querySelectorAll('#health tr').length > 3")
        rows = page.js("""[...document.querySelectorAll('#emotions tr, #health tr')].map((tr) =>
            [...tr.cells].map((c) => c.tagName + (c.scope ? ':' + c.scope : '')).join(' '))""")
        assert rows and set(rows) == {"TH:row TD TD", "TH:row TD"}, rows
        looks = page.js("""[...document.querySelectorAll('#health th, #health td')].slice(0, 2).map((c) =>
            [getComputedStyle(c).fontWeight, getComputedStyle(c).textAlign])""")
        assert looks[0] == looks[1] == ["400", "start"], looks


def test_the_charts_legend_tells_its_lines_apart_without_their_colours():
    """Red and blue are one to some colour-blind managers: the faces line is dashed, and so is its key."""
    with stand_in(fill=watched) as (url, _), LivePage(url) as page:
        assert page.wait_for("document.getElementById('chart').dataset.points")
        assert page.js("getComputedStyle(document.querySelector('#chart .faces')).strokeDasharray") not in ("none", "")
        assert page.js("getComputedStyle(document.querySelector('#chart .share')).strokeDasharray") == "none"
        keys = page.js("""['share', 'faces'].map((k) => getComputedStyle(document.querySelector('.key.' + k)).backgroundImage)""")
        assert keys[0] == "none" and keys[1].startswith("repeating-linear-gradient"), keys


def chart_legend(dom: str) -> str:
    """The words under the chart, as a manager reads them."""
    legend = re.search(r'<p class="legend">.*?</p>', dom, re.S).group(0)
    return " ".join(re.sub(r"<[^>]*>", " ", legend).replace("\u00a0", " ").split())


def test_the_charts_legend_names_each_scale_in_the_pages_words():
    """The chart has two scales, a share on the left (0-100%) and a count of faces on the right (0-4
    in a queue of 4), and the faces line at 4 ran along the 100% line: nothing said the numbers at
    the right were faces, and the red line was a "negative share" under a card that says "look
    unhappy". The legend says which scale is whose, in the card's words."""
    legend = chart_legend(page_dom(fill=watched)[0])
    assert "look unhappy (% at the left)" in legend and "faces (number at the right)" in legend, legend
    assert "negative" not in legend, legend


def test_the_chart_says_in_words_what_it_shows(monkeypatch):
    """The svg is one image to a screen reader: its label gives the hour's range of the unhappy
    share and the faces, and when alerts were raised, not just what kind of chart it is."""
    from benchmarks.page_shot import made_up_hour
    from edge.service import status

    # The monitor's clock stays at the made-up hour's end, as if frames kept coming: else a chromium
    # slow to start (a loaded machine) asked for /history over 3 s after the hour's last point, and
    # the alert still raised read as over ("02:19 AM to 02:20 AM", not "from 02:19 AM").
    now = time.time()
    monkeypatch.setattr(status, "time", types.SimpleNamespace(time=lambda: now, monotonic=time.monotonic))
    dom, _ = page_dom(fill=lambda stats: made_up_hour(stats, now))
    label = re.search(r'<svg id="chart"[^>]* aria-label="([^"]*)"', dom).group(1)
    hm = r"\d\d?:\d\d(?: [AP]M)?"
    assert re.fullmatch(rf"Last hour, {hm} to {hm}: unhappy share \d+% to \d+%, \d+% at {hm}; [234] to 4 faces; "
                        rf"alert raised {hm} to {hm}, from {hm}", label), label


def test_no_alert_yet_is_said_in_words_not_as_alert_number_one():
    """The first minutes after a start: "none yet" stands beside the list of recent alerts, not
    in it as an item a manager (or a screen reader: "list, 1 item") reads as alert "1."; once
    there are alerts, it goes."""
    from benchmarks.page_shot import made_up_hour

    shown = """[...document.querySelectorAll('main *')].filter((e) => e.children.length === 0 && e.textContent.trim() === 'none yet'
        && e.getClientRects().length).map((e) => [getComputedStyle(e).display, e.closest('ol, ul') !== null])"""
    with stand_in(fill=watched) as (url, _), LivePage(url) as page:
        assert page.wait_for("document.body.dataset.live === '1'")
        assert page.js(shown) == [["block", False]], page.js(shown)
        assert page.js("document.querySelectorAll('#alerts li').length") == 0
    with stand_in(fill=lambda stats: made_up_hour(stats, time.time())) as (url, _), LivePage(url) as page:
        assert page.wait_for("document.body.dataset.live === '1'")
        assert page.js(shown) == []
        assert page.js("document.querySelectorAll('#alerts li').length") == 3


def test_recent_alerts_read_as_periods_and_say_when_the_camera_gave_no_picture():
    """Each raise and each clear was an item of its own ("05:38:03 PM cleared: 10% of 4 faces
    unhappy", read as an alert), and a camera outage, a blank stretch on the chart, was not listed:
    now each alert is one line from raised to cleared with the most unhappy it got, the one raised
    now "– now", and each outage its own line, newest first."""
    from benchmarks.page_shot import made_up_hour

    hm, width = r"\d\d:\d\d(?: [AP]M)?", 390
    with stand_in(fill=lambda stats: made_up_hour(stats, time.time())) as (url, _), \
            LivePage(url, window=f"{width},900") as page:
        assert page.wait_for("document.querySelectorAll('#alerts li').length")
        items = page.js("[...document.querySelectorAll('#alerts li')].map((li) => li.textContent)")
        assert [bool(re.fullmatch(want, i)) for want, i in zip((
            rf"{hm} – now \((?:under 1|\d) min\): queue unhappy, up to \d+% of [34] faces",
            rf"{hm} – {hm} \(3 min\): camera gave no picture",
            rf"{hm} – {hm} \([5-7] min\): queue unhappy, up to \d+% of [34] faces"), items)] == [True] * 3, items
        assert "cleared" not in " ".join(items) and "raised" not in " ".join(items)
        assert page.js("document.documentElement.scrollWidth") <= width  # a phone's


@pytest.mark.parametrize("apart_min", [4, 12])
def test_a_flapping_camera_does_not_push_the_alert_off_the_recent_list(apart_min):
    """A loose cable: a dozen short outages after an alert filled the 10 lines the page shows with
    "camera gave no picture", and the alert was not on it. Outages close together (the sinks' 10
    minutes) are one line saying how many; the alert keeps its line whatever the outages."""
    hm = r"\d\d:\d\d(?: [AP]M)?"

    def alert_then_flapping(stats):
        now = time.time()
        stats.history.add_alert(now - 3 * 3600, "raised", 0.5, 4)
        stats.history.add_alert(now - 3 * 3600 + 420, "cleared", 0.1, 4)
        for i in range(12, 0, -1):  # 1 min out each time, the last ended 2 min ago
            stats.history.add_outage(now - 60 * (apart_min * i + 2) - 60, "down")
            stats.history.add_outage(now - 60 * (apart_min * i + 2), "up")
        watched(stats)

    dom, _ = page_dom(fill=alert_then_flapping)
    items = re.findall(r"<li>([^<]*)</li>", dom)
    assert items and re.fullmatch(rf"{ANOTHER_DAY}{hm} – {ANOTHER_DAY}{hm} \(7 min\): queue unhappy, up to 50% of 4 faces",
                                  items[-1]), items
    if apart_min == 4:  # all 12, one line (was 10: the outages were kept by the alerts' count)
        assert len(items) == 2 and re.fullmatch(rf"{hm} – {hm} \(\d\d min\): camera dropped out 12 times", items[0]), items
    else:
        assert len(items) == 10 and all(i.endswith("camera gave no picture") for i in items[:9]), items


def flapping(stats, outages: int, apart_s: float = 20.0) -> None:
    """A loose cable: `outages` outages of 10 s, one every `apart_s`, the last ended a minute ago."""
    now = time.time()
    for i in range(outages, 0, -1):
        stats.history.add_outage(now - 60 - apart_s * (i - 1) - 10, "down")
        stats.history.add_outage(now - 60 - apart_s * (i - 1), "up")
    watched(stats)


@pytest.mark.parametrize("outages, said", [(40, "40 times"), (OUTAGES_KEPT, f"more than {OUTAGES_KEPT // 2} times")])
def test_a_camera_flapping_all_hour_is_one_line_that_counts_every_outage_or_says_it_had_more(outages, said):
    """40 outages in 15 min read "camera dropped out 10 times" (the history kept as many outage changes
    as alerts), and started at the 10th last. Beyond the changes the history keeps, the line says
    "more than": the outages before it are gone, not absent."""
    hm = r"\d\d:\d\d(?: [AP]M)?"
    dom, _ = page_dom(fill=lambda stats: flapping(stats, outages))
    items = re.findall(r"<li>([^<]*)</li>", dom)
    assert len(items) == 1 and re.fullmatch(rf"{hm} – {hm} \(\d+ min\): camera dropped out {said}", items[0]), items
    # from the first outage kept to the last's end (minutes between the times as written, to the minute)
    lasted_s = 20 * (min(outages, OUTAGES_KEPT // 2) - 1) + 10
    assert int(re.search(r"\((\d+) min\)", items[0]).group(1)) in (lasted_s // 60, lasted_s // 60 + 1), items


def test_the_page_joins_outages_by_the_window_status_gives(monkeypatch):
    """The window was written twice, in the monitor and in app.js: the page now joins by /status outage_join_s."""
    from edge.service import status

    monkeypatch.setattr(status, "FLAP_WINDOW_S", 5.0)  # under the 10 s between the outages' ends and starts
    dom, _ = page_dom(fill=lambda stats: flapping(stats, 3))
    assert re.findall(r"<li>[^<]*: ([^<]*)</li>", dom) == ["camera gave no picture"] * 3


def test_while_ntp_has_not_set_the_clock_the_card_and_header_say_how_long_ago_not_a_time(monkeypatch):
    """The recent alerts said "3 min ago" while the Pi's clock was not set, but the card "since
    05:45:50 PM" and the header "updated 05:57:57 PM", times of a clock that may read 1970; once NTP
    has set it, times again."""
    from dataclasses import replace

    from edge.service import health

    def down_25_min(stats):
        watched(stats)
        stats.camera_down()
        since = datetime.now(timezone.utc) - timedelta(minutes=25)
        stats.data["alert_state_since"] = since.isoformat(timespec="seconds")

    for synced in (False, True):
        monkeypatch.setattr(health, "clock_synced", lambda: synced)
        dom, _ = page_dom(fill=down_25_min)
        since = re.findall(r'id="alert-since">([^<]*)', dom)
        updated = re.findall(r'id="updated">([^<]*)', dom)
        if synced:
            assert re.fullmatch(rf"since {ANOTHER_DAY}\d[^ ]* .*\(25 min\): .*", since[0]), since
            assert re.fullmatch(r"updated \d.*", updated[0]), updated
        else:
            assert since == ["since 25 min ago: the queue is not being watched — check the camera"], since
            assert updated == ["updated under 1 min ago"], updated
            # and until when the cooldown holds a new alert back: in how long
            dom, _ = page_dom(fill=lambda stats: stats.update(replace(result(4, 3, angry=3, happy=1), held_back_s=150.0), 0, {}))
            assert re.search(r'id="alert-held">unhappy again: a new alert can be raised in [23] min<', dom), \
                re.findall(r'id="alert-held"[^<]*', dom)


def test_alerts_stamped_before_ntp_set_the_pis_clock_say_how_long_ago_or_that_it_is_unknown_never_1970(
        tmp_path, monkeypatch):
    """A Pi booted without network, its clock at 1970 (no real-time clock): the alert raised 3 min
    ago reads "3 min ago", the one raised before the restart while the clock was not set either
    "time unknown (clock not set)"; before, both read the unset clock's time of day, as if just now."""
    from edge.service.history import History
    from edge.service.status import Stats
    from tests.test_status import BOOT_1970, PiClock

    db = tmp_path / "history.sqlite"
    pi = PiClock(monkeypatch, BOOT_1970)
    before = Stats("rt", "m", "video", history=History(db_path=str(db)))  # the run before the restart
    before.update(result(4, 3, "raised", "raised", angry=3, happy=1), 0, {})
    before.history.close()

    def raised_3_min_ago(stats):
        stats.history = History(db_path=str(db))
        stats.update(result(3, 2, "raised", "raised", angry=2, happy=1), 0, {})
        pi.wait(180)

    dom, _ = page_dom(fill=raised_3_min_ago)
    items = re.findall(r"<li>([^<]*)</li>", dom)
    assert items == ["3 min ago – now (3 min): queue unhappy, up to 67% of 3 faces",
                     "time unknown (clock not set) – not recorded (the monitor stopped): queue unhappy, up to 75% of 4 faces"], \
        dom[-3000:]
    assert "1970" not in dom


def test_without_javascript_the_page_says_so_and_asserts_nothing():
    """A browser with JavaScript turned off (a locked-down till, a reader mode) never polls: the
    page says what it needs, and neither "waiting for data" alone nor "none yet" under the recent
    alerts passes for an answer from the monitor."""
    with stand_in(fill=watched) as (url, done), LivePage(url, scripts=False) as page:
        text = page.wait_for("document.readyState === 'complete' && document.body.innerText")
        assert "This page needs JavaScript to show the queue" in text, text
        assert "none yet" not in text, text
        assert done == []  # no poll reached the monitor
    with stand_in(fill=watched) as (url, _), LivePage(url) as page:  # with it, no such line
        assert page.wait_for("document.body.dataset.live === '1'")
        assert "needs JavaScript" not in page.js("document.body.innerText")


@pytest.mark.parametrize("width", [390, 360])  # an iPhone's width; a common Android phone's
def test_the_charts_labels_are_readable_on_a_phone_and_clear_of_the_lines(width):
    """The chart is drawn at about half its size on a phone: its labels stay about 13 px there
    (14 at 390), like the legend under them, each inside the chart, none over another or over
    the plotted hour."""
    from benchmarks.page_shot import made_up_hour

    with stand_in(fill=lambda stats: made_up_hour(stats, time.time())) as (url, _), \
            LivePage(url, window=f"{width},844") as page:
        assert page.wait_for("document.body.dataset.live === '1' && document.getElementById('chart').dataset.points")
        px = page.js("""(() => { const svg = document.getElementById('chart'), scale = svg.getBoundingClientRect().width / 600;
            return [...svg.querySelectorAll('text')].map((t) => parseFloat(getComputedStyle(t).fontSize) * scale); })()""")
        assert len(px) == 8 and min(px) >= (14 if width == 390 else 12.8), px
        boxes = page.js("""(() => { const box = (e) => { const r = e.getBoundingClientRect();
                return [r.left, r.top, r.right, r.bottom]; }, svg = document.getElementById('chart');
            const grid = [...svg.querySelectorAll('.grid')].map(box);
            return {svg: box(svg), plot: [grid[0][0], grid[2][1], grid[0][2], grid[0][1]],
                    labels: [...svg.querySelectorAll('text')].map((t) => [t.textContent, box(t)])}; })()""")
        s, plot = boxes["svg"], boxes["plot"]

        def apart(a, b):
            return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]

        for i, (name, b) in enumerate(boxes["labels"]):
            assert s[0] <= b[0] and b[2] <= s[2] + 0.5 and s[1] <= b[1] and b[3] <= s[3] + 0.5, (name, b, s)
            assert apart(b, plot), (name, b, plot)
            for other, c in boxes["labels"][i + 1:]:
                assert apart(b, c), (name, other)


# Each text on the page while it is stale: its colour and its background's as drawn (the opacity and
# filters of the element and those around it applied), and the WCAG 2 contrast between them.
STALE_TEXT_CONTRAST = """(() => {
  const rgba = (s) => { const m = (s.match(/[\\d.]+/g) || []).map(Number);
    return m.length < 3 ? [0, 0, 0, 0] : [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  const over = (a, b) => [0, 1, 2].map((i) => a[i] * a[3] + b[i] * (1 - a[3])).concat([1]);
  const grey = (c) => { const y = 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]; return [y, y, y, c[3]]; };
  const lum = (c) => { const [r, g, b] = c.slice(0, 3).map((v) => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const ratio = (a, b) => { const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x); return (hi + 0.05) / (lo + 0.05); };
  const page = rgba(getComputedStyle(document.body).backgroundColor);
  return [...document.querySelectorAll('main *')].filter((e) => e.getClientRects().length && !e.closest('.sr-only')
      && [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())).map((e) => {
    const cs = getComputedStyle(e);
    let fg = rgba(e instanceof SVGElement ? cs.fill : cs.color), bg = null, opacity = 1, greyed = false, other = [];
    for (let a = e; a; a = a.parentElement) {
      const s = getComputedStyle(a);
      opacity *= parseFloat(s.opacity);
      if (s.filter === 'grayscale(1)') greyed = true; else if (s.filter !== 'none') other.push(s.filter);
      const c = rgba(s.backgroundColor);
      if (!bg && c[3] > 0) bg = over(c, page);
    }
    bg = bg || page;
    fg = over(fg, bg);
    if (greyed) { fg = grey(fg); bg = grey(bg); }
    const seen = (c) => over([c[0], c[1], c[2], opacity], page);
    return {text: (e.id ? '#' + e.id + ' ' : '') + e.textContent.trim().slice(0, 40),
            ratio: Math.round(100 * ratio(seen(fg), seen(bg))) / 100, filters: other};
  });
})()"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_stale_figures_stay_readable_and_are_marked_as_old_without_fading_the_text(scheme):
    """No data: the last figures, and since when the alert's state held, are what a manager reads then.
    They keep WCAG AA contrast (4.5:1), every text on the page; the cards say they are old by a dashed
    outline (and the banner says since when), not by fading the figures out."""
    from benchmarks.page_shot import made_up_hour

    with stand_in(["ok", "stop"], fill=lambda stats: made_up_hour(stats, time.time())) as (url, _), \
            LivePage(url) as page:
        page._call("Emulation.setEmulatedMedia", page._session,
                   features=[{"name": "prefers-color-scheme", "value": scheme}])
        assert page.wait_for("document.body.classList.contains('stale') && !document.getElementById('stale').hidden")
        texts = page.js(STALE_TEXT_CONTRAST)
        shown = {t["text"].split(" ")[0] for t in texts}
        assert {"#faces", "#negative-share", "#alert-state", "#alert-since"} <= shown, texts
        assert [t for t in texts if t["filters"]] == []
        low = [(t["text"], t["ratio"]) for t in texts if t["ratio"] < 4.5]
        assert low == [], low
        outlines = page.js("[...document.querySelectorAll('main .card')].map((c) => getComputedStyle(c).outlineStyle)")
        assert outlines and set(outlines) == {"dashed"}, outlines
        assert page.js("document.getElementById('stale').getClientRects().length") > 0


def test_the_expressions_counted_as_unhappy_are_marked_without_colour_and_said_to_a_screen_reader():
    """mood.negative (angry and sad here): their bars are red, which some colour-blind managers cannot
    tell from blue; they are also striped, their names marked "*" with a key under the table, and a
    screen reader hears "counted as unhappy" with their names."""
    with stand_in(fill=watched) as (url, _), LivePage(url) as page:
        assert page.wait_for("document.body.dataset.live === '1'")
        rows = page.js("""[...document.querySelectorAll('#emotions tr')].map((tr) => [tr.cells[0].firstChild.textContent,
            tr.cells[0].innerText.trim(), getComputedStyle(tr.querySelector('.bar')).backgroundImage])""")
        negative = {"angry", "sad"}
        assert len(rows) == 7 and {name for name, *_ in rows} >= negative, rows
        for name, seen, image in rows:
            marked = re.sub(r"\s*, counted as unhappy$", "", seen)  # the words for a screen reader: on their own line
            assert marked == (name + "*" if name in negative else name), (name, seen)
            assert image.startswith("repeating-linear-gradient") == (name in negative), (name, image)
        key = page.js("(() => { const k = document.getElementById('neg-key'); return k.getClientRects().length ? k.innerText : null; })()")
        assert key and key.startswith("*") and "striped" in key and "unhappy" in key, key
        # what a screen reader reads for each row's first cell: its name in the accessibility tree
        page._call("Accessibility.enable", page._session)
        nodes = page._call("Accessibility.getFullAXTree", page._session)["nodes"]
        cells = [re.sub(r"\s+,", ",", n["name"]["value"]) for n in nodes  # the name: the row's header
                 if n.get("role", {}).get("value") == "rowheader" and n.get("name", {}).get("value")]
        heard = {c.split(",")[0]: c for c in cells if c.split(",")[0] in {name for name, *_ in rows}}
        assert len(heard) == 7, cells
        for name, said in heard.items():
            assert said == (f"{name}, counted as unhappy" if name in negative else name), said


def seconds_of_day(clock: str) -> int:
    """"14:02:08" or "02:02:08 PM", as the page writes a time, in seconds after midnight."""
    h, m, s, half = re.fullmatch(r"(\d\d):(\d\d):(\d\d)(?: ([AP]M))?", clock).groups()
    return (int(h) % 12 + 12 * (half == "PM") if half else int(h)) * 3600 + int(m) * 60 + int(s)


def test_times_are_the_monitors_local_time_and_name_its_zone_to_a_browser_elsewhere():
    """The Pi in Kolkata (+05:30), the manager's browser first there too (no zone said: the store's
    own staff), then at head office in New York: the times stay the store's, named "IST"."""
    from benchmarks.page_shot import made_up_hour

    with monitor_in("Asia/Kolkata"), stand_in(fill=lambda stats: made_up_hour(stats, time.time())) as (url, _), \
            LivePage(url) as page:
        since = "document.getElementById('alert-since').textContent"
        assert page.wait_for(f"document.body.dataset.live === '1' && {since}.length")
        with urllib.request.urlopen(url + "status", timeout=10) as r:  # when the alert was raised, in UTC
            want = datetime.fromisoformat(json.load(r)["alert_raised_at"]).astimezone(timezone(timedelta(hours=5, minutes=30)))
        first = page.js(since)
        before = re.fullmatch(rf"since ({ANOTHER_DAY}[\d:]+(?: [AP]M)?) \((?:under 1|\d+) min\)", first)
        assert before, first
        page._call("Emulation.setTimezoneOverride", page._session, timezoneId="America/New_York")
        assert page.wait_for("document.getElementById('updated').textContent.includes('IST')", timeout_s=10), \
            page.js("document.getElementById('updated').textContent")
        assert page.js("new Date().getTimezoneOffset()") in (240, 300)  # the browser is in New York now
        said = page.js(since)
        clock = re.fullmatch(rf"since ({ANOTHER_DAY})([\d:]+(?: [AP]M)?) IST \((?:under 1|\d+) min\)", said)
        assert clock and seconds_of_day(clock.group(2)) == want.hour * 3600 + want.minute * 60 + want.second, (said, want)
        assert clock.group(1) + clock.group(2) == before.group(1)  # the same day and time as before
        items = page.js("[...document.querySelectorAll('#alerts li')].map((li) => li.textContent)")
        assert items and all(re.match(rf"{ANOTHER_DAY}[\d:]+(?: [AP]M)? IST ", i) for i in items), items
        assert page.wait_for("document.getElementById('chart-zone').textContent") == " ·\u00a0times\u00a0IST"
        label = page.js("document.getElementById('chart').getAttribute('aria-label')")
        end = re.match(r"Last hour, [\d:]+(?: [AP]M)? to (\d\d):(\d\d)(?: ([AP]M))? IST: ", label)
        now = datetime.now(timezone(timedelta(hours=5, minutes=30)))
        assert end, label
        hour = int(end.group(1)) % 12 + 12 * (end.group(3) == "PM") if end.group(3) else int(end.group(1))
        assert abs((hour * 60 + int(end.group(2))) - (now.hour * 60 + now.minute)) % (24 * 60) in (0, 1, 24 * 60 - 1), (label, now)


def test_the_stale_banner_says_the_monitors_time_of_its_last_answer_not_the_browsers(monkeypatch):
    """The Pi's clock 3 h ahead of the browser's (no NTP): every time on the page is the Pi's, so
    "No data since" is too, the time of its last answer by its clock, not the browser's."""
    from edge.service import status

    ahead_s = 3 * 3600
    monkeypatch.setattr(status, "time", types.SimpleNamespace(time=lambda: time.time() + ahead_s,
                                                              monotonic=time.monotonic))
    with stand_in(["ok", "stop"], watched) as (url, done), LivePage(url) as page:
        banner = page.wait_for("!document.getElementById('stale').hidden && document.getElementById('stale').textContent")
        pi_now = datetime.fromtimestamp(time.time() + ahead_s)  # the Pi's local time, now
        said = re.fullmatch(rf"No data since {ANOTHER_DAY}([\d:]+(?: [AP]M)?) — the monitor is not reachable", banner or "")
        assert said, (banner, done)
        behind_s = (pi_now.hour * 3600 + pi_now.minute * 60 + pi_now.second - seconds_of_day(said.group(1))) % 86400
        assert behind_s <= 20, (banner, pi_now)  # its last answer, seconds ago by the Pi's clock


def test_the_page_works_by_address_and_by_localhost_and_gives_a_rebound_name_nothing():
    """DNS rebinding as a browser meets it: another site's name that resolves to the Pi's loopback
    (chromium's resolver rules stand in for that site's DNS). Without a token the page is served
    at 127.0.0.1 and at localhost (an SSH tunnel's address), and to that name nothing of it."""
    rebound = "--host-resolver-rules=MAP rebound.example 127.0.0.1"
    with stand_in(fill=watched) as (url, _):
        for at in (url, url.replace("127.0.0.1", "localhost")):
            dom = chromium(at, "--dump-dom").stdout
            assert 'data-live="1"' in dom and "till-9" in dom, (at, dom[-3000:])
        dom = chromium(url.replace("127.0.0.1", "rebound.example"), "--dump-dom", rebound).stdout
        assert "allowed_hosts" in dom and "till-9" not in dom and "data-live" not in dom, dom[-3000:]


def test_times_from_before_the_clocks_changed_read_as_the_clock_on_the_wall_did():
    """The Pi in London half an hour after the clocks went forward (01:00 GMT became 02:00 BST): an
    alert raised at 00:30 GMT reads 00:30, not 01:30, the one cleared at 02:10 BST reads 02:10, and
    the chart's hour runs from 00:30 to 02:30; to a browser in New York named GMT and BST."""
    from edge.service import status
    from tests.test_status import CLOCKS_FORWARD, hour_over_the_change

    now = CLOCKS_FORWARD + 1800

    def over_the_change(stats):
        hour_over_the_change(stats, now)
        stats.data.update(alert_state="raised", alert_raised_at=datetime.fromtimestamp(now - 3600, timezone.utc).isoformat())

    def hh_mm_ss(said: str) -> list[str]:  # "00:30:00" or "12:30:00 AM", as 24-h times
        return ["%02d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)
                for s in map(seconds_of_day, re.findall(r"\d\d:\d\d:\d\d(?: [AP]M)?", said))]

    def hh_mm(said: str) -> list[str]:  # the recent alerts' "00:30" or "12:30 AM", as 24-h times
        return [t[:5] for t in hh_mm_ss(re.sub(r"(\d\d:\d\d)(?!:)", r"\1:00", said))]

    alerts = "[...document.querySelectorAll('#alerts li')].map((li) => li.textContent).join(' | ')"
    axis = "[...document.querySelectorAll('#chart text')].slice(-3).map((t) => t.textContent).join(' ')"
    with pytest.MonkeyPatch.context() as mp, monitor_in("Europe/London"):
        mp.setattr(status, "time", types.SimpleNamespace(time=lambda: now, monotonic=time.monotonic))
        with stand_in(fill=over_the_change) as (url, _), LivePage(url) as page:
            assert page.wait_for("document.body.dataset.live === '1' && document.getElementById('chart').dataset.points")
            since = page.js("document.getElementById('alert-since').textContent")
            assert hh_mm_ss(since) == ["00:30:00"] and since.endswith("(1 h 00 min)"), since
            assert hh_mm(page.js(alerts)) == ["00:30", "02:10"], page.js(alerts)
            assert page.js(alerts).endswith(" (40 min): queue unhappy, up to 70% of 4 faces"), page.js(alerts)  # by the clock
            assert re.sub(r"(\d\d):(\d\d)(?: [AP]M)?", "#", page.js(axis)) == "# # #", page.js(axis)
            hours = [int(h) % 12 for h in re.findall(r"(\d\d):\d\d", page.js(axis))]  # AM/PM aside
            assert hours == [0, 2, 2] and re.findall(r":(\d\d)", page.js(axis)) == ["30", "00", "30"], page.js(axis)
            page._call("Emulation.setTimezoneOverride", page._session, timezoneId="America/New_York")
            assert page.wait_for(f"{alerts}.includes('BST')", timeout_s=15), page.js(alerts)
            said = page.js(alerts)
            assert re.fullmatch(r"[\d:]+(?: [AP]M)? GMT – [\d:]+(?: [AP]M)? BST \(40 min\): .*", said), said
            assert hh_mm(said) == ["00:30", "02:10"], said  # the store's times still
            legend = "document.getElementById('chart-zone').textContent"
            assert page.wait_for(f"{legend}.includes('BST') && {legend}") == " ·\u00a0times\u00a0GMT\u00a0/\u00a0BST"
