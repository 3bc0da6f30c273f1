"""`edge demo`: the product doing its job in half a minute, with no camera and no dataset.

Makes a 26-second queue scene (edge.ops.demo_scene: four people, three turn unhappy and calm
down again), then runs `edge run`'s own service loop on it (the real detector, classifier,
tracker, mood window, alert policy and sinks) with the product's default thresholds. The demo's
config differs from the defaults only in where things go: the scene as the source, a JSON-lines
alert file and spool in the demo folder, and the status endpoint on a free port. It prints a line
per second of the scene, the alert raised and cleared (log and JSON lines), and a summary chart.

    OUT/scene.mp4, scene.json   the scene and what is in it (who is unhappy when)
    OUT/demo.toml               the config used: `edge run --config OUT/demo.toml` replays it
    OUT/alerts.jsonl            the alert events, as the jsonl sink writes them
    OUT/summary.png             expressions over time, negative share, the alert period
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from edge.config import Config, load_config, model_file, to_dict, to_toml
from edge.errors import UserError


@dataclass
class DemoSettings:
    out: str | None = None  # default: default_out()
    realtime: bool = True  # play the scene at its own pace (False: as fast as the machine goes)
    model: str | None = None  # another model than the shipped one (a .tflite with its card, or convert's folder)


@dataclass
class DemoResult:
    out: Path
    summary: dict  # edge run's summary
    alerts: list[dict]  # the events in alerts.jsonl
    chart: Path
    config: Path


DEMO_FILES = ("scene.mp4", "scene.json", "demo.toml", "alerts.jsonl", "summary.png")
DEMO_CONFIG_HEAD = "# The config `edge demo` used: the product defaults, with the demo's files.\n"


def _earlier_demo(config_path: Path) -> bool:
    """Whether the folder holds an earlier demo: its demo.toml, with the line the demo writes first."""
    try:
        with open(config_path, encoding="utf-8") as f:
            return f.readline() == DEMO_CONFIG_HEAD
    except (OSError, UnicodeDecodeError):
        return False


def default_out() -> Path:
    """Outside any checkout: $XDG_CACHE_HOME/queue-mood/demo (~/.cache/queue-mood/demo)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "queue-mood" / "demo"


def demo_config(out: Path, video: Path, realtime: bool = True, model: str | None = None) -> Config:
    """The product defaults with the demo's files: only where things go, and the scene played at
    its own pace as a camera would (unless --fast), differ. Paths are absolute: demo.toml
    replays from anywhere (a config's relative paths are its folder's)."""
    out, video = out.absolute(), video.absolute()
    return load_config(None, {
        "device_name": "demo",
        "source.path": str(video),
        "source.realtime": realtime,
        "sinks.spool_dir": str(out / "spool"),
        "sinks.jsonl": {"path": str(out / "alerts.jsonl")},
        "status.port": 0,  # any free port: a running service may hold the default one
        **({"model.path": str(Path(model).absolute())} if model else {}),
    })


class _Live:
    """The per-frame hook: a line per second of scene time and the data for the chart."""

    def __init__(self, echo):
        from edge.service.console import status_text

        self.echo, self.status_text = echo, status_text
        self.rows: list[tuple] = []  # (t_s, faces, negative_share, counts per label)
        self.periods: list[dict] = []  # {"raised_s", "cleared_s"}
        self.labels: list[str] | None = None
        self._second = -1

    def __call__(self, frame, result) -> None:
        import numpy as np

        if self.labels is None:
            self.labels = list(result.mood.counts)
        counts = np.zeros(len(self.labels), np.int64)
        for tr in result.tracks:
            counts[tr.top] += 1
        self.rows.append((result.t_s, len(result.tracks), result.mood.negative_share, counts))
        if result.transition == "raised":
            self.periods.append({"raised_s": round(result.t_s, 2), "cleared_s": None})
        elif result.transition == "cleared" and self.periods:
            self.periods[-1]["cleared_s"] = round(result.t_s, 2)
        if result.transition:
            self.echo(f"{result.t_s:5.1f}s  >>> ALERT {result.transition.upper()}: "
                      f"{100 * result.mood.negative_share:.0f}% of {result.mood.faces} faces look negative")
        if int(result.t_s) > self._second:
            self._second = int(result.t_s)
            self.echo(f"{result.t_s:5.1f}s  {self.status_text(result)}")


def run(s: DemoSettings, echo=print) -> DemoResult:
    """Make the scene, run the service loop on it, write the chart; raises UserError when
    something needed is missing."""
    from edge.errors import require_modules
    from edge.ops.analyze import plot_timeline
    from edge.ops.demo_scene import FPS, PEOPLE, SECONDS, write_scene
    from edge.service import app

    require_modules("edge demo", "matplotlib", "skimage")  # the chart, the scene's photo
    if s.model:  # a wrong path is one line before the scene is made, not after
        s = dataclasses.replace(s, model=str(model_file(s.model)))
    out = (Path(s.out).expanduser() if s.out else default_out()).absolute()
    config_path = out / "demo.toml"
    # Only an earlier demo is written over: files of these names in a folder of the user's stay theirs.
    mine = [name for name in DEMO_FILES if (out / name).exists()] if out.is_dir() else []
    if mine and not _earlier_demo(config_path):
        raise UserError(f"--out {out} already holds {', '.join(mine)}, which no earlier edge demo wrote and this one "
                        "would overwrite; pass another --out (a new folder, or an earlier demo's).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"Cannot create the demo folder {out} ({exc.strerror}); pass --out DIR.") from exc
    video = out / "scene.mp4"
    cfg = demo_config(out, video, s.realtime, s.model)
    try:  # the first write: a folder that exists but takes none (another user's, read-only) is named here
        config_path.write_text(DEMO_CONFIG_HEAD + to_toml(to_dict(cfg)))
        (out / "alerts.jsonl").unlink(missing_ok=True)  # this run's events only
    except OSError as exc:
        raise UserError(f"Cannot write the demo's files in {out} ({exc.strerror or type(exc).__name__}: "
                        f"{exc.filename}); pass --out DIR to a folder you can write.") from exc

    echo(f"Making a {SECONDS:.0f}-second queue scene: {len(PEOPLE)} people (scikit-image's astronaut photo); "
         f"{sum(p.unhappy_from_s is not None for p in PEOPLE)} of them turn unhappy at about "
         f"{min(p.unhappy_from_s for p in PEOPLE if p.unhappy_from_s):.0f} s and calm down at about "
         f"{min(p.unhappy_until_s for p in PEOPLE if p.unhappy_until_s):.0f} s.")
    write_scene(video)
    a = cfg.alert
    echo(f"Running the monitor on it with the default alert policy: raise when at least {a.raise_share:.0%} of "
         f"at least {a.min_faces} faces look negative for {a.raise_after_s:g} s; clear below "
         f"{a.clear_share:.0%} for {a.clear_after_s:g} s.")
    live = _Live(echo)
    summary = app.run(cfg, app.RunOptions(), on_result=live)
    stopped_at = live.rows[-1][0] if live.rows else 0.0
    if summary.get("stopped_by_signal") and not (live.periods and live.periods[-1]["cleared_s"] is not None):
        # cut short by Ctrl-C: not a monitor that failed to raise or clear the alert
        err = UserError(f"edge demo was stopped at {stopped_at:.1f} s of the {SECONDS:.0f}-second scene, before the "
                        "alert was raised and cleared; run it again to watch it whole (--fast: a few seconds).")
        err.exit_code = 130
        raise err

    chart = out / "summary.png"
    plot_timeline(chart, "edge demo", live.labels or [], live.rows, live.periods, SECONDS, 1.0 / FPS, a.raise_share)
    alerts_file = out / "alerts.jsonl"
    alerts = [json.loads(line) for line in alerts_file.read_text().splitlines()] if alerts_file.exists() else []
    echo(f"alerts.jsonl ({alerts_file}):")
    for event in alerts:
        echo("  " + json.dumps(event, separators=(",", ":")))
    kinds = [e["kind"] for e in alerts]
    if "raised" in kinds and "cleared" in kinds:
        raised = next(e for e in alerts if e["kind"] == "raised")
        cleared = next(e for e in alerts if e["kind"] == "cleared")
        echo(f"The alert was raised at {raised['t_s']:.1f} s and cleared at {cleared['t_s']:.1f} s of the scene.")
    echo(f"Summary chart: {chart}")
    echo(f"Replay: edge run --config {config_path}")
    return DemoResult(out=out, summary=summary, alerts=alerts, chart=chart, config=config_path)
