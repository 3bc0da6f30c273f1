"""A teacher trained elsewhere (train/teacher_pack.py -> train/torch_teacher.py -> teacher_probs.npz):
the pack keeps every image's pixels, its probabilities find their images by pixel hash, and
the cross-fitted folds combine into one file `edge train --teacher` reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.errors import UserError
from edge.labels import LABELS
from tests.test_votes import voted  # noqa: F401  (fixture)
from train.teacher_pack import decoded, make_pack, pixel_keys


def test_the_pack_keeps_every_pixel_and_the_vote_targets(voted, tmp_path):  # noqa: F811
    from train.data import load_dataset

    (voted / "train" / "angry" / "0001.png").write_bytes(b"")  # an unreadable file: left out, as edge train does
    counts = make_pack(str(voted), None, tmp_path / "pack.npz")
    ds = load_dataset(voted)
    with np.load(tmp_path / "pack.npz") as d:
        x = decoded(d["train_bytes"], d["train_offsets"])
        assert list(d["labels"]) == list(LABELS)
        assert counts["train"] == len(x) == len(d["train_targets"]) == len(ds.splits["train"]) - 2  # 2 doubtful
        assert (pixel_keys(x) == d["train_keys"]).all()  # the images decode to the pixels the keys name
        assert np.allclose(d["train_targets"].astype(np.float32).sum(1), 1.0, atol=1e-3)
        val = decoded(d["val_bytes"], d["val_offsets"])
        assert np.array_equal(val, ds.splits["val"].x)
        assert (d["val_majority"] >= 0).sum() == 1  # one val image has a clear majority (happy)


def test_pixel_keys_name_pixels_not_positions():
    x = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    k = pixel_keys(x)
    assert len(set(k)) == 3 and (pixel_keys(x[::-1]) == k[::-1]).all()
    y = x.copy()
    y[1, 5, 5] ^= 1
    assert pixel_keys(y)[1] != k[1] and pixel_keys(y)[0] == k[0]


def _fake_folds(run, pack, folds=2):
    """What `fit` leaves for each fold, without training: held-out rows get one-hot guesses."""
    from train.torch_teacher import fold_indices

    with np.load(pack) as d:
        n, nv = len(d["train_keys"]), len(d["val_keys"])
    rng = np.random.default_rng(0)
    for f in range(folds):
        _, held = fold_indices(n, f, folds, 1234)
        (run / f"fold{f}").mkdir(parents=True)
        guess = lambda m: np.eye(7, dtype=np.float32)[rng.integers(0, 7, m)]  # noqa: E731
        np.savez(run / f"fold{f}" / "result.npz", held=held, held_ferplus=guess(len(held)), held_fer2013=guess(len(held)),
                 val_ferplus=guess(nv), val_fer2013=guess(nv))
    return n


def test_folds_combine_into_one_probability_per_training_image(voted, tmp_path):  # noqa: F811
    from train.teacher import looked_up
    from train.torch_teacher import fold_indices, main

    pack, run = tmp_path / "pack.npz", tmp_path / "teacher"
    make_pack(str(voted), None, pack)
    n = _fake_folds(run, pack)
    a, b = fold_indices(n, 0, 2, 1234)
    assert sorted(np.concatenate([a, b])) == list(range(n)) and not set(a) & set(b)
    assert main(["combine", "--pack", str(pack), "--out", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["train_images"] == n and len(m["folds"]) == 2
    with np.load(pack) as d:
        x = decoded(d["train_bytes"], d["train_offsets"])
    with np.load(run / "teacher_probs.npz") as t:
        for f in range(2):
            with np.load(run / f"fold{f}" / "result.npz") as r:
                assert np.array_equal(t["ferplus"][r["held"]], r["held_ferplus"])  # each row from the fold that held it out
        # Looked up by pixels, in any order the student's dataset has.
        order = np.arange(n)[::-1]
        assert np.array_equal(looked_up(run / "teacher_probs.npz", x[order], "ferplus"), t["ferplus"][order])
        assert np.array_equal(looked_up(run / "teacher_probs.npz", x, "fer2013"), t["fer2013"])


def test_a_missing_fold_or_foreign_images_are_one_sentence(voted, tmp_path, capsys):  # noqa: F811
    from train.teacher import looked_up
    from train.torch_teacher import main

    pack, run = tmp_path / "pack.npz", tmp_path / "teacher"
    make_pack(str(voted), None, pack)
    _fake_folds(run, pack)
    (run / "fold1" / "result.npz").unlink()
    assert main(["combine", "--pack", str(pack), "--out", str(run)]) == 2
    assert "have no held-out prediction: a fold is missing" in capsys.readouterr().err
    assert not (run / "teacher_probs.npz").exists()
    (run / "fold1").rmdir()
    _fake_folds(tmp_path / "t2", pack, folds=1)
    assert main(["combine", "--pack", str(pack), "--out", str(tmp_path / "t2")]) == 2  # one fold holds nothing out
    other = np.random.default_rng(1).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    _fake_folds(tmp_path / "t3", pack)
    main(["combine", "--pack", str(pack), "--out", str(tmp_path / "t3")])
    with pytest.raises(UserError, match="no probabilities for 2 of the 2 training images: it was made from other images"):
        looked_up(tmp_path / "t3" / "teacher_probs.npz", other, "ferplus")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="is not a teacher_probs.npz"):
        looked_up(tmp_path / "junk.npz", other, "ferplus")
    assert main(["fit", "--pack", str(tmp_path / "nope.npz"), "--out", str(run)]) == 2
    assert "make it with python -m train.teacher_pack" in capsys.readouterr().err


def test_a_teacher_fold_trains_resumes_and_predicts(voted, tmp_path):  # noqa: F811
    pytest.importorskip("torch", reason="the GPU teacher needs PyTorch, which the README's install leaves out; "
                        "pip install -e '.[teacher]' adds it")
    from train.torch_teacher import main

    pack, run = tmp_path / "pack.npz", tmp_path / "teacher"
    make_pack(str(voted), None, pack)
    args = ["fit", "--pack", str(pack), "--out", str(run), "--folds", "2", "--max-epochs", "3", "--width", "8",
            "--batch-size", "4", "--device", "cpu"]
    for f in ("0", "1"):
        assert main([*args, "--fold", f]) == 0
    history = json.loads((run / "fold0" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3] and all(np.isfinite(h["loss"]) for h in history)
    assert main([*args, "--fold", "0", "--resume"]) == 0  # finished: predicts again, trains nothing
    assert json.loads((run / "fold0" / "history.json").read_text()) == history
    assert main(["combine", "--pack", str(pack), "--out", str(run)]) == 0
    env = json.loads((run / "environment.json").read_text())
    assert env["device"] == "cpu" and "torch" in env and "--fold 1" in (run / "command.txt").read_text()


def _teacher_file(path, x, ferplus, fer2013):
    np.savez(path, keys=pixel_keys(x), ferplus=ferplus, fer2013=fer2013, labels=np.array(LABELS))
    return path


def test_the_folder_head_share_mixes_the_two_heads(tmp_path):
    from train.teacher import distill

    x = np.random.default_rng(2).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    y = np.array([0, 3, 4, 6])
    eye = np.eye(7, dtype=np.float32)
    npz = _teacher_file(tmp_path / "teacher_probs.npz", x, eye[y], eye[(y + 1) % 7])  # the FER2013 head disagrees
    for share, agree in ((0.0, 1.0), (1.0, 0.0)):
        t, info = distill(str(npz), 1.0, x[::-1], eye[y[::-1]], share)
        assert info["agreement_with_labels"] == agree and info["folder_head_share"] == share
    t, _ = distill(str(npz), 0.5, x, eye[y], 0.25)
    assert np.allclose(t[0], 0.5 * eye[0] + 0.5 * (0.75 * eye[0] + 0.25 * eye[1]))


def test_the_folder_head_share_needs_a_probabilities_teacher(tmp_path, synthetic_dataset, shipped_model):
    from train.settings import TrainSettings, check_settings

    npz = _teacher_file(tmp_path / "t.npz", np.zeros((1, 48, 48), np.uint8), np.eye(7)[:1], np.eye(7)[:1])
    base = dict(data=str(synthetic_dataset), out=str(tmp_path / "run"))
    check_settings(TrainSettings(**base, teacher=str(npz), teacher_folder_weight=0.3))
    for kw, msg in ((dict(teacher_folder_weight=0.3), "needs --teacher"),
                    (dict(teacher=str(npz), teacher_folder_weight=1.5), r"--teacher-folder-weight must lie in \[0, 1\]"),
                    (dict(teacher=f"{npz},{shipped_model}", teacher_folder_weight=0.3), "a .tflite or .keras teacher has one")):
        with pytest.raises(UserError, match=msg):
            check_settings(TrainSettings(**base, **kw))


@pytest.mark.slow  # trains a model for one short epoch (about 10 s); CI runs it
def test_edge_train_distills_from_a_probabilities_file(synthetic_dataset, tmp_path, cache_env):
    pytest.importorskip("tensorflow", reason="training tests need the train extra")
    from train.data import load_dataset
    from train.trainer import TrainSettings, run

    tr = load_dataset(synthetic_dataset).splits["train"]
    eye = np.eye(7, dtype=np.float32)
    npz = _teacher_file(tmp_path / "teacher_probs.npz", tr.x, eye[tr.y], eye[(tr.y + 1) % 7])
    out = tmp_path / "student"
    run(TrainSettings(data=str(synthetic_dataset), out=str(out), arch="mini_xception", epochs=1, batch_size=16,
                      steps_per_epoch=2, warmup_epochs=0, augment=False, teacher=str(npz), teacher_weight=0.5))
    info = json.loads((out / "data.json").read_text())["labels"]["teacher"]
    # --labels folder takes the teacher's FER2013-label head, which here names the next class.
    assert info["folder_head_share"] == 1.0 and info["agreement_with_labels"] == 0.0


def test_the_pack_command_makes_its_folder_and_refuses_other_names(voted, tmp_path, capsys):  # noqa: F811
    from train.teacher_pack import main

    assert main(["--data", str(voted), "--out", str(tmp_path / "runs" / "pack.npz")]) == 0
    assert (tmp_path / "runs" / "pack.npz").is_file() and "training images with their targets" in capsys.readouterr().out
    assert main(["--data", str(voted), "--out", str(tmp_path / "pack.zip")]) == 2
    assert "give a name ending in .npz" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
