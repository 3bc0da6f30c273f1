"""A new detector or sink is one file: a dummy plugin defined here (as its own module would
define it) and registered is accepted by the config, offered by the CLI, checked by the
doctor and, for a detector, packed by the bundle, with no other file edited."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.config import ConfigError, load_config
from edge.errors import check
from edge.ops.doctor import DoctorSettings, diagnose
from edge.pipeline.detectors import DETECTORS, Detection, DetectorConfig, FaceDetector, create_detector, register
from edge.pipeline.geometry import BBox
from edge.sinks import SINKS, AlertEvent, Sink, build_sinks


@dataclass
class DummyDetectorConfig(DetectorConfig):
    kind: str = "dummy"
    boxes: int = 1

    def validate(self, p):
        super().validate(p)
        check(self.boxes >= 0, f"{p}.boxes", self.boxes, "an integer >= 0")


class DummyDetector(FaceDetector):
    Config = DummyDetectorConfig

    def detect(self, frame):
        return [Detection(BBox(0, 0, 10, 10), 0.9)] * self.cfg.boxes

    def doctor(self, width, height):
        return "OK", f"dummy detector with {self.cfg.boxes} boxes"

    @classmethod
    def bundle_files(cls, cfg):
        return {"dummy.bin": Path(cfg.model)}


@dataclass
class DummySinkConfig:
    path: str = ""

    def validate(self, p):
        check(bool(self.path), f"{p}.path", self.path, "a file path")


class DummySink(Sink):
    key = "dummy"
    Config = DummySinkConfig

    def __init__(self, path: str):
        self.path = Path(path)

    def send(self, event: AlertEvent) -> None:
        self.path.write_text(json.dumps(event.to_dict()))

    def check(self) -> str:
        return f"dummy sink writes {self.path.name}"


@pytest.fixture
def dummy_detector():
    register(DummyDetector)
    yield DummyDetector
    DETECTORS.pop("dummy")


@pytest.fixture
def dummy_sink():
    SINKS.register(DummySink)
    yield DummySink
    SINKS.pop("dummy")


def quiet_source(tmp_path: Path) -> str:
    """A source path that exists, so the doctor skips the camera probe."""
    (tmp_path / "frames").mkdir(exist_ok=True)
    return f"[source]\npath = '{tmp_path / 'frames'}'\n"


def checks_of(tmp_path: Path, toml: str) -> dict[str, dict]:
    path = tmp_path / "config.toml"
    path.write_text(quiet_source(tmp_path) + toml)
    return {c.name: c for c in diagnose(DoctorSettings(config=str(path), camera_timeout_s=5))}


def test_a_plugin_that_fails_at_import_is_left_out_not_fatal(tmp_path, monkeypatch, caplog):
    """Only a missing dependency was caught: any other error in a dropped-in plugin file stopped
    every command."""
    import sys

    from edge.plugins import Registry

    pkg = tmp_path / "someplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "broken.py").write_text("raise OSError('no such device')\n")
    (pkg / "fine.py").write_text("from edge.plugins import Registry\nLOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import someplugins

    with caplog.at_level("ERROR", logger="edge.plugins"):
        Registry("test plugin").load("someplugins", someplugins.__path__)
    assert "someplugins.fine" in sys.modules
    assert "test plugin 'broken' failed to load and is left out: OSError: no such device" in caplog.text
    for name in ("someplugins", "someplugins.fine", "someplugins.broken"):
        sys.modules.pop(name, None)


def test_a_new_detector_needs_no_other_file(tmp_path, dummy_detector):
    from edge.ops.bundle import DETECTOR_DIR, _detector_files

    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"w")
    cfg = load_config(None, {"detector.kind": "dummy", "detector.boxes": 2, "detector.model": str(weights)})
    assert isinstance(cfg.detector, DummyDetectorConfig) and cfg.detector.boxes == 2
    assert len(create_detector(cfg.detector).detect(None)) == 2
    with pytest.raises(ConfigError, match=r"detector\.boxes.*-1"):
        load_config(None, {"detector.kind": "dummy", "detector.boxes": -1})
    with pytest.raises(ConfigError, match=r"detector\.variant"):  # blazeface's key is not the dummy's
        load_config(None, {"detector.kind": "dummy", "detector.variant": "short_range"})

    runner = CliRunner()
    assert "dummy" in runner.invoke(cli, ["run", "--help"]).output
    out = runner.invoke(cli, ["run", "--detector", "dummy", "--print-config"])
    assert out.exit_code == 0 and 'kind = "dummy"' in out.output and "boxes = 1" in out.output

    checks = checks_of(tmp_path, "[detector]\nkind = 'dummy'\nboxes = 3\n")
    assert checks["detector"].status == "OK" and checks["detector"].detail == "dummy detector with 3 boxes"

    assert _detector_files(cfg) == {"dummy.bin": weights}
    assert cfg.detector.model == f"{DETECTOR_DIR}/dummy.bin"


def test_an_unregistered_detector_is_refused_everywhere(tmp_path):
    assert "dummy" not in DETECTORS
    with pytest.raises(ConfigError, match=r"detector\.kind.*'dummy'.*blazeface"):
        load_config(None, {"detector.kind": "dummy"})
    out = CliRunner().invoke(cli, ["run", "--detector", "dummy", "--print-config"])
    assert out.exit_code == 2 and "dummy" in out.output


def test_a_new_sink_needs_no_other_file(tmp_path, dummy_sink):
    target = tmp_path / "event.json"
    cfg = load_config(None, {"sinks.dummy.path": str(target), "sinks.spool_dir": str(tmp_path / "spool")})
    assert cfg.sinks.dummy == DummySinkConfig(path=str(target))
    with pytest.raises(ConfigError, match=r"sinks\.dummy\.path"):
        load_config(None, {"sinks.dummy.path": ""})
    with pytest.raises(ConfigError, match=r"Unknown config key 'sinks\.dummy\.url'"):
        load_config(None, {"sinks.dummy.url": "http://x"})

    fan = build_sinks(cfg.sinks, "pi-1")
    assert [s.key for s in fan.sinks] == ["log", "dummy"]
    fan.send(AlertEvent("raised", 1.0, "2026-01-01T00:00:00+00:00", 0.5, 2))
    fan.close()  # sinks deliver from their own threads; close waits for them
    assert json.loads(target.read_text())["device"] == "pi-1"

    checks = checks_of(tmp_path, f"[sinks.dummy]\npath = '{target}'\n")
    assert checks["sink dummy"].status == "OK" and checks["sink dummy"].detail == "dummy sink writes event.json"


def test_an_unregistered_sink_section_is_an_unknown_key():
    assert "dummy" not in SINKS
    with pytest.raises(ConfigError, match=r"Unknown config key 'sinks\.dummy'.*jsonl"):
        load_config(None, {"sinks.dummy.path": "x"})


def test_stage_commands_come_from_entry_points_and_a_missing_package_is_one_sentence(monkeypatch):
    from importlib.metadata import EntryPoint

    import edge.cli

    @click.command("fake")
    def fake():
        import no_such_build_package  # noqa: F401

    monkeypatch.setitem(globals(), "fake_command", fake)
    eps = [EntryPoint("fake", f"{__name__}:fake_command", edge.cli.STAGE_COMMANDS),
           EntryPoint("gone", "no_such_stage.cli:cmd", edge.cli.STAGE_COMMANDS)]
    monkeypatch.setattr(edge.cli, "entry_points", lambda group: eps if group == edge.cli.STAGE_COMMANDS else [])
    runner = CliRunner()
    assert {"fake", "gone", "run"} <= set(runner.invoke(cli, ["--help"]).output.split())
    for name, missing in (("fake", "no_such_build_package"), ("gone", "no_such_stage")):
        out = runner.invoke(cli, [name])
        assert out.exit_code == 2, out.output
        assert f"needs the build-machine packages ({missing} is missing)" in out.output
        assert "pip install 'queue-mood[train]'" in out.output and "Traceback" not in out.output


def test_readme_plugin_tables_are_generated_from_the_registries():
    import os

    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    start, end = "<!-- plugins:start -->\n", "<!-- plugins:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    block = "\n".join([*DETECTORS.reference("[detector]"), "", *SINKS.reference("[sinks.<key>]")]) + "\n"
    if os.environ.get("QM_WRITE_DOCS"):
        readme.write_text(head + start + block + end + tail)
        text = readme.read_text()
    assert text == head + start + block + end + tail, "README's plugin tables are stale: QM_WRITE_DOCS=1 pytest -k readme"
