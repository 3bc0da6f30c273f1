"""Soak: `edge run` as the service runs it, for a long time, with faults injected on a schedule.

Real parts only: a looping 640x480 video served as an MJPEG-over-HTTP camera at --fps (the
astronaut walks through the scene, then it is empty, so alerts are raised and cleared every
cycle of the video), a webhook receiver, a mosquitto broker with a persistent subscriber, a
command sink and the JSONL sink. Every --cycle-s the schedule takes the webhook down
(connection refused), makes it hang (accepts, never answers), stops and restarts the broker,
and stalls the camera (the stream stays open, no frames come).

Every minute: the service's RSS, open fds and threads (from /proc) and its /status. At the end:
each sink's delivered / duplicate / lost counts against the events the service produced (its
JSONL file), RSS growth in MB per hour (least squares after the first minutes of warm-up),
and how long a SIGTERM takes to end the process in each state (running, camera stalled,
webhook hanging with a request in flight, webhook down, broker down), measured on short
extra runs. After the soak, one more short run with every receiver up sends what is still
spooled, as a restart would.

    python benchmarks/soak.py [--minutes 60] [--cycle-s 300] [--fps 15] [--nice 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.scenes import astronaut_face, background, place
from edge.errors import UserError
from edge.labels import LABELS
from edge.sinks.webhook import tcp_reachable

NAME = "soak"
MOSQUITTO = "/usr/sbin/mosquitto"
# Within each cycle (seconds from its start): when each fault is on. Scaled to --cycle-s.
SCHEDULE_300 = (("webhook_down", 40, 100), ("webhook_hang", 120, 170), ("broker_down", 190, 230),
                ("camera_stall", 250, 275))
WARMUP_MIN = 3  # RSS growth is fitted after this many minutes (model, caches, first alerts)
STOP_STATES = ("running", "camera_stalled", "webhook_hanging", "webhook_down", "broker_down")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout_s: float, step_s: float = 0.1) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step_s)
    return bool(cond())


# ---------------------------------------------------------------------------- the parts


def scene_jpegs(fps: float) -> list[bytes]:
    """One loop of the video, JPEG-encoded: 30 s of the astronaut walking, 20 s of empty scene."""
    import cv2

    face = astronaut_face()
    out = []
    for i in range(int(50 * fps)):
        f = background(i % 7)
        if i < 30 * fps:
            place(f, face, 20 + abs((i * 2) % 400 - 200), 120, 200)
        out.append(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    return out


class Camera:
    """An MJPEG-over-HTTP camera looping `frames` at fps; `stalled` holds the stream open
    without frames, as a camera with a dead network or firmware does."""

    def __init__(self, frames: list[bytes], fps: float):
        self.stalled = threading.Event()
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=f")
                self.end_headers()
                i, next_t = 0, time.monotonic()
                try:
                    while True:
                        next_t += 1.0 / fps
                        time.sleep(max(0.0, next_t - time.monotonic()))
                        if cam.stalled.is_set():
                            continue
                        data = frames[i % len(frames)]
                        self.wfile.write(b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                         % (len(data), data))
                        i += 1
                except OSError:
                    return  # the client went away

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


class Webhook:
    """A receiver that is up (200), hanging (reads the POST, never answers, then drops the
    connection) or down (nothing listens: connection refused). Counts every accepted id."""

    def __init__(self):
        self.port = free_port()
        self.accepted: list[str] = []
        self.hung = 0
        self.mode = "down"
        self._unhang = threading.Event()
        self._httpd = None
        self.set("up")

    def _serve(self):
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if hook.mode == "hang":
                    hook.hung += 1
                    hook._unhang.wait()
                    self.close_connection = True
                    return  # no answer at all: the client times out
                hook.accepted.append(body["event_id"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def set(self, mode: str):
        if mode == self.mode:
            return
        if mode == "hang":
            self._unhang.clear()
        else:
            self._unhang.set()
        if mode == "down" and self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if mode != "down" and self._httpd is None:
            self._serve()
        self.mode = mode

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


class Broker:
    """mosquitto on 127.0.0.1 with persistence, so the subscriber's session survives restarts."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "")
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                        f"persistence_location {workdir}/\n" + (f"user {user}\n" if user else ""))
        self.cmd = [MOSQUITTO, "-c", str(conf)]
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.up():
            return
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        if not wait_until(lambda: not tcp_reachable("127.0.0.1", self.port, 1.0), 15):
            raise UserError(f"mosquitto did not start; see {self.log}")

    def stop(self):
        if self.up():
            self.proc.terminate()
            self.proc.wait(15)


class Subscriber:
    """A persistent QoS 1 subscriber on the alerts topic, recording every event id received."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.ids: list[str] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-subscriber", clean_session=False)
        self.client.reconnect_delay_set(0.2, 2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = lambda c, u, m: self.ids.append(json.loads(m.payload)["event_id"])
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------------- the service


class Service:
    """One `edge run` child process, as systemd runs it (a separate process, SIGTERM to stop)."""

    def __init__(self, workdir: Path, config: Path, source: str, nice: int, tag: str, trace_memory: bool = False):
        env = {**os.environ, "PYTHONPATH": str(common.REPO), "PYTHONUNBUFFERED": "1"}
        self.log = workdir / f"service-{tag}.log"
        self.out = workdir / f"service-{tag}.json"
        self.memtrace = workdir / f"memtrace-{tag}.jsonl" if trace_memory else None
        launcher = (["-m", "edge.cli"] if self.memtrace is None else
                    [str(Path(__file__).with_name("memtrace.py")), str(self.memtrace), "--warmup-s",
                     str(WARMUP_MIN * 60), "--"])
        cmd = ["nice", "-n", str(nice), sys.executable, *launcher, "run", "--config", str(config),
               "--source", source, "--json"]
        self.proc = subprocess.Popen(cmd, stdout=self.out.open("w"), stderr=self.log.open("w"), env=env,
                                     cwd=workdir)
        self.status_port = tomllib_load(config)["status"]["port"]

    def status(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/status", timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def sample(self) -> dict:
        pid = self.proc.pid
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 2), "threads": int(fields["Threads"]),
                "fds": len(os.listdir(f"/proc/{pid}/fd"))}

    def warm(self, timeout_s: float = 180) -> bool:
        return wait_until(lambda: (self.status() or {}).get("frames", 0) > 10, timeout_s, 0.5)

    def stop(self) -> float:
        """SIGTERM; seconds until the process has exited."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return float("inf")
        return time.monotonic() - t0

    def summary(self) -> dict:
        try:
            return json.loads(self.out.read_text())
        except (OSError, ValueError):
            return {}


def tomllib_load(path: Path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())


def write_config(workdir: Path, hook: Webhook, broker: Broker, status_port: int) -> Path:
    """Alerts that follow the astronaut: every label counts as negative, so the alert is raised
    while they are in view and cleared once the scene is empty (cooldown short)."""
    cfg = workdir / "soak.toml"
    cfg.write_text(f"""device_name = "soak"
[source]
down_after_s = 5.0
[mood]
window_s = 3.0
score = "votes"
min_seen_s = 0.5
negative = {json.dumps(list(LABELS))}
min_confidence = 0.0
[alert]
min_faces = 1
raise_share = 0.5
clear_share = 0.3
raise_after_s = 2.0
clear_after_s = 2.0
cooldown_s = 5.0
[status]
port = {status_port}
[sinks]
spool_dir = "{workdir / 'spool'}"
[sinks.jsonl]
path = "{workdir / 'events.jsonl'}"
[sinks.webhook]
url = "{hook.url}"
timeout_s = 3.0
[sinks.mqtt]
host = "127.0.0.1"
port = {broker.port}
topic = "soak/alerts"
state_topic = "soak/state"
[sinks.command]
argv = ["sh", "-c", "cat >> '{workdir / 'command.jsonl'}'; echo >> '{workdir / 'command.jsonl'}'"]
timeout_s = 10.0
""")
    return cfg


# ---------------------------------------------------------------------------- the run


def schedule(cycle_s: float) -> list[tuple[str, float, float]]:
    k = cycle_s / 300.0
    return [(name, a * k, b * k) for name, a, b in SCHEDULE_300]


def faults_at(t_s: float, cycle_s: float) -> set[str]:
    pos = t_s % cycle_s
    return {name for name, a, b in schedule(cycle_s) if a <= pos < b}


def apply(faults: set[str], cam: Camera, hook: Webhook, broker: Broker) -> None:
    hook.set("down" if "webhook_down" in faults else "hang" if "webhook_hang" in faults else "up")
    if "broker_down" in faults:
        broker.stop()
    else:
        broker.start()
    if "camera_stall" in faults:
        cam.stalled.set()
    else:
        cam.stalled.clear()


def stop_latency(state: str, workdir: Path, cfg: Path, cam: Camera, hook: Webhook, broker: Broker,
                 nice: int) -> dict:
    """A short run brought into `state`, then SIGTERM; seconds until it has exited."""
    apply(set(), cam, hook, broker)
    svc = Service(workdir, cfg, cam.url, nice, f"stop-{state}")
    if not svc.warm():
        svc.stop()
        return {"state": state, "stop_s": None, "note": "service did not start; see " + svc.log.name}
    note = ""
    if state == "camera_stalled":
        cam.stalled.set()
        note = "camera reported down" if wait_until(lambda: (svc.status() or {}).get("camera") == "down", 30) else ""
    elif state == "webhook_hanging":
        hung = hook.hung
        hook.set("hang")
        cam.stalled.set()  # the camera_down event gives the webhook a request to hang on
        note = "a POST was in flight" if wait_until(lambda: hook.hung > hung, 30) else "no POST in flight"
    elif state == "webhook_down":
        hook.set("down")
        cam.stalled.set()
        wait_until(lambda: (svc.status() or {}).get("camera") == "down", 30)
        time.sleep(1.0)
        note = "camera_down event spooled"
    elif state == "broker_down":
        broker.stop()
        time.sleep(3.0)
        note = "broker stopped 3 s before"
    sample = svc.sample()
    seconds = svc.stop()
    apply(set(), cam, hook, broker)
    return {"state": state, "stop_s": round(seconds, 3), "exit_code": svc.proc.returncode, "note": note,
            "threads_before": sample["threads"]}


def reconcile(workdir: Path, hook: Webhook, sub: Subscriber) -> dict:
    """Events the service produced (its JSONL) against what each receiver got."""
    lines = (workdir / "events.jsonl").read_text().splitlines() if (workdir / "events.jsonl").exists() else []
    events = [json.loads(x) for x in lines]
    sent_ids = [e["event_id"] for e in events]
    sent = set(sent_ids)
    cmd_path = workdir / "command.jsonl"
    cmd_ids = [json.loads(x)["event_id"] for x in cmd_path.read_text().splitlines() if x.strip()] \
        if cmd_path.exists() else []

    def spooled(key: str) -> int:
        d = workdir / "spool" / key
        return len(list(d.glob("*.json"))) if d.is_dir() else 0

    def dead(key: str) -> int:
        d = workdir / "spool" / key / "dead"
        return len(list(d.glob("*.json"))) if d.is_dir() else 0

    def row(received: list[str], key: str | None) -> dict:
        got = set(received)
        return {"received": len(received), "unique": len(got & sent), "duplicates": len(received) - len(got),
                "still_spooled": spooled(key) if key else 0, "dead_lettered": dead(key) if key else 0,
                "lost": len(sent - got) - (spooled(key) if key else 0)}

    kinds: dict[str, int] = {}
    for e in events:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    return {"sent": len(sent), "sent_by_kind": kinds, "duplicate_ids_in_jsonl": len(sent_ids) - len(sent),
            "webhook": row(hook.accepted, "webhook"), "mqtt": row(sub.ids, "mqtt"),
            "command": row(cmd_ids, None)}


def rss_growth_mb_per_h(samples: list[dict], key: str = "rss_mb") -> float | None:
    pts = [(s["t_s"], s[key]) for s in samples if s["t_s"] >= WARMUP_MIN * 60 and key in s]
    if len(pts) < 3:
        return None
    t, r = np.array(pts).T
    slope = np.polyfit(t, r, 1)[0]
    return round(float(slope * 3600), 3) + 0.0  # + 0.0: no '-0.00' in the report


WORKDIR_MARK = ".queue-mood-soak"  # says a folder is a soak's, so a later --workdir may empty it


def load_line(samples: list[dict], cores: int) -> str | None:
    """The machine's load over the soak: the header's warning reads it only at the start, and other
    work started later took frames from the service, which the fps and dropped columns show as if
    the service had dropped them by itself. None for results recorded before the load was."""
    loads = [s["load1"] for s in samples if s.get("load1") is not None]
    if not loads:
        return None
    line = f"- the machine's 1-minute load average (the service's own included): {min(loads):g}-{max(loads):g} on {cores} cores"
    busy = [s for s in samples if s.get("load1", 0) > cores]
    if busy:
        line += (f"; above {cores} in {len(busy)} of {len(samples)} samples (minutes {busy[0]['t_s'] / 60:.0f}-"
                 f"{busy[-1]['t_s'] / 60:.0f}): other work competed for the CPU, so frames dropped then are not the "
                 "service's own doing")
    return line


def prepare_workdir(workdir: str | None) -> Path:
    """An empty folder for the soak: a new temp one, or --workdir emptied when it is new, empty or
    an earlier soak's; any other folder (--workdir . or ~) is refused, never deleted."""
    if not workdir:
        path = Path(tempfile.mkdtemp(prefix="qm-soak-"))
    else:
        path = Path(workdir).expanduser()
        if path.is_dir() and any(path.iterdir()):
            if not any((path / n).is_file() for n in (WORKDIR_MARK, "soak.toml")):  # soak.toml: before the mark
                raise UserError(f"--workdir {workdir} holds files that are not an earlier soak's; the soak empties its "
                                "folder, so pass a new or empty one.")
            shutil.rmtree(path)
        elif path.exists() and not path.is_dir():
            raise UserError(f"--workdir {workdir} is a file; pass a folder.")
        path.mkdir(parents=True, exist_ok=True)
    (path / WORKDIR_MARK).write_text("")
    return path


def run(args, argv) -> dict:
    workdir = prepare_workdir(args.workdir)  # refused before anything starts
    if not Path(MOSQUITTO).exists():
        raise UserError(f"The soak needs the mosquitto broker at {MOSQUITTO} (apt install mosquitto).")
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        raise UserError("The soak needs paho-mqtt: pip install 'queue-mood[mqtt]'.") from None
    report = common.run_header(NAME, argv)
    cam = Camera(scene_jpegs(args.fps), args.fps)
    hook = Webhook()
    # Whatever ends the soak early (an error, Ctrl-C), the broker and the services it started stop
    # with it: a broker left running held its port and outlived the benchmark.
    with contextlib.ExitStack() as cleanup:
        broker = Broker(workdir / "broker")
        broker.start()
        cleanup.callback(broker.stop)
        sub = Subscriber(broker.port, "soak/alerts")
        cleanup.callback(sub.close)
        cfg = write_config(workdir, hook, broker, free_port())
        print(f"soak: {args.minutes:g} min, workdir {workdir}", flush=True)

        svc = Service(workdir, cfg, cam.url, args.nice, "main", args.trace_memory)
        cleanup.callback(lambda: svc.proc.poll() is None and svc.stop())
        if not svc.warm():
            svc.stop()
            raise UserError(f"edge run did not start; see {svc.log}")
        t0 = time.monotonic()
        samples, transitions = [], []
        active: set[str] = set()
        next_sample = 0.0
        while (t := time.monotonic() - t0) < args.minutes * 60:
            want = faults_at(t, args.cycle_s)
            if want != active:
                apply(want, cam, hook, broker)
                transitions.append({"t_s": round(t, 1), "faults": sorted(want)})
                active = want
            if t >= next_sample:
                st = svc.status() or {}
                s = {"t_s": round(t, 1), **svc.sample(), "load1": round(os.getloadavg()[0], 2),
                     "fps": round(st.get("fps", 0.0), 2),
                     "frames": st.get("frames"), "dropped_frames": st.get("dropped_frames"),
                     "camera": st.get("camera"), "faults": sorted(active),
                     "spooled": {k: v.get("spooled") for k, v in st.get("sinks", {}).items() if v.get("spooled")}}
                samples.append(s)
                print(f"soak: {t / 60:5.1f} min  rss {s['rss_mb']:.1f} MB  fds {s['fds']}  threads {s['threads']}  "
                      f"fps {s['fps']}  faults {','.join(s['faults']) or '-'}", flush=True)
                next_sample += 60.0
            if svc.proc.poll() is not None:
                raise UserError(f"edge run exited during the soak (code {svc.proc.returncode}); see {svc.log}")
            time.sleep(0.2)
        apply(set(), cam, hook, broker)
        final_stop_s = svc.stop()
        main_summary = svc.summary()
        soak_s = time.monotonic() - t0

        stops = [{"state": "running (end of the soak)", "stop_s": round(final_stop_s, 3),
                  "exit_code": svc.proc.returncode, "note": f"after {soak_s / 60:.1f} min" + (
                      "; includes --trace-memory's last snapshot at exit" if args.trace_memory else "")}]
        if not args.no_stop_checks:
            for state in STOP_STATES:
                stops.append(stop_latency(state, workdir, cfg, cam, hook, broker, args.nice))
                print(f"soak: stop in state {state}: {stops[-1]['stop_s']} s", flush=True)

        # What is still spooled goes out on the next start, as after a restart in the field.
        drain = Service(workdir, cfg, cam.url, args.nice, "drain")
        drain.warm()
        wait_until(lambda: not any((workdir / "spool" / k).glob("*.json")
                                   for k in ("webhook", "mqtt") if (workdir / "spool" / k).is_dir()), 60, 0.5)
        time.sleep(2.0)  # late PUBACKs and subscriber deliveries
        drain.stop()
        counts = reconcile(workdir, hook, sub)

        report.update({
            "minutes_requested": args.minutes, "minutes_run": round(soak_s / 60, 2), "fps": args.fps,
            "cycle_s": args.cycle_s, "schedule": schedule(args.cycle_s), "nice": args.nice, "workdir": str(workdir),
            "samples": samples, "fault_transitions": transitions, "counts": counts, "stop_latency": stops,
            "main_run_summary": main_summary, "rss_growth_mb_per_h": rss_growth_mb_per_h(samples),
            "fds_range": [min(s["fds"] for s in samples), max(s["fds"] for s in samples)] if samples else None,
            "threads_range": [min(s["threads"] for s in samples), max(s["threads"] for s in samples)] if samples else None,
        })
        if svc.memtrace is not None:
            report["memory"] = memory_split(svc.memtrace)
        return report


MEMORY_KEYS = (("rss_mb", "RSS (includes tracemalloc's own)"), ("python_heap_mb", "Python heap (tracemalloc)"),
               ("tracemalloc_own_mb", "tracemalloc's own bookkeeping"),
               ("malloc_in_use_mb", "malloc: handed out (Python's large objects + native code)"),
               ("malloc_held_mb", "malloc: held from the system (in use + free in arenas)"),
               ("gc_objects", "objects the garbage collector tracks"))


def memory_split(path: Path) -> dict:
    """The traced run's samples, each quantity's growth per hour after warm-up, and the source
    lines whose allocations grew most (memtrace.py)."""
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    top = path.with_name(path.stem + "-top.json")
    return {"samples": lines, "per_hour": {k: rss_growth_mb_per_h(lines, k) for k, _ in MEMORY_KEYS},
            "top": json.loads(top.read_text()) if top.exists() else None}


# ---------------------------------------------------------------------------- output


def draw(report: dict, out: Path):
    plt = common.pyplot()
    s = report["samples"]
    if plt is None or len(s) < 2:
        return []
    t = [x["t_s"] / 60 for x in s]
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    for ax, key, label in zip(axes, ("rss_mb", "fds", "threads"), ("RSS (MB)", "open fds", "threads")):
        ax.plot(t, [x[key] for x in s], marker="o", ms=3)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        for name, a, b in report["schedule"]:
            c = 0.0
            while c * report["cycle_s"] < report["minutes_run"] * 60:
                ax.axvspan((c * report["cycle_s"] + a) / 60, (c * report["cycle_s"] + b) / 60, alpha=0.08,
                           color={"webhook_down": "red", "webhook_hang": "orange", "broker_down": "purple",
                                  "camera_stall": "gray"}[name])
                c += 1
    axes[-1].set_xlabel("minutes (shaded: webhook down / hanging, broker down, camera stalled)")
    fig.suptitle(f"edge run soak: {report['minutes_run']:.1f} min at {report['fps']:g} fps with faults")
    return [common.save_figure(plt, fig, out, NAME)]


def markdown(r: dict) -> str:
    c = r["counts"]
    lines = [common.md_header(f"Soak: {r['minutes_run']:.1f} minutes of `edge run` with faults", r)]
    if r["minutes_run"] < r["minutes_requested"] - 0.1:
        lines.append(f"> Ran {r['minutes_run']:.1f} of the {r['minutes_requested']:g} minutes requested.\n")
    lines.append(f"Looping 640x480 MJPEG camera at {r['fps']:g} fps; faults every {r['cycle_s']:g} s cycle: "
                 + ", ".join(f"{n} {a:.0f}-{b:.0f} s" for n, a, b in r["schedule"]) + f"; service run with nice "
                 f"{r['nice']}. Events produced (JSONL): {c['sent']} "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(c['sent_by_kind'].items()))}).\n")
    lines.append("## Delivery (after the soak and one restart that sends what was spooled)\n")
    lines.append(common.md_table(
        ["sink", "sent", "received", "unique", "duplicates", "still spooled", "dead-lettered", "lost"],
        [[k, c["sent"], c[k]["received"], c[k]["unique"], c[k]["duplicates"], c[k]["still_spooled"],
          c[k]["dead_lettered"], c[k]["lost"]] for k in ("webhook", "mqtt", "command")]))
    lines.append("\nMQTT duplicates are QoS 1 redeliveries (at least once); receivers drop them by event_id. The "
                 "command sink has no spool: an event whose command is killed at shutdown is not retried.\n")
    lines.append("## Resources (one sample a minute)\n")
    lines.append(f"- RSS growth after minute {WARMUP_MIN}: **{common.fmt(r['rss_growth_mb_per_h'])} MB/hour** "
                 "(least-squares slope)")
    lines.append(f"- open fds: {r['fds_range']}; threads: {r['threads_range']} (min, max)")
    if load := load_line(r["samples"], r["machine"]["cores"]["usable"]):
        lines.append(load)
    lines.append("")
    lines.append(common.md_table(["minute", "RSS MB", "fds", "threads", "load", "fps", "dropped", "camera", "faults",
                                  "spooled"],
                                 [[f"{s['t_s'] / 60:.1f}", s["rss_mb"], s["fds"], s["threads"], s.get("load1", "-"), s["fps"],
                                   s["dropped_frames"], s["camera"], ", ".join(s["faults"]) or "-",
                                   ", ".join(f"{k} {v}" for k, v in s["spooled"].items()) or "-"]
                                  for s in r["samples"]]))
    if r.get("memory"):
        lines.append(memory_markdown(r["memory"]))
    lines.append("\n## Stop signal (SIGTERM to exit)\n")
    lines.append(common.md_table(["state", "seconds", "exit code", "note"],
                                 [[s["state"], common.fmt(s["stop_s"]), s.get("exit_code"), s.get("note", "")]
                                  for s in r["stop_latency"]]))
    return "\n".join(lines) + "\n"


def memory_markdown(m: dict) -> str:
    lines = ["\n## Where the memory is (--trace-memory: the main run under tracemalloc)\n",
             f"Growth per hour after minute {WARMUP_MIN} (least squares over {len(m['samples'])} samples, one a "
             "minute). tracemalloc slows Python's allocations and its bookkeeping is part of RSS, so this run's "
             "RSS is not the untraced figure above; what matters is which line moves with it.\n"]
    first, last = (m["samples"][0], m["samples"][-1]) if m["samples"] else ({}, {})
    lines.append(common.md_table(["quantity", "first", "last", "growth per hour"],
                                 [[label, *(common.fmt(x.get(k)) for x in (first, last)), common.fmt(m["per_hour"].get(k))]
                                  for k, label in MEMORY_KEYS]))
    if m.get("top"):
        t = m["top"]
        lines.append(f"\nCall stacks whose live allocations grew most from minute {t['since_s'] / 60:.0f} to "
                     f"{t['at_s'] / 60:.0f} (the last three frames, innermost last):\n")
        lines.append(common.md_table(["KiB grown", "blocks grown", "KiB now", "where"],
                                     [[x["size_diff_kb"], x["count_diff"], x["size_kb"],
                                       " → ".join(x["where"][-3:])]
                                      for x in t["top"]]))
    return "\n".join(lines) + "\n"


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    positive = common.number(float, 0, above=True)  # -1 minutes would soak on regardless
    ap.add_argument("--minutes", type=positive, default=60.0, help="soak length (default: %(default)s)")
    ap.add_argument("--cycle-s", type=positive, default=300.0, help="fault schedule period (default: %(default)s)")
    ap.add_argument("--fps", type=positive, default=15.0, help="camera frame rate (default: %(default)s)")
    ap.add_argument("--nice", type=int, default=10, help="niceness of the service process (default: %(default)s)")
    ap.add_argument("--workdir", default=None, help="folder for spool, logs and config, emptied first: a new or empty "
                    "one, or an earlier soak's (default: a new temp folder)")
    ap.add_argument("--no-stop-checks", action="store_true", help="skip the stop-latency runs per state")
    ap.add_argument("--trace-memory", action="store_true",
                    help="run the main service under tracemalloc (benchmarks/memtrace.py) and report where its "
                         "memory grows: Python heap, malloc, objects, and the source lines that grew most")
    common.add_common_args(ap)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return common.finish(NAME, args, argv, run, draw, markdown)


if __name__ == "__main__":
    sys.exit(main())
