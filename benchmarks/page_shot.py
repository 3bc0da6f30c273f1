"""The README's picture of the manager's page (docs/status-page.png), and headless chromium
for the page's tests.

The picture: a real StatusServer and the page's own code in Debian's chromium at a phone's
width, over a made-up last hour of a queue of 2-4 people: calm, an unhappy spell raised and
cleared about 25 minutes ago, and another raised a minute ago. Only the figures are made up
(seeded); everything drawn is what `edge run` serves and how its page shows it.

    python benchmarks/page_shot.py [--out docs/status-page.png]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.errors import UserError

PHONE = "430,1400"  # a phone-sized window: the page is read on the manager's phone
# (minutes before now, how long in minutes): the unhappy spells of the made-up hour
SPELLS = ((27.0, 6.0), (1.5, 1.5))
OUTAGE = (14.0, 3.0)  # likewise, the camera's outage: a blank stretch on the chart, a line in the list


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(url: str, *args: str, budget_ms: int = 6000) -> subprocess.CompletedProcess:
    """Headless chromium on `url`; virtual time runs the page's timers (its polling) for
    `budget_ms`, waiting for its fetches, before the DOM is dumped or the screenshot taken."""
    return subprocess.run([chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", "--hide-scrollbars", f"--virtual-time-budget={budget_ms}",
                           *args, url], capture_output=True, text=True, timeout=120)


def screenshot(url: str, out: Path, window: str = PHONE) -> subprocess.CompletedProcess:
    return chromium(url, f"--screenshot={out}", f"--window-size={window}")


def _above_9(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class LivePage:
    """Headless chromium on `url` in real time, asked over its DevTools pipe what the page
    holds (`js`). Virtual time (chromium()) stands still while a request is pending, so a
    request that never gets an answer needs this; it also measures the layout, on a phone's
    screen of `window` (a window of the browser's own is 500 wide at least)."""

    def __init__(self, url: str, window: str = PHONE, scripts: bool = True):
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        # chromium reads commands on fd 3 and answers on fd 4, each message ending in a NUL; bash
        # puts them there from fds above 9, which neither is
        to_browser, from_browser = (_above_9(fd) for fd in (to_browser, from_browser))
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}', chromium_binary(), "--headless=new",
             "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", "--hide-scrollbars",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buf, self._id = b"", 0
        try:
            page = next(t for t in self._call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            self._session = self._call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            width, height = map(int, window.split(","))
            self._call("Emulation.setDeviceMetricsOverride", self._session, width=width, height=height,
                       deviceScaleFactor=1, mobile=True)
            if not scripts:  # a browser with JavaScript turned off (js() still answers)
                self._call("Emulation.setScriptExecutionDisabled", self._session, value=True)
            self._call("Page.navigate", self._session, url=url)
        except BaseException:
            self.close()
            raise

    def _call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        os.write(self._out, json.dumps({"id": self._id, "method": method, "params": params,
                                        **({"sessionId": session} if session else {})}).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._in, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def js(self, expression: str):
        """The value of a JavaScript expression in the page."""
        return self._call("Runtime.evaluate", self._session, expression=expression,
                          returnByValue=True)["result"].get("value")

    def forget_cookies(self):
        """As when the page's cookie runs out."""
        self._call("Network.clearBrowserCookies", self._session)

    def wait_for(self, expression: str, timeout_s: float = 30.0):
        """The expression's value once it is truthy; its last value when timeout_s has passed."""
        deadline = time.monotonic() + timeout_s
        while not (value := self.js(expression)) and time.monotonic() < deadline:
            time.sleep(0.25)
        return value

    def close(self):
        self.proc.kill()
        self.proc.wait()
        for fd in (self._out, self._in):
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def made_up_hour(stats, now: float, seed: int = 7) -> None:
    """Fill `stats` (edge.service.status.Stats) with an hour of figures, one every 2 s, and its
    current state: the last spell's alert raised, 3 of 4 faces unhappy; the camera down for a while between."""
    from edge.config import AlertConfig
    from edge.labels import LABELS

    policy, step_s = AlertConfig(), 2.0
    rng = np.random.default_rng(seed)
    raised_since = None
    faces, share, streak = 3, 0.1, 0
    down = False
    for t in np.arange(now - 3600, now, step_s):
        ago_min = (now - t) / 60
        if down != (OUTAGE[0] - OUTAGE[1] < ago_min <= OUTAGE[0]):
            down = not down
            stats.history.add_outage(t, "down" if down else "up")
        if down:
            continue
        unhappy = any(start - length <= ago_min <= start for start, length in SPELLS)
        if rng.random() < 1 / 45:  # someone joins or leaves about every 90 s
            faces = int(np.clip(faces + rng.choice([-1, 1]), 3 if unhappy else 2, 4))
        share = float(np.clip(0.9 * share + 0.1 * (0.7 if unhappy else 0.08) + rng.normal(0, 0.03), 0, 1))
        # the default policy's thresholds and delays (edge.config.AlertConfig)
        streak = streak + 1 if (share < policy.clear_share if raised_since else share >= policy.raise_share) else 0
        if streak * step_s >= (policy.clear_after_s if raised_since else policy.raise_after_s):
            streak = 0
            if raised_since is None:
                raised_since = t
                stats.history.add_alert(t, "raised", share, faces)
            else:
                raised_since = None
                stats.history.add_alert(t, "cleared", share, faces)
        stats.history.add(t, share, faces, raised_since is not None)
    stats.data.update(faces=4, negative_share=0.75, alert_state="raised", alerts_raised=2, fps=15.0,
                      counts={**dict.fromkeys(LABELS, 0), "angry": 2, "neutral": 1, "sad": 1},
                      alert_raised_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(raised_since)),
                      stage_ms={"detect": 21.0, "classify": 3.1, "track": 0.2})
    stats.started -= 5 * 3600  # up for a working day so far


def run(out: Path) -> Path:
    from edge.config import MoodConfig, StatusConfig
    from edge.service import health
    from edge.service.status import Stats, StatusServer

    if chromium_binary() is None:
        raise UserError("The picture needs Debian's chromium: sudo apt install chromium.")
    stats = Stats("ai-edge-litert", "model_int8.tflite", "camera 0 (picamera2, 640x480 @ 15 fps)", device="till-1",
                  negative=MoodConfig().negative, alert_advice=StatusConfig.alert_advice,
                  # a made-up installed release: the checkout's own commit would change the picture with every commit
                  release={"version": "0.1.0", "commit": "0123456789ab", "bundle_created": "2026-12-01T09:30:00+00:00",
                           "model_sha256": "038903d760b3"})
    made_up_hour(stats, time.time())
    srv = StatusServer(stats, StatusConfig(port=0)).start()
    # the made-up Pi's clock is set by NTP, as a store's is, whatever this machine's: the page writes times of day
    with mock.patch.object(health, "clock_synced", lambda: True):
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            r = screenshot(f"http://127.0.0.1:{srv.port}/", out)
        finally:
            srv.stop()
    if not out.exists() or out.stat().st_size < 10_000:
        raise UserError(f"chromium wrote no picture to {out}: {r.stderr.strip()[-300:]}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "status-page.png",
                    help="PNG to write (default: docs/status-page.png, the README's picture)")
    args = ap.parse_args(argv)
    try:
        print(f"wrote {run(args.out)}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
