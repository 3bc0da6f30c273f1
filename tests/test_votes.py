"""FER+ votes: the reader, the soft targets, the majority metric and training on votes."""

import csv
import json
import re

import numpy as np
import pytest

from edge.errors import UserError
from edge.labels import FERPLUS_CLASSES, LABELS
from tests.conftest import REPO, run_cli, write_class_folders
from train.data import load_dataset
from train.votes import ferplus_report, find_votes, majority, majority_labels, read_votes, soft_targets

HEADER = ["file", "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "nf"]
SHARED_VOTES = REPO.parent / "shared" / "datasets" / "ferplus_votes.csv"


def vote_row(file, **votes):
    return [file] + [votes.get(c, 0) for c in HEADER[1:]]


def write_votes(path, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)
    return path


@pytest.fixture()
def voted(tmp_path, cache_env):
    """Two images per class in train/ and val/; votes beside the data folder for some of them."""
    root = tmp_path / "fer2013"
    write_class_folders(root / "train", 2, seed=3)
    write_class_folders(root / "val", 2, seed=4)
    rows = [
        vote_row("train/angry/0000.png", anger=6, sadness=3, contempt=1),  # contempt dropped: 6/9, 3/9
        vote_row("train/fear/0000.png", surprise=7, fear=3),  # the majority disagrees with the folder
        vote_row("train/happy/0000.png", unknown=4, nf=2, happiness=4),  # mostly doubtful: left out
        vote_row("train/sad/0000.png", contempt=10),  # no vote on our classes: left out
        vote_row("val/happy/0000.png", happiness=10),
        vote_row("val/sad/0000.png", sadness=4, neutral=4, fear=2),  # a tie: no majority
        vote_row("val/neutral/0001.png", nf=8, neutral=2),
        vote_row("train/angry/9999.png", anger=10),  # not in the data: ignored
    ]
    write_votes(tmp_path / "ferplus_votes.csv", rows)
    return root


def test_vote_reader_matches_falls_back_and_leaves_out_doubtful(voted):
    ds = load_dataset(voted, progress=False)
    votes = read_votes(find_votes(voted, None))  # found in the folder above the data
    tr = ds.splits["train"]
    t, keep, counts = soft_targets(tr.names, tr.y, votes)
    assert counts == {"images": 14, "vote_labels": 2, "folder_label_fallback": 10, "left_out_doubtful": 2}
    by_name = dict(zip(tr.names, t))
    assert np.allclose(by_name["train/angry/0000.png"], np.array([6, 0, 0, 0, 0, 3, 0]) / 9)
    assert by_name["train/fear/0000.png"][LABELS.index("surprise")] == pytest.approx(0.7)
    assert np.array_equal(by_name["train/disgust/0001.png"], np.eye(7)[LABELS.index("disgust")])  # fallback
    assert sorted(np.array(tr.names)[~keep]) == ["train/happy/0000.png", "train/sad/0000.png"]
    assert np.allclose(t.sum(1), 1)

    mixed, _, _ = soft_targets(tr.names, tr.y, votes, folder_weight=0.5)
    fear = dict(zip(tr.names, mixed))["train/fear/0000.png"]
    assert fear[LABELS.index("fear")] == pytest.approx(0.5 + 0.15) and fear[LABELS.index("surprise")] == pytest.approx(0.35)


def test_ferplus_majority_skips_ties_doubtful_and_unmatched(voted):
    votes = read_votes(voted.parent / "ferplus_votes.csv")
    assert majority(np.array([0, 0, 4, 0, 4, 2, 0])) == -1 and majority(np.array([0, 0, 0, 9, 1, 0, 0])) == 3
    names = ["val/happy/0000.png", "val/sad/0000.png", "val/neutral/0001.png", "val/angry/0000.png"]
    assert majority_labels(names, votes).tolist() == [LABELS.index("happy"), -1, -1, -1]
    probs = np.full((4, 7), 0.01)
    probs[:, LABELS.index("sad")] = 0.9  # wrong for the one image that has a majority
    rep = ferplus_report(names, probs, votes)
    assert rep["images"] == 1 and rep["accuracy"] == 0.0
    assert rep["skipped"] == {"no_votes": 1, "doubtful": 1, "tie": 1}
    probs[0] = np.eye(7)[LABELS.index("happy")]
    assert ferplus_report(names, probs, votes)["per_class"]["happy"]["recall"] == 1.0


def test_mapping_covers_our_classes_once():
    assert sorted(FERPLUS_CLASSES.values()) == sorted(LABELS)


@pytest.mark.slow  # 4 s: an `edge train` process (TensorFlow loads); left to the full run (CI)
def test_bad_votes_are_one_sentence(tmp_path, voted):
    with pytest.raises(UserError, match="lacks the columns"):
        read_votes(_bad_header(tmp_path / "bad.csv"))
    with pytest.raises(UserError, match="None of the"):
        ds = load_dataset(voted, progress=False)
        other = read_votes(write_votes(tmp_path / "other.csv", [vote_row("elsewhere/x.png", anger=1)]))
        soft_targets(ds.splits["train"].names, ds.splits["train"].y, other)
    r = run_cli("train", "--data", voted, "--out", tmp_path / "run", "--labels", "ferplus", "--votes", tmp_path / "nope.csv",
                env={"QUEUE_MOOD_CACHE": str(tmp_path / "c")})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: Votes file {tmp_path / 'nope.csv'} does not exist; pass --votes PATH to ferplus_votes.csv."]


def test_votes_against_fer2013_csv_say_the_rows_have_no_file_names(tmp_path, cache_env):
    """fer2013.csv's rows have no file names for the votes to match: the sentence told the user to pass
    "the folder that holds train/ and val/", which a user of the CSV does not have."""
    pixels = " ".join(["128"] * 48 * 48)
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n" + f"3,{pixels},Training\n" * 3)
    sentence, _ = _unmatched(tmp_path / "fer2013.csv", "train", "train/happy/Training_1.jpg")
    assert sentence == (f"None of the 3 images matches a row of {tmp_path / 'votes.csv'}: they are rows of a CSV "
                        "(fer2013.csv:2, ...), and the votes name each image by its file in FER2013's folder "
                        "layout (e.g. train/angry/Training_10118481.jpg); use that layout as --data (as "
                        "fer2013.tar.gz unpacks), or leave the votes out.")


def test_votes_against_a_renamed_copy_say_the_names_differ(tmp_path, cache_env):
    """Kaggle's emotion-detection-fer copy (train/ and test/, angry/im0.png ...) renames FER2013's files:
    the sentence told the user to pass "the folder that holds train/ and val/", which they had done."""
    write_class_folders(tmp_path / "kaggle" / "train", 1, names=["angry", "disgusted", "fearful", "happy", "neutral",
                                                                  "sad", "surprised"])
    sentence, names = _unmatched(tmp_path / "kaggle", "train", "train/happy/Training_1.jpg")
    assert sentence == (f"None of the {len(names)} images matches a row of {tmp_path / 'votes.csv'}, not even by file "
                        f"name ({names[0]}, ...): the votes name FER2013's own files (e.g. "
                        "train/angry/Training_10118481.jpg), which copies such as Kaggle's emotion-detection-fer "
                        "rename; use the copy fer2013.tar.gz unpacks as --data, or leave the votes out.")
    # the right copy at the wrong level (its own train/ given) keeps the sentence that mends that
    write_class_folders(tmp_path / "fer" / "train", 1)
    sentence, _ = _unmatched(tmp_path / "fer" / "train", "all", "train/angry/0000.png")
    assert sentence.endswith("pass the folder that holds train/ and val/ as --data.")


def _unmatched(data, split, voted_file):
    """The sentence soft_targets gives for `split` of `data` against votes for voted_file alone (and its image names)."""
    tr = load_dataset(data, progress=False).splits[split]
    votes = read_votes(write_votes(data.parent / "votes.csv", [vote_row(voted_file, happiness=10)]))
    with pytest.raises(UserError) as err:
        soft_targets(tr.names, tr.y, votes)
    return str(err.value), tr.names


def test_a_votes_row_of_other_length_or_bytes_is_one_sentence(tmp_path):
    good = ",".join(map(str, vote_row("val/happy/0000.png", happiness=10)))
    (tmp_path / "short.csv").write_text(",".join(HEADER) + f"\n{good}\n\nval/sad/0000.png,0,10\n")
    with pytest.raises(UserError, match=r"short.csv:4 has 3 columns, expected 11 as in its header\."):
        read_votes(tmp_path / "short.csv")  # line 4: the blank line counts
    (tmp_path / "long.csv").write_text(",".join(HEADER) + f"\n{good},1\n")
    with pytest.raises(UserError, match=r"long.csv:2 has 12 columns, expected 11"):
        read_votes(tmp_path / "long.csv")
    (tmp_path / "latin1.csv").write_bytes((",".join(HEADER) + f"\n{good}\n").encode() + b"val/caf\xe9.png" + b",0" * 10)
    with pytest.raises(UserError, match=r"latin1.csv is not UTF-8 text \(bad byte on line 3\); save it as UTF-8\."):
        read_votes(tmp_path / "latin1.csv")


def test_a_negative_or_repeated_votes_row_is_one_sentence_naming_its_line(tmp_path):
    """A negative count made targets of negative probabilities; a second row for an image silently won."""
    write_votes(tmp_path / "neg.csv", [vote_row("val/happy/0000.png", happiness=10),
                                       vote_row("val/sad/0000.png", sadness=11, nf=-1)])
    with pytest.raises(UserError, match=r"neg.csv:3 has a vote count that is not a whole number of 0 or more \(a "
                                        r"negative count\); fix that row\."):
        read_votes(tmp_path / "neg.csv")
    write_votes(tmp_path / "dup.csv", [vote_row("val/happy/0000.png", happiness=10),
                                       vote_row("val/sad/0000.png", sadness=10),
                                       vote_row("val\\happy\\0000.png", anger=10)])
    with pytest.raises(UserError, match=r"dup.csv:4 gives votes for val/happy/0000.png again \(line 2 did\); keep one "
                                        r"row per image\."):
        read_votes(tmp_path / "dup.csv")


def test_votes_that_leave_a_split_empty_are_named_as_the_cause(voted, tmp_path):
    """All-zero rows for every val image: training failed with "gives 14 training and 0 validation
    images", without a word of the votes file."""
    from train.data import train_val
    from train.trainer import TrainSettings, targets

    ds = load_dataset(voted, progress=False)
    tr, va, _ = train_val(ds)
    votes = write_votes(tmp_path / "zero.csv",
                        [vote_row(n, anger=10) for n in tr.names] + [vote_row(n) for n in va.names])  # val: no votes
    with pytest.raises(UserError, match=re.escape(f"{votes} leaves out every val image: all {len(va)} are doubtful")):
        targets(TrainSettings(data=str(voted), out="unused", labels="ferplus", votes=str(votes)), tr, va)


def _bad_header(path):
    path.write_text("file,anger\nx.png,1\n")
    return path


def test_votes_are_found_above_a_data_folder_given_as_dot(voted, monkeypatch):
    """`cd` into the dataset's val/ and `--data .`: the folders above are the same ones."""
    monkeypatch.chdir(voted / "val")
    assert find_votes(".", None) == voted.parent / "ferplus_votes.csv"


def test_votes_not_found_beside_the_data(tmp_path):
    (tmp_path / "a" / "b" / "data").mkdir(parents=True)
    (tmp_path / "ferplus_votes.csv").write_text(",".join(HEADER) + "\n")  # three folders up: another dataset's, not looked at
    with pytest.raises(UserError, match="pass --votes PATH"):
        find_votes(tmp_path / "a" / "b" / "data", None)


@pytest.mark.skipif(not SHARED_VOTES.exists(), reason=f"FER+ votes not found at {SHARED_VOTES}")
def test_shared_votes_file_reads():
    votes = read_votes(SHARED_VOTES)
    train = sum(n.startswith("train/") for n in votes.counts)
    val = sum(n.startswith("val/") for n in votes.counts)
    assert (train, val) == (28558, 3579)  # the counts its README states
    assert 0 < len(votes.doubtful) < 200


@pytest.mark.slow
def test_training_on_votes_reports_both_label_kinds(voted, tmp_path, cache_env):
    pytest.importorskip("tensorflow", reason="training tests need the train extra")
    from train.evaluate import evaluate
    from train.trainer import TrainSettings, run

    out = tmp_path / "run"
    m = run(TrainSettings(data=str(voted), out=str(out), arch="mini_xception", epochs=2, batch_size=4, lr=1e-3,
                          warmup_epochs=0, labels="ferplus", folder_weight=0.2, arch_options={"bn_momentum": 0.8}))
    data = json.loads((out / "data.json").read_text())
    assert data["labels"]["train"] == {"images": 14, "vote_labels": 2, "folder_label_fallback": 10, "left_out_doubtful": 2}
    assert data["train_images"] == 12 and data["labels"]["votes"].endswith("ferplus_votes.csv")
    assert json.loads((out / "train_settings.json").read_text())["votes"] == data["labels"]["votes"]
    assert m["images"] == 14 and m["ferplus_majority"]["images"] == 1
    assert np.isfinite(m["loss"])
    rep = evaluate(str(out), str(voted), degrade=[24, 12])
    assert set(rep["degraded"]) == {"24", "12"} and "ferplus_majority_accuracy" in rep["degraded"]["12"]
    assert rep["ferplus_majority"]["skipped"]["tie"] == 1


def test_the_training_summary_names_what_each_accuracy_is_against():
    """A vote-trained run is judged against the FER+ majority (README's table); its last line must
    not offer only the folder-label figure, 25 points lower for v5, as "val accuracy"."""
    from train.cli import summary_line

    folder = {"accuracy": 0.587, "macro_f1": 0.52}
    assert summary_line(folder, "runs/a") == ("val accuracy 0.5870, macro-F1 0.5200 against the folder labels; "
                                              "report in runs/a")
    voted = {**folder, "ferplus_majority": {"images": 3428, "accuracy": 0.8293, "macro_f1": 0.7588}}
    assert summary_line(voted, "runs/v") == ("val accuracy 0.5870, macro-F1 0.5200 against the folder labels; "
                                             "0.8293, macro-F1 0.7588 against the FER+ majority (3,428 images); "
                                             "report in runs/v")


@pytest.mark.parametrize("sides", ["40,x", "", " , "])
def test_eval_degrade_takes_sizes(tmp_path, sides):
    """An empty --degrade (an unset shell variable) scored no size without a word."""
    r = run_cli("eval", "--data", tmp_path, "--degrade", sides)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--degrade takes face sizes" in r.stderr


def test_eval_with_votes_that_match_none_of_its_images_says_so(voted, tmp_path, shipped_model, capsys):
    """`--data fer2013/val` names its images angry/..., the votes file val/angry/...: asked for, the
    FER+ figure must not just be missing from the report; found beside the data, it is said."""
    from train.evaluate import evaluate

    votes = tmp_path / "ferplus_votes.csv"
    assert "ferplus_majority" in evaluate(str(shipped_model), str(voted), votes=str(votes))
    r = run_cli("eval", shipped_model, "--data", voted / "val", "--votes", votes,
                env={"QUEUE_MOOD_CACHE": str(tmp_path / "c")})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: None of the 14 images matches a row of {votes}; its file column must be relative to the dataset "
        "folder (e.g. train/angry/Training_10118481.jpg), so pass the folder that holds train/ and val/ as --data."]
    rep = evaluate(str(shipped_model), str(voted / "val"))  # ferplus_votes.csv is found two folders up
    assert "ferplus_majority" not in rep
    assert f"Not scoring against the FER+ majority: {votes} (found beside the data)" in capsys.readouterr().err
