"""Distillation (`edge train --teacher`): teachers' probabilities mixed into the training targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.errors import UserError
from tests.conftest import run_cli


def test_mix_keeps_distributions_and_weighs_the_teacher():
    from train.teacher import mix

    labels = np.eye(7, dtype=np.float32)[[0, 3]]
    teacher = np.array([[0.0, 0, 0, 0, 2.0, 0, 0], [0.5, 0, 0, 0.5, 0, 0, 0]], np.float32)  # unnormalised row 1
    out = mix(labels, teacher, 0.25)
    assert np.allclose(out.sum(axis=1), 1.0)
    assert out[0, 0] == pytest.approx(0.75) and out[0, 4] == pytest.approx(0.25)
    assert out[1, 3] == pytest.approx(0.75 + 0.125) and out[1, 0] == pytest.approx(0.125)
    assert np.allclose(mix(labels, teacher, 0.0), labels)
    with pytest.raises(UserError, match="--teacher-weight"):
        mix(labels, teacher, 1.5)


def test_a_teacher_that_is_not_a_model_is_one_sentence(tmp_path, synthetic_dataset):
    (tmp_path / "notes.txt").write_text("x")
    for bad, why in ((tmp_path / "missing.tflite", " does not exist; pass a trained model"),
                     (tmp_path / "notes.txt", ": not a .tflite or .keras file")):
        r = run_cli("train", "--data", synthetic_dataset, "--out", tmp_path / "run", "--teacher", bad)
        assert r.returncode == 2 and r.stderr.startswith(f"error: --teacher {bad}{why}"), r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow  # trains a model with a teacher (20 s on 2 cores); CI runs it
def test_training_with_a_teacher_records_it_and_learns(tiny_converted, tiny_run, synthetic_dataset, tmp_path, cache_env):
    """Two teachers (the int8 file and the Keras model it came from) averaged, half of each target."""
    pytest.importorskip("tensorflow", reason="training tests need the train extra")
    from train.teacher import predict
    from train.trainer import TrainSettings, run

    teachers = f"{tiny_converted / 'model_int8.tflite'},{tiny_run / 'model.keras'}"
    out = tmp_path / "student"
    m = run(TrainSettings(data=str(synthetic_dataset), out=str(out), arch="mini_xception", epochs=2, batch_size=16,
                          lr=5e-3, warmup_epochs=0, augment=False, teacher=teachers, teacher_weight=0.5,
                          arch_options={"bn_momentum": 0.8}))
    info = json.loads((out / "data.json").read_text())["labels"]["teacher"]
    assert info["models"] == teachers.split(",") and info["weight"] == 0.5
    assert 0.5 < info["agreement_with_labels"] <= 1.0  # the tiny teacher learned the synthetic classes
    assert json.loads((out / "train_settings.json").read_text())["teacher"] == teachers
    assert np.isfinite(m["loss"]) and 0 <= m["accuracy"] <= 1
    x = np.random.default_rng(0).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    p = predict(tiny_converted / "model_int8.tflite", x)
    assert p.shape == (3, 7) and np.allclose(p.sum(axis=1), 1.0, atol=1e-3)


def _npz_teacher(path, x, seed):
    """A teacher_probs.npz (as train.torch_teacher combine writes it) for the images x."""
    from edge.labels import LABELS
    from train.teacher_pack import pixel_keys

    p = np.random.default_rng(seed).dirichlet(np.ones(len(LABELS)), len(x)).astype(np.float32)
    np.savez(path, keys=pixel_keys(x), ferplus=p, fer2013=p, labels=np.array(LABELS))


def test_resume_refuses_a_teacher_changed_since_the_run_started(tmp_path, synthetic_dataset, cache_env):
    """The teachers' probabilities are computed again on resume: a teacher file overwritten in
    between (a teacher run trained on) would give the remaining epochs other targets, silently."""
    pytest.importorskip("tensorflow", reason="training tests need the train extra")
    from edge.card import sha256_file
    from train.data import load_dataset, train_val
    from train.trainer import TrainSettings, run
    from tests.test_train import _stub_run

    ds = load_dataset(synthetic_dataset, progress=False)
    teacher = tmp_path / "teacher_probs.npz"
    _npz_teacher(teacher, train_val(ds)[0].x, seed=0)
    out = _stub_run(tmp_path / "run", synthetic_dataset, teacher=str(teacher))
    (out / "data.json").write_text(json.dumps({"fingerprint": ds.fingerprint, "labels": {
        "kind": "folder", "teacher": {"models": [str(teacher)], "sha256": [sha256_file(teacher)]}}}))
    _npz_teacher(teacher, train_val(ds)[0].x, seed=1)  # the teacher made again meanwhile
    with pytest.raises(UserError, match=f"--teacher {teacher} is not the file {out} started with"):
        run(TrainSettings(data=str(synthetic_dataset), out=str(out)), resume=True)
    assert not (out / "history.csv").exists()  # refused before any training


def test_the_label_files_check_passes_the_same_bytes_and_old_records(tmp_path):
    from train.resume import check_label_files

    info = {"kind": "ferplus", "votes": "/v.csv", "votes_sha256": "aa",
            "teacher": {"models": ["/t.npz"], "sha256": ["bb"]}}
    (tmp_path / "data.json").write_text(json.dumps({"labels": info}))
    check_label_files(tmp_path, info)  # the same files
    with pytest.raises(UserError, match="--votes /v.csv is not the file"):
        check_label_files(tmp_path, {**info, "votes_sha256": "cc"})
    (tmp_path / "data.json").write_text(json.dumps({"labels": {"kind": "ferplus", "votes": "/v.csv"}}))
    check_label_files(tmp_path, info)  # recorded before the hashes were kept: not checked


def test_the_label_files_check_sees_a_tflite_teachers_card_changed(tmp_path):
    """A .tflite teacher's card holds its temperature, which is in the probabilities it gives."""
    from train.resume import check_label_files

    info = {"kind": "folder", "teacher": {"models": ["/t/model_int8.tflite"], "sha256": ["bb"], "card_sha256": ["dd"]}}
    (tmp_path / "data.json").write_text(json.dumps({"labels": info}))
    check_label_files(tmp_path, info)
    changed = {**info, "teacher": {**info["teacher"], "card_sha256": ["ee"]}}
    with pytest.raises(UserError, match="--teacher /t/model_int8.tflite's model.json is not the file"):
        check_label_files(tmp_path, changed)


def test_distill_records_a_tflite_teachers_card(tmp_path, shipped_model):
    import shutil

    from edge.card import sha256_file
    from train.teacher import distill

    teacher = tmp_path / "model_int8.tflite"
    shutil.copy(shipped_model, teacher)
    shutil.copy(shipped_model.with_name("model.json"), tmp_path)
    x = np.full((2, 48, 48), 128, np.uint8)
    _, info = distill(str(teacher), 0.5, x, np.eye(7, dtype=np.float32)[:2])
    assert info["card_sha256"] == [sha256_file(tmp_path / "model.json")]