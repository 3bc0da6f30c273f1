import json
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="soup tests need the train extra")

from edge.errors import UserError  # noqa: E402
from train.soup import soup  # noqa: E402

slow = pytest.mark.slow  # the tests that need `tiny_run`, a model trained for real (25 s on 2 cores)


def shifted_copy(run, dest, delta):
    """Another run of the same model whose every weight is `delta` larger."""
    import keras

    dest.mkdir(parents=True)
    model = keras.models.load_model(run / "model.keras", compile=False)
    model.set_weights([w + delta for w in model.get_weights()])
    model.save(dest / "model.keras")
    return dest


@slow
def test_soup_is_the_mean_of_the_runs_weights(tiny_run, tmp_path):
    import keras

    other = shifted_copy(tiny_run, tmp_path / "other", 1.0)
    path = soup(tmp_path / "soup", [tiny_run, other])
    got = keras.models.load_model(path, compile=False).get_weights()
    base = keras.models.load_model(tiny_run / "model.keras", compile=False).get_weights()
    assert len(got) == len(base)
    for g, b in zip(got, base):
        np.testing.assert_allclose(g, b + 0.5, rtol=1e-5, atol=1e-5)
    # the first run's settings come along (convert reads the labels and votes from them)
    assert (tmp_path / "soup" / "train_settings.json").read_text() == (tiny_run / "train_settings.json").read_text()
    assert len(json.loads((tmp_path / "soup" / "soup.json").read_text())["runs"]) == 2


@slow
def test_soup_of_identical_runs_scores_as_the_run(tiny_run, tmp_path, synthetic_dataset):
    from train.evaluate import evaluate

    path = soup(tmp_path / "soup", [tiny_run, shifted_copy(tiny_run, tmp_path / "same", 0.0)])
    got, want = (evaluate(str(p), str(synthetic_dataset), "val") for p in (path, tiny_run / "model.keras"))
    assert got["accuracy"] == want["accuracy"] and got["loss"] == pytest.approx(want["loss"], rel=1e-5)


@slow
def test_soup_refuses_another_architecture_in_one_sentence(tiny_run, tmp_path):
    import os
    import subprocess
    import sys

    from train import archs

    (tmp_path / "seed").mkdir()
    archs.build("seed_cnn", 48, 7).save(tmp_path / "seed" / "model.keras")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    r = subprocess.run([sys.executable, "-m", "edge.cli", "soup", str(tmp_path / "out"), str(tiny_run),
                        str(tmp_path / "seed")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "other layers" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("error:"), r.stderr  # no TensorFlow start-up messages before it
    assert not (tmp_path / "out" / "model.keras").exists()


@slow
def test_soup_needs_two_runs_and_a_new_folder(tiny_run, tmp_path):
    with pytest.raises(UserError, match="at least two"):
        soup(tmp_path / "a", [tiny_run])
    with pytest.raises(UserError, match="not a run folder"):
        soup(tmp_path / "a", [tiny_run, tmp_path / "missing"])
    shutil.copytree(tiny_run, tmp_path / "done")
    with pytest.raises(UserError, match="already exists"):
        soup(tmp_path / "done", [tiny_run, tiny_run])


def _with_settings(run, dest, **changes):
    shutil.copytree(run, dest)
    settings = json.loads((dest / "train_settings.json").read_text())
    (dest / "train_settings.json").write_text(json.dumps({**settings, **changes}))
    return dest


@slow
def test_soup_refuses_runs_trained_on_other_labels(tiny_run, tmp_path):
    other = _with_settings(tiny_run, tmp_path / "votes", labels="ferplus")
    with pytest.raises(UserError, match="one kind of label, but these differ: .*--labels folder, .*--labels ferplus"):
        soup(tmp_path / "soup", [tiny_run, other])
    assert not (tmp_path / "soup").exists()


@slow
def test_soup_warns_of_runs_from_other_starts(tiny_run, tmp_path, capsys):
    other = _with_settings(tiny_run, tmp_path / "tuned", init_from="/runs/other/model.keras")
    soup(tmp_path / "soup", [tiny_run, other])
    assert "started from different weights" in capsys.readouterr().err


@slow
def test_a_crash_while_saving_the_soup_leaves_no_model(tiny_run, tmp_path, monkeypatch):
    import keras

    def crash(self, path, *args, **kwargs):
        open(path, "wb").write(b"half a model")
        raise KeyboardInterrupt

    same = shifted_copy(tiny_run, tmp_path / "same", 0.0)
    with monkeypatch.context() as m:
        m.setattr(keras.Model, "save", crash)
        with pytest.raises(KeyboardInterrupt):
            soup(tmp_path / "soup", [tiny_run, same])
    assert not (tmp_path / "soup" / "model.keras").exists()  # so the same command can run again
    soup(tmp_path / "soup", [tiny_run, same])


def test_soup_records_its_command_as_train_and_convert_do(tmp_path, monkeypatch):
    import keras

    for run, seed in (("a", 0), ("b", 1)):
        keras.utils.set_random_seed(seed)
        x = keras.Input((8, 8, 1))
        (tmp_path / run).mkdir()
        keras.Model(x, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(x)), name="tiny").save(
            tmp_path / run / "model.keras")
    monkeypatch.setattr("sys.argv", ["edge", "soup", "soup", "a", "b"])
    soup(tmp_path / "soup", [tmp_path / "a", tmp_path / "b"])
    assert (tmp_path / "soup" / "command.txt").read_text().endswith("edge soup soup a b\n")


def test_soup_refuses_a_run_given_twice_and_a_file_that_is_no_model(tmp_path):
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "model.keras").write_text("junk")
    with pytest.raises(UserError, match=r"model.keras is given twice \(.*a and .*a/model.keras\); give each run once\."):
        soup(tmp_path / "soup", [tmp_path / "a", tmp_path / "b", tmp_path / "a" / "model.keras"])
    with pytest.raises(UserError, match=r"a/model.keras is not a readable Keras model \(not a .keras zip archive\)"):
        soup(tmp_path / "soup", [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "soup").exists()


@pytest.mark.parametrize("out", ["notes.txt", "notes.txt/soup"])
def test_soup_refuses_an_out_that_is_a_file_before_loading_any_model(tmp_path, out):
    (tmp_path / "notes.txt").write_text("mine")
    for run in ("a", "b"):  # junk models: reading them would fail with another sentence
        (tmp_path / run).mkdir()
        (tmp_path / run / "model.keras").write_text("junk")
    with pytest.raises(UserError, match=r"OUT .*notes.txt.* (is a file|lies under the file .*notes.txt); pass a folder\."):
        soup(tmp_path / out, [tmp_path / "a", tmp_path / "b"])
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_read_only_disk_is_one_sentence(tmp_path, monkeypatch):
    import errno

    from click.testing import CliRunner

    from edge.cli import cli
    from train import soup as soup_module

    def read_only(out, runs):
        raise OSError(errno.EROFS, "Read-only file system", str(out))

    monkeypatch.setattr(soup_module, "soup", read_only)
    r = CliRunner().invoke(cli, ["soup", str(tmp_path / "soup"), "a", "b"])
    assert r.exit_code == 2, r.output
    assert r.output.strip() == (f"error: Cannot write into {tmp_path / 'soup'} (Read-only file system); make its disk "
                                "writable, then run the same command again.")
