"""Edges of the dataset and votes readers and of what `edge eval` / `bench accuracy` score:
no image with a vote row or a FER+ majority, CSVs saved with a BOM, images outside class
folders or of other types, and a train split scored because nothing else was there."""

import csv
import re

import numpy as np
import pytest

from edge.errors import UserError
from edge.labels import LABELS
from tests.conftest import pattern_image, write_class_folders
from tests.test_votes import HEADER, vote_row, write_votes
from train.data import EVAL_ORDER, load_dataset
from train.votes import read_votes, unmatched_error


def _bench(model, data, votes, out):
    from benchmarks import accuracy

    return accuracy.main([str(model), "--data", str(data), "--votes", str(votes), "--no-peer", "--out", str(out)])


def test_bench_accuracy_with_votes_for_none_of_the_images_is_one_sentence(shipped_model, tmp_path, cache_env, capsys):
    data = tmp_path / "ds"
    write_class_folders(data / "val", 1)
    votes = write_votes(tmp_path / "votes.csv", [vote_row("elsewhere/x.png", anger=5)])
    out = tmp_path / "out"
    assert _bench(shipped_model, data, votes, out) == 2
    names = [f"val/{c}/0000.png" for c in LABELS]
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"error: {unmatched_error(names, read_votes(votes))}"
    assert not (out / "accuracy.json").exists()


@pytest.fixture()
def tied(tmp_path, cache_env):
    """One val image per class, none with a FER+ majority: five ties, one doubtful, one without a row."""
    data = tmp_path / "tie"
    write_class_folders(data / "val", 1)
    rows = [vote_row(f"val/{c}/0000.png", anger=4, sadness=4, fear=2) for c in LABELS[:5]]
    rows.append(vote_row(f"val/{LABELS[5]}/0000.png", unknown=6, happiness=4))
    return data, write_votes(tmp_path / "ferplus_votes.csv", rows)


NO_MAJORITY = "None of the 7 images has a FER+ majority in {} (5 tied, 1 doubtful, 1 without a row)"


@pytest.mark.parametrize("degrade", [None, [32]])
def test_eval_with_votes_that_give_no_image_a_majority_says_so(tied, shipped_model, degrade):
    from train.evaluate import evaluate

    data, votes = tied
    with pytest.raises(UserError, match=re.escape(NO_MAJORITY.format(votes))):
        evaluate(str(shipped_model), str(data), votes=str(votes), degrade=degrade)


def test_eval_with_votes_found_beside_that_give_no_majority_scores_the_folder_labels(tied, shipped_model, tmp_path, capsys):
    from train.evaluate import evaluate

    data, votes = tied
    rep = evaluate(str(shipped_model), str(data), degrade=[32])  # ferplus_votes.csv lies one folder up
    assert "ferplus_majority" not in rep and "ferplus_majority_accuracy" not in rep["degraded"]["32"]
    assert f"Not scoring against the FER+ majority: {votes} (found beside the data)" in capsys.readouterr().err


BROKEN_VOTES = {  # what a votes file found beside the data may be: its text from a good one's
    "bad header": lambda text: text.replace("anger", "angr", 1),
    "non-numeric votes": lambda text: text.replace(",10,", ",ten,", 1),
    "truncated": lambda text: text[: text.rindex(",", 0, len(text) - 30)],  # a copy stopped mid-row
}


@pytest.mark.parametrize("broken", BROKEN_VOTES)
def test_eval_with_a_broken_votes_file_found_beside_scores_the_folder_labels_and_says_so(broken, shipped_model,
                                                                                         tmp_path, cache_env, capsys):
    """A votes file nobody named was dropped without a word when it could not be read, so the report
    passed for one of a dataset without votes; named with --votes, the same file is refused."""
    from train.evaluate import evaluate

    data = tmp_path / "ds"
    write_class_folders(data / "val", 1)
    votes = write_votes(data / "ferplus_votes.csv", [vote_row(f"val/{c}/0000.png", happiness=10) for c in LABELS])
    assert "ferplus_majority" in evaluate(str(shipped_model), str(data))
    votes.write_text(BROKEN_VOTES[broken](votes.read_text()))
    capsys.readouterr()
    rep = evaluate(str(shipped_model), str(data))
    assert "ferplus_majority" not in rep and rep["images"] == len(LABELS)
    with pytest.raises(UserError) as refused:
        read_votes(votes)
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("WARNING")]
    assert line == ("WARNING: only the folder labels are scored, not the FER+ majority: the votes file found beside the "
                    f"data is ignored, as {str(refused.value).rstrip('.')}; fix or replace that file to score the "
                    "FER+ majority too.")
    assert str(votes) in line
    with pytest.raises(UserError, match=re.escape(str(refused.value))):
        evaluate(str(shipped_model), str(data), votes=str(votes))


def test_eval_names_the_classes_with_no_image_in_the_split_it_scores(shipped_model, tmp_path, cache_env, capsys):
    """A dataset without a disgust/ folder in val, and an empty fear/, showed only support 0 in
    their rows, easily read as classes the model never gets right."""
    from train.evaluate import evaluate

    data = tmp_path / "ds"
    write_class_folders(data / "val", 1, names=[c for c in LABELS if c not in ("disgust", "fear")])
    (data / "val" / "fear").mkdir()
    capsys.readouterr()
    rep = evaluate(str(shipped_model), str(data))
    assert rep["per_class"]["disgust"]["support"] == rep["per_class"]["fear"]["support"] == 0
    val = data / "val"
    assert (f"WARNING: {val} has no image of disgust, fear, so the report scores them on nothing (support 0); add "
            f"images of disgust, fear to {val} to measure them.") in capsys.readouterr().err.splitlines()
    write_class_folders(data / "val", 1)
    evaluate(str(shipped_model), str(data))
    assert "no image of" not in capsys.readouterr().err


def test_eval_of_a_csv_names_the_classes_its_scored_rows_lack(shipped_model, tmp_path, cache_env, capsys):
    """fer2013.csv has no folder to add images to: the rows of the scored Usage are named."""
    from train.evaluate import evaluate

    rng = np.random.default_rng(0)
    p = tmp_path / "fer2013.csv"
    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for code in range(7):
            if LABELS[code] != "disgust":
                w.writerow([code, " ".join(map(str, pattern_image(code, rng).ravel())), "PublicTest"])
        w.writerow([1, " ".join(map(str, pattern_image(1, rng).ravel())), "Training"])  # not the scored split
    capsys.readouterr()
    evaluate(str(shipped_model), str(p))
    assert (f"WARNING: the val rows of {p} have no image of disgust, so the report scores it on nothing (support 0); "
            f"add images of disgust to the val rows of {p} to measure it.") in capsys.readouterr().err.splitlines()


def test_bench_accuracy_with_votes_that_give_no_image_a_majority_is_one_sentence(tied, shipped_model, tmp_path, capsys):
    data, votes = tied
    assert _bench(shipped_model, data, votes, tmp_path / "out") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: " + NO_MAJORITY.format(votes))


def test_csvs_saved_with_a_bom_are_read(tmp_path, cache_env):
    """Excel writes UTF-8 with a byte-order mark; vote columns match like fer2013.csv's, whatever
    their case and surrounding spaces."""
    rng = np.random.default_rng(0)
    p = tmp_path / "fer2013.csv"
    with p.open("w", newline="", encoding="utf-8-sig") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerow([3, " ".join(map(str, pattern_image(3, rng).ravel())), "Training"])
    assert load_dataset(p, progress=False).splits["train"].y.tolist() == [LABELS.index("happy")]

    v = tmp_path / "votes.csv"
    with v.open("w", newline="", encoding="utf-8-sig") as fh:
        w = csv.writer(fh)
        w.writerow([f" {c.capitalize()} " if i % 2 else c.upper() for i, c in enumerate(HEADER)])
        w.writerow(vote_row("val/happy/0000.png", happiness=8, neutral=2))
    votes = read_votes(v)
    assert list(votes.counts) == ["val/happy/0000.png"]
    assert votes.counts["val/happy/0000.png"][LABELS.index("happy")] == 8


def _untidy(root):
    """train/ class folders with extra image types and a note; val/ images with no class folders."""
    import cv2

    write_class_folders(root / "train", 2)
    rng = np.random.default_rng(1)
    for suffix in (".webp", ".tif", ".tiff", ".bmp"):
        cv2.imwrite(str(root / "train" / "happy" / f"extra{suffix}"), pattern_image(3, rng))
    (root / "train" / "happy" / "notes.txt").write_text("shot on a phone")
    (root / "train" / "stray.png").write_bytes((root / "train" / "sad" / "0000.png").read_bytes())
    (root / "val").mkdir()
    for i in range(3):
        cv2.imwrite(str(root / "val" / f"{i}.png"), pattern_image(i, rng))
    return root


def test_images_outside_class_folders_or_of_other_types_are_listed_not_dropped(tmp_path, cache_env, capsys):
    data = _untidy(tmp_path / "ds3")
    ds = load_dataset(data, progress=False)
    assert set(ds.splits) == {"train"} and len(ds.splits["train"]) == 2 * len(LABELS) + 4  # .webp, .tif(f), .bmp read
    reasons = dict(ds.skipped)
    assert sorted(reasons) == ["train/happy/notes.txt", "train/stray.png", "val/0.png", "val/1.png", "val/2.png"]
    assert "outside any class folder" in reasons["val/0.png"] and "outside any class folder" in reasons["train/stray.png"]
    assert "not an image" in reasons["train/happy/notes.txt"]
    err = capsys.readouterr().err
    assert (f"Left out of {data}: 1 file(s) in train outside its class folders; 1 file(s) in train's class folders "
            "that are not images; the 3 file(s) in val, which has no class folders.") in " ".join(err.split())
    assert load_dataset(data, progress=False).skipped == ds.skipped  # from the cache: listed again, once
    assert sorted(f for f, _ in load_dataset(data, progress=False, only_split="train").skipped) == [
        "train/happy/notes.txt", "train/stray.png"]


def test_a_split_folder_of_images_without_class_folders_is_one_sentence(tmp_path, cache_env):
    import cv2

    (tmp_path / "val").mkdir()
    cv2.imwrite(str(tmp_path / "val" / "a.png"), pattern_image(0, np.random.default_rng(0)))
    with pytest.raises(UserError, match="class folders"):
        load_dataset(tmp_path, progress=False)


def test_eval_says_when_it_falls_back_to_the_train_split(tmp_path, cache_env, shipped_model, capsys):
    from train.evaluate import evaluate

    write_class_folders(tmp_path / "train", 1)
    assert evaluate(str(shipped_model), str(tmp_path))["split"] == "train"
    assert f"{tmp_path}: it has only a train split, so that is scored; these may be the images the model was trained " \
           "on" in capsys.readouterr().err
    evaluate(str(shipped_model), str(tmp_path), split="train")  # asked for: warned too, as --help says
    assert f"{tmp_path}: its train split is scored; these may be the images" in capsys.readouterr().err


def test_eval_of_a_tflite_whose_card_failed_the_parity_gate_says_so(tmp_path, cache_env, shipped_model, capsys):
    import json
    import shutil

    from train.evaluate import evaluate

    shutil.copy(shipped_model, tmp_path / shipped_model.name)
    card = json.loads(shipped_model.with_name("model.json").read_text())
    card["parity"]["passed"] = False
    (tmp_path / "model.json").write_text(json.dumps(card))
    write_class_folders(tmp_path / "ds" / "val", 1)
    evaluate(str(tmp_path / shipped_model.name), str(tmp_path / "ds"))
    assert f"Note: {tmp_path / shipped_model.name}: its card says it failed convert's int8 parity gate" in \
        capsys.readouterr().err


def test_eval_help_states_the_split_order():
    from click.testing import CliRunner

    from train.cli import eval_cmd

    text = " ".join(CliRunner().invoke(eval_cmd, ["--help"]).output.split())
    assert "val, else all images)" not in text
    assert ", ".join(EVAL_ORDER) in text


def test_eval_refuses_a_degrade_size_before_scoring_the_split(tmp_path, cache_env, shipped_model, monkeypatch):
    """--degrade 500 was refused only after the whole split had been scored (a minute on FER2013)."""
    from edge.pipeline.classifier import Classifier
    from train.evaluate import evaluate

    write_class_folders(tmp_path / "ds" / "val", 1)
    scored = []
    monkeypatch.setattr(Classifier, "predict_many", lambda self, x, **kw: scored.append(len(x)))
    with pytest.raises(UserError, match=r"--degrade 500 is not a face size between 1 and the model's input size 48"):
        evaluate(str(shipped_model), str(tmp_path / "ds"), degrade=[32, 500])
    assert scored == []


PIPE = "is not a regular file (a pipe or a device); save it as a file first"


def test_pipes_given_as_inputs_are_one_sentence_each(tmp_path, cache_env):
    """A named pipe (or a shell's <(cat ...)) as --data was a NotADirectoryError traceback; as
    --votes, --init-from, --teacher or a .tflite it was said not to exist."""
    import os

    from train.evaluate import evaluate
    from train.teacher import teacher_paths
    from train.settings import TrainSettings, check_settings
    from train.votes import find_votes

    for name in ("fer2013.csv", "data", "votes.csv", "model_int8.tflite", "start.keras"):
        os.mkfifo(tmp_path / name)
    write_class_folders(tmp_path / "ds", 1)
    for fifo, call in (("fer2013.csv", lambda p: load_dataset(p, progress=False)),
                       ("data", lambda p: load_dataset(p, progress=False)),
                       ("votes.csv", lambda p: find_votes(tmp_path, p)),
                       ("model_int8.tflite", lambda p: evaluate(p, str(tmp_path / "ds"))),
                       ("start.keras", lambda p: check_settings(TrainSettings(data="d", out=str(tmp_path / "run"),
                                                                               init_from=p))),
                       ("start.keras", teacher_paths)):
        with pytest.raises(UserError, match=re.escape(f"{tmp_path / fifo} {PIPE}")):
            call(str(tmp_path / fifo))


def test_eval_of_a_pipe_named_like_a_keras_model_is_one_sentence_not_a_hang(tmp_path, synthetic_dataset):
    import os

    from tests.conftest import run_cli

    os.mkfifo(tmp_path / "fifo.keras")
    r = run_cli("eval", tmp_path / "fifo.keras", "--data", synthetic_dataset, timeout=120)
    assert r.returncode == 2 and f"Model {tmp_path / 'fifo.keras'} {PIPE}" in r.stderr and "Traceback" not in r.stderr


def test_init_from_takes_a_run_folder_and_votes_names_a_folder(tmp_path):
    """A run folder was "does not exist" to --init-from (eval, convert and soup take one); so was a folder to --votes."""
    from train.settings import TrainSettings, check_settings
    from train.votes import find_votes

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"checked when loaded")
    s = TrainSettings(data="d", out=str(tmp_path / "new"), init_from=str(tmp_path / "run"))
    check_settings(s)
    assert s.init_from == str(tmp_path / "run" / "model.keras")
    with pytest.raises(UserError, match=re.escape(f"--init-from {tmp_path} holds no model.keras or model_int8.tflite")):
        check_settings(TrainSettings(data="d", out=str(tmp_path / "new"), init_from=str(tmp_path)))
    with pytest.raises(UserError, match=re.escape(f"Votes file {tmp_path} is a folder, not a file")):
        find_votes(tmp_path, tmp_path)
