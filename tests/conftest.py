"""Shared test data: small synthetic datasets made here, and real FER2013 faces read from
../shared/datasets when it exists (skipped with a reason otherwise)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edge.labels import LABELS
import train  # noqa: F401,E402  (sets TF's environment before any test imports TensorFlow)
from tests.live_edge import edge_runs, long_video  # noqa: F401,E402  (one video for the browser and fleet tests)

REPO = Path(__file__).resolve().parents[1]
FER_TAR = REPO.parent / "shared" / "datasets" / "fer2013.tar.gz"


def pattern_image(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A learnable synthetic 'face': a bright square at a class-specific place, plus noise."""
    img = rng.normal(90, 20, (size, size))
    cy, cx = divmod(label, 3)
    s = size // 4
    y0, x0 = 4 + cy * (size // 3), 4 + cx * (size // 3)
    img[y0 : y0 + s, x0 : x0 + s] += 120
    return np.clip(img, 0, 255).astype(np.uint8)


def write_class_folders(root: Path, per_class: int, seed: int = 0, names=LABELS, suffix=".png", size=48):
    import cv2

    rng = np.random.default_rng(seed)
    for label, name in enumerate(names):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = pattern_image(label, rng, size)
            cv2.imwrite(str(d / f"{i:04d}{suffix}"), img)
    return root


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A session fixture's folder, made by build(folder) in the first pytest-xdist worker that asks
    and used as it is by the others (the tiny model takes a minute to train): the tests treat it
    as read-only, as they must within one worker anyway."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the parent: this run's, all workers'
    out = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").exists():
            shutil.rmtree(out, ignore_errors=True)  # a worker that failed while making it
            out.mkdir()
            build(out)
            (root / f"{name}.done").touch()
    return out


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """train/ and val/ split folders of learnable synthetic images."""
    def build(root):
        write_class_folders(root / "train", 40, seed=1)
        write_class_folders(root / "val", 12, seed=2)

    return built_once(tmp_path_factory, "synthetic", build)


@pytest.fixture(scope="session")
def cache_env(tmp_path_factory):
    """Keep dataset caches out of the user's home during tests."""
    d = tmp_path_factory.mktemp("cache")
    old = os.environ.get("QUEUE_MOOD_CACHE")
    os.environ["QUEUE_MOOD_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("QUEUE_MOOD_CACHE", None)
    else:
        os.environ["QUEUE_MOOD_CACHE"] = old


@pytest.fixture(scope="session")
def fer_faces(tmp_path_factory) -> Path:
    """A few real FER2013 val faces per class, extracted from ../shared/datasets."""
    if not FER_TAR.exists():
        pytest.skip(f"FER2013 not found at {FER_TAR}; real-face tests need ../shared/datasets")
    root = tmp_path_factory.mktemp("fer")
    want = {c: 30 for c in LABELS}
    with tarfile.open(FER_TAR) as tar:
        for m in tar:
            parts = Path(m.name).parts
            if m.isfile() and len(parts) >= 4 and parts[-3] == "val" and want.get(parts[-2], 0) > 0:
                want[parts[-2]] -= 1
                m.name = "/".join(parts[-2:])
                tar.extract(m, root)
            if not any(want.values()):
                break
    return root


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """The shipped default int8 model (its card beside it), for tests that need a model but not
    one made in this session: training and converting tiny_run takes most of a minute."""
    from edge.models import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synthetic_dataset, cache_env) -> Path:
    """A small model trained for real on the synthetic data (shared by convert/edge tests)."""
    pytest.importorskip("tensorflow", reason="training tests need the train extra")
    from train.trainer import TrainSettings, run

    def build(folder):
        run(TrainSettings(data=str(synthetic_dataset), out=str(folder / "tiny"), arch="mini_xception", epochs=8,
                          batch_size=16, lr=5e-3, warmup_epochs=0, augment=False, patience=50,
                          arch_options={"bn_momentum": 0.8}))

    return built_once(tmp_path_factory, "run", build) / "tiny"


@pytest.fixture(scope="session")
def tiny_converted(tmp_path_factory, tiny_run, synthetic_dataset) -> Path:
    from convert.quantize import ConvertSettings, run

    def build(out):
        run(ConvertSettings(model=str(tiny_run), data=str(synthetic_dataset), out=str(out), calibration_size=100,
                            max_drop_pp=100, min_agreement=0))

    return built_once(tmp_path_factory, "converted", build)


def run_cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """The installed `edge` command as a user runs it."""
    return subprocess.run([sys.executable, "-m", "edge.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
