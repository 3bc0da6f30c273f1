"""A new user's first hour: `edge demo`, the console of `edge run`, the generated config
reference and example, and the small things around them."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from edge import configdoc
from edge.config import Config, load_config, to_dict, to_toml
from edge.labels import LABELS
from edge.pipeline.core import FrameResult
from edge.pipeline.geometry import BBox
from edge.pipeline.mood import Mood
from edge.pipeline.tracking import Track
from tests.conftest import run_cli, write_class_folders

REPO = Path(__file__).resolve().parents[1]


# -- config reference and example ----------------------------------------------------------


def test_committed_config_reference_and_example_match_the_generator():
    assert (REPO / "docs" / "config.md").read_text() == configdoc.markdown(), \
        f"docs/config.md is stale: run {configdoc.DOCS_CMD}"
    assert (REPO / "deploy" / "config.example.toml").read_text() == configdoc.example_toml(), \
        f"deploy/config.example.toml is stale: run {configdoc.EXAMPLE_CMD}"


def test_every_key_of_every_section_is_documented_with_help():
    secs = {s.path: s for s in configdoc.sections() if not s.variant}
    doc = configdoc.markdown()

    def walk(obj, path):  # every leaf key of a default Config, independently of the generator
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            table = next((a for a in typing.get_args(hints[f.name]) if dataclasses.is_dataclass(a)), None)
            if dataclasses.is_dataclass(value) or (value is None and table is not None):
                yield from walk(value if value is not None else table(), f"{path}.{f.name}" if path else f.name)
            else:
                yield path, f.name

    keys = list(walk(Config(), ""))
    assert len(keys) == sum(len(s.keys) for s in configdoc.sections() if not s.variant)
    for path, name in keys:
        key = next(k for k in secs[path].keys if k.name == name)
        assert key.help, f"{path}.{name} has no help text (add a comment on its field)"
        assert f"| `{name}` |" in doc.split(f"`[{path}]`" if path else "Top level", 1)[1]
    assert {"sinks.jsonl", "sinks.webhook", "sinks.mqtt", "sinks.gpio", "sinks.command"} <= \
        {p for p, s in secs.items() if s.optional}


def test_example_loads_as_the_defaults_and_with_every_sink_turned_on(tmp_path):
    text = configdoc.example_toml()
    plain, full = tmp_path / "plain.toml", tmp_path / "full.toml"
    plain.write_text(text)
    full.write_text(configdoc.uncomment(text))
    assert to_dict(load_config(plain)) == to_dict(Config())
    cfg = load_config(full)
    for key in ("jsonl", "webhook", "mqtt", "gpio", "command"):
        assert getattr(cfg.sinks, key) is not None, key
    assert cfg.sinks.webhook.url.startswith("https://") and cfg.sinks.command.argv
    assert cfg.source.camera == 0


def test_required_keys_are_found_by_validation_and_marked():
    secs = {s.path: s for s in configdoc.sections() if not s.variant}
    required = {(p, k.name) for p, s in secs.items() for k in s.keys if k.required}
    assert required == {("sinks.webhook", "url"), ("sinks.mqtt", "host"), ("sinks.command", "argv")}


@dataclass
class Plugin:
    """A plugin's section."""

    # comment above
    # continued
    url: str = ""  # and trailing, e.g. `"http://x"`
    level: int = field(default=3, metadata={"help": "from metadata"})


@dataclass
class Root:
    name: str = "a"  # the name
    plugin: Plugin | None = None
    inner: Plugin = field(default_factory=Plugin)


def test_the_generator_walks_any_dataclass_tree():
    """Sections from nested and optional dataclasses, help from metadata, a comment above or a
    trailing comment, an example from "e.g.", whatever module the classes live in."""
    secs = configdoc.sections(Root)
    assert [(s.path, s.optional) for s in secs] == [("", False), ("inner", False), ("plugin", True)]
    url, level = secs[2].keys
    assert url.help == "comment above continued and trailing" and url.example == "http://x"
    assert level.help == "from metadata" and level.default == 3 and level.type == "integer"
    assert secs[2].doc == "A plugin's section." and secs[0].keys[0].help == "the name"


@pytest.mark.slow
def test_print_config_example_and_edge_config(tmp_path):
    r = run_cli("run", "--print-config", "--example")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (REPO / "deploy" / "config.example.toml").read_text()
    r = run_cli("config", "--docs")
    assert r.returncode == 0 and r.stdout == configdoc.markdown()
    (tmp_path / "mine.toml").write_text("[alert]\nraise_share = 0.5\n")  # read by neither: said, not ignored
    r = run_cli("config", "--docs", "--config", tmp_path / "mine.toml")
    assert r.returncode == 2 and r.stderr.startswith("error: --docs prints the defaults of every key and reads no --config")
    r = run_cli("run", "--example")
    assert r.returncode == 2 and r.stderr.startswith("error: --example goes with --print-config")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[sinks.jsonl]\n")
    r = run_cli("run", "--config", cfg, "--print-config")  # the effective config, unused sinks as examples
    assert r.returncode == 0 and "[sinks.jsonl]" in r.stdout and "# [sinks.jsonl]" not in r.stdout
    assert "# [sinks.webhook]" in r.stdout and "# [sinks.command]" in r.stdout
    cfg.write_text(configdoc.uncomment(r.stdout))
    assert load_config(cfg).sinks.webhook.url



def test_relative_paths_in_a_config_file_are_taken_from_its_folder(tmp_path, monkeypatch):
    """systemd runs the service in /var/lib/queue-mood; a shell wherever the user is. Either way
    `path = "queue.mp4"` in /etc/queue-mood/config.toml means /etc/queue-mood/queue.mp4."""
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "config.toml").write_text(f"""
[source]
path = "videos/queue.mp4"
[model]
path = "models/model_int8.tflite"
[detector]
model = "det.tflite"
[sinks]
spool_dir = "~/spool"
[sinks.jsonl]
path = "{tmp_path / 'abs.jsonl'}"
[status]
history_db = "state/history.db"
""")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load_config(conf / "config.toml")
    assert cfg.source.path == str(conf / "videos/queue.mp4") and cfg.model.path == str(conf / "models/model_int8.tflite")
    assert cfg.detector.model == str(conf / "det.tflite") and cfg.status.history_db == str(conf / "state/history.db")
    assert cfg.sinks.spool_dir == "~/spool" and cfg.sinks.jsonl.path == str(tmp_path / "abs.jsonl")  # unchanged

    monkeypatch.chdir(tmp_path)  # a relative --config: the same files
    assert load_config("etc/config.toml").source.path == str(conf / "videos/queue.mp4")
    # Command-line values are relative to where the command runs; URLs are not paths.
    cfg = load_config(conf / "config.toml", {"model.path": "m.tflite", "source.path": "rtsp://cam/1"})
    assert cfg.model.path == "m.tflite" and cfg.source.path == "rtsp://cam/1"
    r = run_cli("run", "--config", "etc/config.toml", "--print-config")  # in tmp_path
    assert r.returncode == 0 and f'path = "{conf / "videos/queue.mp4"}"' in r.stdout

# -- the console ---------------------------------------------------------------------------


def result(t_s=3.0, tops=("angry", "angry", "happy"), state="clear", transition=None) -> FrameResult:
    tracks = []
    for i, name in enumerate(tops):
        p = np.full(len(LABELS), 0.02)
        p[LABELS.index(name)] = 0.88
        tracks.append(Track(i + 1, BBox(10.0 * i, 0.0, 8.0, 8.0), p, 0.0, t_s, hits=5))
    counts = {n: sum(t == n for t in tops) for n in LABELS}
    negative = sum(t in ("angry", "sad", "fear", "disgust") for t in tops)
    return FrameResult(int(t_s * 15), t_s, len(tops), tracks, Mood(t_s, len(tops), negative, counts), transition,
                       state, {"detect": 0.0123456, "classify": 0.004, "track": 0.0001})


def test_status_text_is_compact_and_rounded():
    from edge.service.console import status_text

    assert status_text(result()) == "faces 3 | angry 2 happy 1 | negative 67% | alert clear"
    assert status_text(result(state="raised")).endswith("alert RAISED")
    assert status_text(result(tops=())) == "faces 0 | - | negative 0% | alert clear"


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_status_line_redraws_in_place_once_per_interval_and_logs_go_above_it():
    from edge.service.console import Console

    out, clock = io.StringIO(), FakeClock()
    console = Console(status_line=True, stream=out, interval_s=1.0, clock=clock)
    try:
        for _ in range(30):  # 3 s at 10 fps
            console.on_result(None, result())
            clock.t += 0.1
        lines = out.getvalue().split("\r\x1b[K")
        drawn = [part for part in lines if part.startswith("faces")]
        assert len(drawn) == 3 and drawn[-1].endswith("| 10.0 fps")
        logging.getLogger("edge.alerts").warning("alert raised: test")
        text = out.getvalue()
        # cleared, the record printed, then the status line drawn again
        assert "\r\x1b[K" + drawn[-1].split("\r")[0] in text.split("alert raised: test")[1]
        console.close()
        assert out.getvalue().endswith("\n")
    finally:
        _reset_logging()


def test_status_line_left_on_screen_is_the_last_frames_even_within_the_interval():
    from edge.service.console import Console

    out, clock = io.StringIO(), FakeClock()
    console = Console(status_line=True, stream=out, interval_s=1.0, clock=clock)
    try:
        console.on_result(None, result(tops=()))  # a recording's first frame: nobody in view yet
        for _ in range(5):  # faces found, all read within the interval (a short clip, a fast machine)
            clock.t += 0.1
            console.on_result(None, result())
        console.close()
        last = out.getvalue().split("\r\x1b[K")[-1]
        assert last == "faces 3 | angry 2 happy 1 | negative 67% | alert clear | 10.0 fps\n"
    finally:
        _reset_logging()


def test_no_status_line_when_not_a_terminal_and_quiet_keeps_alerts(monkeypatch):
    from edge.service.console import Console

    out = io.StringIO()  # not a TTY: a pipe, or the journal
    console = Console(quiet=True, stream=out)
    try:
        assert console.status is None
        console.on_result(None, result())
        logging.getLogger("edge").info("model loaded")
        logging.getLogger("edge.alerts").info("alert cleared: test")
        logging.getLogger("edge").warning("camera lost")
        assert out.getvalue().count("\n") == 2 and "model loaded" not in out.getvalue()
        assert "alert cleared: test" in out.getvalue() and "camera lost" in out.getvalue()
    finally:
        _reset_logging()


def test_picamera2s_lines_at_each_camera_open_stay_out_of_the_journal_unless_vv():
    """picamera2 logs six INFO lines at each open and close of a Pi camera: a flapping camera's
    reopens made a dozen journal lines a minute past the outage log's one. Its warnings still come."""
    from edge.service.console import Console

    cam = logging.getLogger("picamera2.picamera2")  # the logger picamera2 logs to
    for verbose, shown in ((0, False), (1, False), (2, True)):
        out = io.StringIO()
        Console(verbose=verbose, stream=out)
        try:
            cam.info("Camera now open.")
            cam.warning("Camera did not start properly.")
            assert ("Camera now open." in out.getvalue()) == shown, (verbose, out.getvalue())
            assert "Camera did not start properly." in out.getvalue()
        finally:
            _reset_logging()


def test_verbose_adds_a_track_line_per_interval():
    from edge.service.console import Console

    out = io.StringIO()
    console = Console(verbose=1, stream=out)
    try:
        for i in range(20):  # 2 s of a recording at 10 fps, however fast it is processed
            console.on_result(None, result(t_s=i / 10))
        detail = [line for line in out.getvalue().splitlines() if "stage ms" in line]
        assert len(detail) == 2 and "#1 angry 0.88, #2 angry 0.88, #3 happy 0.88" in detail[0]
        assert "detect 12.3 classify 4.0 track 0.1" in detail[0]
    finally:
        _reset_logging()


def _reset_logging():
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for name in ("edge", "edge.alerts", "picamera2"):
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.fixture(scope="module")
def short_scene(tmp_path_factory) -> Path:
    from edge.ops.demo_scene import write_scene

    pytest.importorskip("skimage")
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    write_scene(path, seconds=2.0)
    return path


@pytest.mark.slow
def test_edge_run_quiet_verbose_and_rounded_json(short_scene):
    quiet = run_cli("run", "--source", short_scene, "--max-frames", "20", "-q", "--config", _no_status(short_scene))
    assert quiet.returncode == 0, quiet.stderr
    assert " INFO " not in quiet.stderr and " DEBUG " not in quiet.stderr
    verbose = run_cli("run", "--source", short_scene, "-v", "--json",
                      "--config", _no_status(short_scene))
    assert verbose.returncode == 0, verbose.stderr
    detail = [line for line in verbose.stderr.splitlines() if "stage ms" in line]
    assert len(detail) == 2 and "#1 " in detail[1] and "\x1b[K" not in verbose.stderr  # t=0 s and t=1 s
    summary = json.loads(verbose.stdout)

    def floats(v):
        if isinstance(v, dict):
            return [x for y in v.values() for x in floats(y)]
        return [v] if isinstance(v, float) else []

    assert floats(summary) and all(round(x, 2) == x for x in floats(summary))
    both = run_cli("run", "--source", short_scene, "-v", "-q")
    assert both.returncode == 2 and "contradict" in both.stderr


def _no_status(scene: Path) -> Path:
    p = scene.with_name("nostatus.toml")
    p.write_text("[status]\nenabled = false\n")
    return p


# -- the demo --------------------------------------------------------------------------------


@pytest.mark.slow
def test_edge_demo_raises_and_clears_an_alert_with_the_default_policy(tmp_path):
    pytest.importorskip("skimage")
    from edge.ops import demo_scene

    out = tmp_path / "demo"
    r = run_cli("demo", "--fast", "--out", out, env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    seconds = [line for line in r.stdout.splitlines() if line.strip().split("s ", 1)[0].replace(".", "").isdigit()]
    assert len([s for s in seconds if "| alert " in s]) == demo_scene.SECONDS  # one line per second of the scene
    assert ">>> ALERT RAISED" in r.stdout and ">>> ALERT CLEARED" in r.stdout
    assert "alert raised" in r.stderr and "alert cleared" in r.stderr  # through the log sink
    events = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["raised", "cleared"]
    assert events[0]["t_s"] < events[1]["t_s"] < demo_scene.SECONDS and events[0]["faces"] >= 2
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out / "summary.png") in r.stdout
    cfg = load_config(out / "demo.toml")  # the demo's config: the product's alert policy, unchanged
    assert cfg.alert == Config().alert and cfg.mood == Config().mood and cfg.tracking == Config().tracking
    assert not list(REPO.glob("*.mp4"))


@pytest.mark.slow
def test_edge_demo_stopped_by_ctrl_c_says_so_not_that_the_alert_failed(tmp_path):
    import signal
    import subprocess
    import sys

    pytest.importorskip("skimage")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "demo", "--out", str(tmp_path / "demo")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:  # at its own pace: Ctrl-C in the scene's second second, before any alert
            if line.strip().startswith("1.0s"):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: edge demo was stopped at ") and "run it again" in last, err
    assert "not both raised and cleared" not in err and "Traceback" not in err


def test_ctrl_c_in_any_command_is_status_130_and_one_line_not_clicks_aborted(monkeypatch):
    from click.testing import CliRunner

    from edge import configdoc
    from edge.cli import cli

    def interrupted(cfg, show_secrets=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(configdoc, "effective_toml", interrupted)
    r = CliRunner().invoke(cli, ["config"])
    assert r.exit_code == 130 and r.output.strip() == "Interrupted.", r.output


def test_ctrl_c_while_the_command_line_loads_is_one_line_too():
    """The `edge` script's first second on a Pi is importing edge.cli; a Ctrl-C there was
    Python's KeyboardInterrupt traceback."""
    script = ("import sys\n"
              "class Interrupt:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'edge.cli': raise KeyboardInterrupt\n"
              "sys.meta_path.insert(0, Interrupt())\n"
              "from edge.__main__ import main\n"
              "main()\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 130 and r.stderr.strip() == "Interrupted.", r.stderr
    entry = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]["edge"]
    assert entry == "edge.__main__:main"  # the script installed as `edge` is the guarded one


def test_ctrl_c_during_opencvs_import_is_not_lost(tmp_path):
    """OpenCV's native init runs Python's signal handler and drops the KeyboardInterrupt it raises:
    a Ctrl-C in that half second of `edge run`'s start was lost, and the monitor went on watching."""
    (tmp_path / "cv2.py").write_text(
        "import os, signal, time\n"
        "try:  # as OpenCV's native init does: the handler runs, its error is dropped\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.5)\n"
        "except KeyboardInterrupt:\n"
        "    pass\n")
    script = ("import signal, sys\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              f"sys.path.insert(0, {str(tmp_path)!r})\n"
              "from edge.errors import import_cv2\n"
              "try:\n"
              "    import_cv2()\n"
              "except KeyboardInterrupt:\n"
              "    print('interrupted', signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
              "else:\n"
              "    print('lost')\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert r.stdout.strip() == "interrupted True", r.stdout + r.stderr


def test_edge_demo_runs_another_model_and_names_a_wrong_one_before_making_the_scene(tmp_path, shipped_model):
    from edge.ops import demo

    cfg = demo.demo_config(tmp_path, tmp_path / "scene.mp4", model=str(shipped_model.parent))
    assert cfg.model.path == str(shipped_model.parent)
    r = run_cli("demo", "--model", tmp_path / "none.tflite", "--out", tmp_path / "demo", "--fast")
    assert r.returncode == 2 and r.stderr.strip() == \
        f"error: Model file {tmp_path / 'none.tflite'} does not exist; pass a .tflite model made by `edge convert`."
    assert "Making a" not in r.stdout and not (tmp_path / "demo" / "scene.mp4").exists()

def test_demo_scene_ground_truth_and_default_folder(monkeypatch, tmp_path):
    from edge.ops import demo, demo_scene

    assert [demo_scene.negative_people(t) for t in (0, 4.7, 10, 17.7, 20)] == [0, 2, 3, 1, 0]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert demo.default_out() == tmp_path / "queue-mood" / "demo"
    cfg = demo.demo_config(tmp_path, tmp_path / "scene.mp4")
    assert cfg.sinks.jsonl.path == str(tmp_path / "alerts.jsonl") and cfg.status.port == 0
    assert cfg.source.realtime and not demo.demo_config(tmp_path, tmp_path / "scene.mp4", realtime=False).source.realtime
    # `edge demo --out demo1`: the demo.toml it writes replays with `edge run --config demo1/demo.toml`
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo1").mkdir()
    (tmp_path / "demo1" / "demo.toml").write_text(to_toml(to_dict(demo.demo_config(Path("demo1"),
                                                                                     Path("demo1/scene.mp4")))))
    replay = load_config("demo1/demo.toml")
    assert replay.source.path == str(tmp_path / "demo1" / "scene.mp4")
    assert replay.sinks.spool_dir == str(tmp_path / "demo1" / "spool")
    assert replay.source.realtime  # the replay comes at the scene's pace, as the demo did


# -- smaller items ----------------------------------------------------------------------------


def test_card_accuracy_is_the_int8_figure_as_the_pi_runs_it():
    from edge.card import load_card
    from edge.models import default_model_path

    card = load_card(default_model_path())
    acc, what = card.edge_accuracy()
    cal = card.metrics["calibration"]
    assert acc == (cal["accuracy_int8_flip_average"] if card.flip_average else cal["accuracy_int8"])
    assert what.startswith("int8 as the Pi runs it")
    if cal.get("judged_by") == "FER+ majority":  # the figure says what it was scored against, and on how many images
        assert "against the FER+ majority" in what and f"{cal['images']:,}" not in what
        judged = dataclasses.replace(card, metrics={**card.metrics, "calibration": {**cal, "judged_images": 3428}})
        assert judged.edge_accuracy()[1] == "int8 as the Pi runs it, against the FER+ majority, 3,428 validation images"
    bare = dataclasses.replace(card, metrics={"accuracy": 0.5}, parity={})
    assert bare.edge_accuracy() == (0.5, "float model before int8, validation")
    assert dataclasses.replace(card, metrics={}, parity={}).edge_accuracy() is None


def test_eval_decodes_only_the_split_it_scores(tmp_path):
    from train.data import load_dataset

    root = tmp_path / "ds"
    write_class_folders(root / "train", 2, seed=1)
    write_class_folders(root / "val", 3, seed=2)
    (root / "train" / "happy" / "broken.png").write_bytes(b"not an image")
    ds = load_dataset(root, cache_dir=tmp_path / "cache", only_split=("val", "all"))
    assert list(ds.splits) == ["val"] and len(ds.splits["val"]) == 3 * len(LABELS) and not ds.skipped
    full = load_dataset(root, cache_dir=tmp_path / "cache")
    assert set(full.splits) == {"train", "val"} and full.skipped  # the broken train file was read this time
    with pytest.raises(Exception, match="has no 'test' split; it has: train, val"):
        load_dataset(root, cache_dir=tmp_path / "cache", only_split="test")


def test_eval_reads_one_split_of_a_fer2013_csv(tmp_path):
    from train.data import load_dataset

    rows = ["emotion,pixels,Usage"]
    for i, usage in enumerate(["Training", "Training", "PublicTest", "PrivateTest"]):
        rows.append(f"{i % 7},{' '.join(['128'] * 48 * 48)},{usage}")
    rows.append("3,bad pixels,Training")
    (tmp_path / "fer2013.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(tmp_path / "fer2013.csv", cache_dir=tmp_path / "cache", only_split=("val", "all"))
    assert list(ds.splits) == ["val"] and len(ds.splits["val"]) == 1 and not ds.skipped
    assert set(load_dataset(tmp_path / "fer2013.csv", cache_dir=tmp_path / "cache").splits) == {"train", "val", "test"}


def test_analyze_reads_tiff_images(tmp_path):
    import cv2

    from edge.pipeline.sources import IMAGE_SUFFIXES, open_source

    assert {".tif", ".tiff"} <= set(IMAGE_SUFFIXES)
    img = np.full((40, 60, 3), 90, np.uint8)
    cv2.imwrite(str(tmp_path / "a.tiff"), img)
    cv2.imwrite(str(tmp_path / "b.tif"), img)
    r = run_cli("analyze", tmp_path / "a.tiff", "--out", tmp_path / "out", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames_analysed"] == 1
    with open_source(None, str(tmp_path), 640, 480, 1.0) as src:
        assert [Path(f).name for f in src.files] == ["a.tiff", "b.tif"]


def test_pyproject_license_is_an_spdx_expression_and_the_models_are_package_data():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert data["project"]["license"] == "MIT"
    assert any(r.startswith("setuptools>=77") for r in data["build-system"]["requires"])
    assert "pipeline/detectors/models/*" in data["tool"]["setuptools"]["package-data"]["edge"]


def test_the_checkout_ignores_what_demos_and_runs_write():
    ignored = (REPO / ".gitignore").read_text().split()
    assert "*.mp4" in ignored and "*-analysis/" in ignored


def test_benchmarks_write_to_a_new_run_folder_unless_told(tmp_path, monkeypatch):
    import argparse

    from benchmarks import common, detector_recall

    monkeypatch.chdir(tmp_path)  # in the current directory: installed, the code's own folder is site-packages
    ap = argparse.ArgumentParser()
    common.add_common_args(ap)
    out = Path(ap.parse_args([]).out)
    assert out.parent == tmp_path / "runs" / "bench" and not out.is_relative_to(common.RESULTS)
    assert Path(ap.parse_args(["--out", str(common.RESULTS)]).out) == common.RESULTS
    assert "runs/bench" in subprocess_help(detector_recall)


def subprocess_help(module) -> str:
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        module.main(["--help"])
    return buf.getvalue()


def test_the_demo_scene_draws_from_where_the_detector_finds_the_astronauts_face():
    pytest.importorskip("skimage")
    from edge.ops.demo_scene import ASTRONAUT_BOX, ASTRONAUT_KEYPOINTS, astronaut_photo
    from edge.pipeline.detectors import create_detector
    from edge.pipeline.geometry import BBox

    finder = create_detector("blazeface", variant="full_range", tiles=[1, 1])
    det, kp = max(finder.detect_with_keypoints(astronaut_photo()), key=lambda f: f[0].score)
    assert det.box.iou(BBox(*ASTRONAUT_BOX)) > 0.95
    assert np.abs(kp - np.array(ASTRONAUT_KEYPOINTS)).max() < 1.5  # pixels


def test_the_demo_scene_reads_as_its_ground_truth_to_the_shipped_model():
    """The synthesised faces are what the demo claims: the shipped detector finds all four
    people and the shipped classifier reads as negative exactly those the scene made unhappy."""
    pytest.importorskip("skimage")
    from edge.ops import demo_scene
    from edge.ops.demo_scene import PEOPLE, Scene, negative_people
    from edge.pipeline.core import Pipeline
    from edge.pipeline.sources import Frame
    from edge.pipeline.core import load_parts
    from edge.config import ScheduleConfig

    cfg = Config()
    cfg.schedule = ScheduleConfig.every_frame()  # a still moment: every face detected and read in every frame
    classifier, detector = load_parts(cfg)
    scene = Scene()
    for t_s in (2.0, 10.0, 22.0):
        pipeline = Pipeline(cfg, classifier, detector)
        for i in range(6):  # a still moment: enough frames for the tracks to be confirmed and smoothed
            r = pipeline.process(Frame(scene.frame(t_s), t_s + i / demo_scene.FPS, i))
        # negative as the mood reads it: the probability of the negative classes, not the top one
        # of seven (an unhappy face's mass spreads over angry, sad and fear)
        neg = [classifier.labels.index(c) for c in cfg.mood.negative]
        p_neg = sorted(float(t.probs[neg].sum()) for t in r.tracks)
        assert r.detections == len(PEOPLE) and len(p_neg) == len(PEOPLE)
        unhappy = negative_people(t_s)
        calm = len(PEOPLE) - unhappy
        assert all(p < 0.2 for p in p_neg[:calm]) and all(p > 0.5 for p in p_neg[calm:]), (t_s, p_neg)
