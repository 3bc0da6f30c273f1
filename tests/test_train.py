import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="training tests need the train extra")

from edge.labels import LABELS  # noqa: E402
from train import archs  # noqa: E402
from train.trainer import class_weights  # noqa: E402


# The shipped architecture runs by default; the others (up to a minute each on 2 cores) with the slow tests.
@pytest.mark.parametrize("name", [n if n == archs.DEFAULT_ARCH else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(archs.ARCHITECTURES)])
@pytest.mark.slow
def test_every_architecture_builds_and_trains_one_step(name):
    opts = {"weights": None} if name == "mobilenetv2" else {}
    model = archs.build(name, 48, len(LABELS), **opts)
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)  # else the step is traced twice (as edge train avoids)
    x = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 1)).astype("float32")
    y = np.eye(7, dtype="float32")[[0, 1, 2, 3]]
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    # raw pixels in: the rescale is part of the graph, augmentation is not
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not any(k.startswith("Random") for k in kinds)


def test_default_architecture_fits_the_pi_budget():
    model = archs.build(archs.DEFAULT_ARCH, 48, 7)
    assert model.count_params() <= 1_500_000


def test_queue_net_lite_starts_from_a_queue_net_in_every_layer_but_its_stem():
    from edge.errors import UserError
    from train.warm_start import load_matching_weights

    full, lite = (archs.build(name, 48, len(LABELS)) for name in ("queue_net", "queue_net_lite"))
    assert load_matching_weights(lite, full) == ["stem2s_sep", "stem2s_bn"]
    for name in ("stem1_conv", "s2a_sep", "s3_short", "logits"):
        assert all(np.array_equal(a, b) for a, b in zip(lite.get_layer(name).get_weights(),
                                                         full.get_layer(name).get_weights())), name
    with pytest.raises(UserError, match="layers match by name and shape"):
        load_matching_weights(full, archs.build("mini_xception", 48, len(LABELS)))


def test_queue_net_wide_grows_from_a_queue_net_lite_as_the_same_function():
    """Every layer is matched (the wider ones grown), the grown model computes what the narrow one
    did, and its new channels are not dead: they carry their own random start."""
    from train.warm_start import load_matching_weights

    lite, wide = (archs.build(name, 48, len(LABELS)) for name in ("queue_net_lite", "queue_net_wide"))
    rng = np.random.default_rng(0)
    for layer in lite.layers:  # weights and batch-norm statistics far from their initial values
        layer.set_weights([rng.uniform(0.5, 1.5, v.shape) if "variance" in v.path else rng.normal(0, 0.3, v.shape)
                           for v in layer.weights])
    assert load_matching_weights(wide, lite) == []
    assert wide.count_params() > lite.count_params()
    logits = [archs._keras().Model(m.input, m.get_layer("logits").output) for m in (lite, wide)]
    x = rng.integers(0, 256, (4, 48, 48, 1)).astype("float32")
    narrow, grown = (m.predict(x, verbose=0) for m in logits)
    assert np.abs(narrow).max() > 1.0  # not a trivially small output
    np.testing.assert_allclose(grown, narrow, rtol=1e-4, atol=1e-4)
    new_out = wide.get_layer("s3b_sep").weights[1].numpy()[..., 512:]  # pointwise kernel, new output channels
    assert np.abs(new_out).max() > 0
    from train.warm_start import _growable

    assert _growable((3, 3, 64, 144), (3, 3, 64, 128)) and _growable((576,), (512,))
    assert not _growable((5, 5, 1, 32), (3, 3, 1, 32)) and not _growable((3, 3, 64, 120), (3, 3, 64, 128))


def test_init_from_a_file_that_is_no_keras_model_is_one_sentence(tmp_path):
    from edge.errors import UserError
    from train.warm_start import start_from

    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    with pytest.raises(UserError, match="junk.keras is not a readable Keras model"):
        start_from(archs.build("queue_net_lite", 48, len(LABELS)), str(junk), np.zeros((1, 48, 48, 1), np.uint8))


@pytest.mark.parametrize("head, needle", [
    ("logits", r"does not output probabilities \(its rows sum to .*\); end the model with a softmax\."),
    ("two", r"outputs \[\(None, 7\), \(None, 7\)\], but the pipeline reads one row of 7 class probabilities")])
def test_a_model_without_one_row_of_probabilities_is_refused_in_one_sentence(tmp_path, head, needle):
    """Logits passed every check before (the parity gate compares argmaxes) and reached the
    alerts, which read the outputs as probabilities; two outputs were reported as '7 classes'."""
    import keras

    from edge.errors import UserError
    from train.keras_io import load_keras

    x = keras.Input((48, 48, 1))
    flat = keras.layers.Flatten()(x)
    outputs = (keras.layers.Dense(7)(flat) if head == "logits" else
               [keras.layers.Dense(7, activation="softmax")(flat), keras.layers.Dense(7, activation="softmax")(flat)])
    keras.Model(x, outputs).save(tmp_path / "m.keras")
    with pytest.raises(UserError, match=needle):
        load_keras(tmp_path / "m.keras")


def test_a_model_of_variable_input_size_is_refused_in_one_sentence(tmp_path):
    """(None, None, 1) passed the square check and crashed building a (4, None, None, 1) probe."""
    import keras

    from edge.errors import UserError
    from train.keras_io import load_keras

    x = keras.Input((None, None, 1))
    y = keras.layers.Dense(7, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(x, y).save(tmp_path / "m.keras")
    with pytest.raises(UserError, match=re.escape("takes input (None, None, None, 1), of any size; the pipeline feeds "
                                                  "crops of one size: save it with a fixed input, e.g. "
                                                  "keras.Input((48, 48, 1)).")):
        load_keras(tmp_path / "m.keras")


def test_class_weights_favour_rare_classes():
    y = np.array([0] * 100 + [1] * 10 + [3] * 400)
    w = class_weights(y, 0.5)
    assert w[1] > w[0] > w[3]
    assert np.isclose(w[y].mean(), 1.0)
    assert np.allclose(class_weights(y, 0.0)[[0, 1, 3]], 1.0)


@pytest.mark.slow
def test_run_folder_has_the_report(tiny_run):
    for name in ("model.keras", "history.csv", "metrics.json", "command.txt", "data.json", "versions.json",
                 "samples_per_class.png", "images_per_class.png", "curves.png", "confusion_matrix.png"):
        assert (tiny_run / name).exists(), name
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert set(m["per_class"]) == set(LABELS) and len(m["confusion_matrix"]) == 7
    assert m["parameters"] > 0 and m["train_seconds"] > 0
    assert m["accuracy"] > 0.6, "the tiny model did not learn the synthetic patterns"
    for png in tiny_run.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _epochs(run_dir):
    with (run_dir / "history.csv").open() as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_resume_after_kill_continues_from_checkpoint(tmp_path, synthetic_dataset, cache_env):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edge.cli", "train", "--data", str(synthetic_dataset), "--out", str(out),
           "--arch", "mini_xception", "--epochs", "5", "--batch-size", "32"]
    env = {**os.environ, "QUEUE_MOOD_CACHE": str(cache_env)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "history.csv").exists() and len(_epochs(out)) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "training finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = _epochs(out)
    assert 2 <= len(done) < 5
    killed_seconds = json.loads((out / "timing.json").read_text())["train_seconds"]  # written every epoch
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    epochs = _epochs(out)
    assert epochs == list(range(5)), f"resumed run did not continue from epoch {len(done)}: {epochs}"
    assert json.loads((out / "metrics.json").read_text())["train_seconds"] > killed_seconds > 0
    assert len((out / "command.txt").read_text().splitlines()) == 2


def _backup_arrays(run_dir):
    import h5py

    arrays = {}
    with h5py.File(run_dir / "backup" / "latest.weights.h5") as f:
        f.visititems(lambda name, o: arrays.__setitem__(name, o[()]) if isinstance(o, h5py.Dataset) else None)
    return arrays


def _stopped_at_epoch(stop, settings, monkeypatch):
    """Run `settings` and interrupt it as epoch `stop` begins (its earlier epochs backed up)."""
    from train import trainer

    make_sync = trainer.epoch_sync

    def stopping(keras, batches):
        class Stop(type(make_sync(keras, batches))):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == stop:
                    raise KeyboardInterrupt
                batches.set_epoch(epoch)

        return Stop()

    monkeypatch.setattr(trainer, "epoch_sync", stopping)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(settings)
    monkeypatch.setattr(trainer, "epoch_sync", make_sync)


@pytest.mark.slow
def test_interrupted_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, synthetic_dataset, cache_env,
                                                                              monkeypatch):
    """Weights, optimizer state and history.csv match exactly: nothing a resume cannot restore
    (such as Python's global `random`, which Keras's own shuffle of the batch order drew on)
    may steer training."""
    from train import trainer

    def settings(name):
        return trainer.TrainSettings(data=str(synthetic_dataset), out=str(tmp_path / name), arch="mini_xception",
                                     epochs=4, batch_size=32, steps_per_epoch=4)

    trainer.run(settings("whole"))
    _stopped_at_epoch(2, settings("resumed"), monkeypatch)
    assert _epochs(tmp_path / "resumed") == [0, 1]
    with (tmp_path / "resumed" / "history.csv").open("a") as f:  # killed after epoch 2's row, before its backup
        f.write("2,0.5,0.5,0.99,0.5\n")  # a val_accuracy no epoch reaches: it must not set the bar
    import train.callbacks as callbacks
    from train.resume import best_so_far as real_best

    bars = []  # the best so far the resumed run starts from: the planted row must not be it
    monkeypatch.setattr(callbacks, "best_so_far", lambda csv: bars.append(real_best(csv)) or bars[-1])
    trainer.run(settings("resumed"), resume=True)

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert (resumed / "history.csv").read_text() == (whole / "history.csv").read_text()
    import keras

    from train.resume import val_accuracies

    acc = val_accuracies(whole / "history.csv")
    # checked directly, not through which epoch is best: on some CPUs (a Zen 3) this tiny run stays at
    # chance, all epochs tie and the first is kept, which a bar taken from the planted row would not change
    assert bars == [max(acc[:2])]
    w, r = (keras.models.load_model(d / "model.keras", compile=False).get_weights() for d in (whole, resumed))
    assert all(np.array_equal(x, y) for x, y in zip(w, r))  # the same best epoch kept
    a, b = _backup_arrays(whole), _backup_arrays(resumed)
    assert a.keys() == b.keys()
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []


@pytest.mark.slow
def test_a_resumed_run_with_dropout_is_bit_identical_too(tmp_path, synthetic_dataset, cache_env, monkeypatch):
    """queue_net_lite (the default) has Dropout, whose masks come from a seed generator that
    Keras keeps out of weights files: the backup carries its state."""
    from train import trainer

    def settings(name):
        return trainer.TrainSettings(data=str(synthetic_dataset), out=str(tmp_path / name), arch="queue_net_lite",
                                     epochs=3, batch_size=16, steps_per_epoch=2, warmup_epochs=0)

    trainer.run(settings("whole"))
    _stopped_at_epoch(1, settings("resumed"), monkeypatch)
    trainer.run(settings("resumed"), resume=True)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert (resumed / "history.csv").read_text() == (whole / "history.csv").read_text()
    a, b = _backup_arrays(whole), _backup_arrays(resumed)
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []
    seeds = [json.loads((d / "backup" / "training_metadata.json").read_text())["seed_generators"] for d in (whole, resumed)]
    assert seeds[0] == seeds[1] and seeds[0][0][1] > 0  # the generator moved on, and the resumed one with it


def test_resumed_early_stopping_counts_on_from_the_history(tmp_path):
    """Patience runs from the best epoch in history.csv, not from the resume."""
    import keras

    from train.callbacks import early_stopping

    (tmp_path / "history.csv").write_text("epoch,val_accuracy\n0,0.5\n1,0.75\n2,0.625\n")
    stop = early_stopping(keras, 2, tmp_path / "history.csv")
    stop.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    stop.on_train_begin()
    assert (stop.best, stop.best_epoch, stop.wait) == (0.75, 1, 1)
    stop.on_epoch_end(3, {"val_accuracy": 0.7})
    assert stop.model.stop_training  # the uninterrupted run stops here too: two epochs without a new best
    fresh = early_stopping(keras, 2, None)
    fresh.on_train_begin()
    assert fresh.best is None and fresh.wait == 0


@pytest.mark.slow
def test_existing_run_without_resume_is_refused(tiny_run, synthetic_dataset):
    from tests.conftest import run_cli

    r = run_cli("train", "--data", synthetic_dataset, "--out", tiny_run, "--epochs", "1")
    assert r.returncode == 2 and "--resume" in r.stderr


@pytest.mark.slow
def test_init_from_starts_with_the_given_weights(tiny_run, synthetic_dataset, tmp_path, cache_env):
    from train.trainer import TrainSettings, run

    before = json.loads((tiny_run / "metrics.json").read_text())["accuracy"]
    m = run(TrainSettings(data=str(synthetic_dataset), out=str(tmp_path / "cycle2"), arch="mini_xception", epochs=1,
                          batch_size=16, lr=1e-7, warmup_epochs=0, augment=False,
                          init_from=str(tiny_run / "model.keras"), arch_options={"bn_momentum": 0.8}))
    assert m["accuracy"] >= before - 0.05  # a freshly initialised model would be near chance (1/7)


@pytest.mark.slow
def test_init_from_a_different_architecture_is_one_sentence(tiny_run, synthetic_dataset, tmp_path):
    from tests.conftest import run_cli

    r = run_cli("train", "--data", synthetic_dataset, "--out", tmp_path / "x", "--arch", "queue_net",
                "--init-from", tiny_run / "model.keras", "--epochs", "1")
    assert r.returncode == 2 and "layers match by name and shape" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_init_from_an_int8_tflite_recovers_the_model(tiny_run, tiny_converted, synthetic_dataset, cache_env):
    """The Keras weights are rebuilt from the int8 file (BN unfolded): same predictions as int8."""
    from edge.pipeline.classifier import Classifier
    from train.data import load_dataset
    from train.from_tflite import load_from_tflite

    ds = load_dataset(synthetic_dataset, progress=False)
    model = archs.build("mini_xception", 48, 7)
    load_from_tflite(model, tiny_converted / "model_int8.tflite", ds.splits["train"].x)
    x = ds.splits["val"].x
    rebuilt = model.predict(x.astype("float32")[..., None], verbose=0)
    int8 = Classifier(tiny_converted / "model_int8.tflite", calibrated=False).predict_many(x)
    assert (rebuilt.argmax(1) == int8.argmax(1)).mean() >= 0.95
    assert np.abs(rebuilt - int8).mean() < 0.05


@pytest.mark.slow
def test_init_from_a_tflite_of_another_architecture_is_one_sentence(tiny_converted, synthetic_dataset, tmp_path):
    from tests.conftest import run_cli

    r = run_cli("train", "--data", synthetic_dataset, "--out", tmp_path / "x", "--arch", "queue_net",
                "--init-from", tiny_converted / "model_int8.tflite", "--epochs", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "layers match by name and shape" in r.stderr, r.stderr


@pytest.mark.slow
def test_init_from_a_float16_tflite_is_one_sentence(tmp_path):
    """A float16 file keeps its weights as float16 constants dequantized at run time: there were
    no weight tensors to read, and the interpreter raised 'Tensor data is null'."""
    from edge.errors import UserError
    from convert.quantize import to_tflite
    from train.from_tflite import load_from_tflite

    model = archs.build("mini_xception", 48, 7)
    path = tmp_path / "model_float16.tflite"
    path.write_bytes(to_tflite(model, "float16"))
    with pytest.raises(UserError, match="model_float16.tflite is a float16 model; --init-from needs the int8"):
        load_from_tflite(archs.build("mini_xception", 48, 7), path, np.zeros((4, 48, 48), np.uint8))


@pytest.mark.slow
def test_a_related_architecture_starts_from_a_shipped_int8_file(shipped_model):
    """queue_net and queue_net_lite differ in one stem layer: either starts from the other's int8
    file (its card names its architecture), every other layer rebuilt from the file."""
    from edge.card import load_card
    from train.from_tflite import load_from_tflite
    from train.warm_start import start_from

    card = load_card(shipped_model)
    other = {"queue_net": "queue_net_lite", "queue_net_lite": "queue_net"}[card.architecture]
    size = card.input_size
    sample = np.random.default_rng(0).integers(0, 256, (64, size, size), dtype=np.uint8)
    rebuilt = archs.build(card.architecture, size, len(card.labels))
    load_from_tflite(rebuilt, shipped_model, sample)
    model = archs.build(other, size, len(card.labels))
    built = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    start_from(model, str(shipped_model), sample)
    changed = [layer.name for layer in model.layers if layer.weights and not all(
        np.array_equal(a, b) for a, b in zip(built[layer.name], layer.get_weights()))]
    assert len(changed) >= len([layer for layer in model.layers if layer.weights]) - 2
    for name in ("stem1_conv", "s2a_sep", "logits"):
        assert all(np.allclose(a, b) for a, b in zip(model.get_layer(name).get_weights(),
                                                     rebuilt.get_layer(name).get_weights())), name


@pytest.mark.parametrize("name,cls", [("adamw", "AdamW"), ("adam", "Adam"), ("sgd", "SGD")])
def test_optimizer_choice_builds_that_optimizer(name, cls):
    import keras

    from train.trainer import TrainSettings, _optimizer

    opt = _optimizer(keras, TrainSettings(data="d", out="o", optimizer=name), steps_per_epoch=10)
    assert type(opt).__name__ == cls
    if name == "sgd":
        assert opt.nesterov and opt.momentum == pytest.approx(0.9)
        assert opt.weight_decay == pytest.approx(5e-4)


def _stub_run(out, data, done=2, **saved):
    """A run folder as a killed `edge train` leaves it, without training: settings, data
    record and a backup that has finished `done` epochs."""
    from dataclasses import asdict

    from train.trainer import TrainSettings

    (out / "backup").mkdir(parents=True)
    (out / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": done, "batch": 0}))
    settings = asdict(TrainSettings(data=str(data), out=str(out), **{"epochs": 4, **saved}))
    (out / "train_settings.json").write_text(json.dumps(settings))
    (out / "data.json").write_text(json.dumps({"fingerprint": "0123456789abcdef01234567"}))
    (out / "command.txt").write_text("first\n")
    return out


@pytest.mark.parametrize("option, needle", [({"batch_size": 0}, "--batch-size must be at least 1"),
                                            ({"epochs": 0}, "--epochs must be at least 1"),
                                            ({"lr": 0.0}, "--lr must be a finite number above 0"),
                                            ({"lr": float("inf")}, "--lr must be a finite number above 0"),
                                            ({"mixup_alpha": -1.0}, "--mixup must be 0 (off) or a finite"),
                                            ({"mixup_alpha": float("inf")}, "--mixup must be 0 (off) or a finite"),
                                            ({"cutmix_alpha": -0.5}, "--cutmix must be 0 (off) or a finite"),
                                            ({"cutmix_alpha": float("nan")}, "--cutmix must be 0 (off) or a finite"),
                                            ({"init_from": "no/such.keras"}, "such.keras does not exist"),
                                            ({"init_from": __file__}, "is neither a .keras model nor"),
                                            ({"arch": "nope"}, "Unknown --arch 'nope'"),
                                            ({"votes": "v.csv"}, "v.csv is read only with --labels ferplus"),
                                            ({"folder_weight": 0.5}, "--folder-weight 0.5 is read only with --labels"),
                                            ({"labels": "ferplus", "votes": "no/v.csv"}, "v.csv does not exist"),
                                            ({"teacher_weight": 0.7}, "--teacher-weight 0.7 needs --teacher")])
def test_bad_options_are_refused_before_the_run_folder_is_made(tmp_path, option, needle):
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    out = tmp_path / "run"
    with pytest.raises(UserError, match=re.escape(needle)):
        run(TrainSettings(data=str(tmp_path / "not read yet"), out=str(out), **option))
    assert not out.exists()


@pytest.mark.parametrize("option, given, warning", [
    ({"epochs": 1, "warmup_epochs": 50}, {}, "--warmup-epochs 50 is not fewer than --epochs 1: the learning rate rises"),
    ({"schedule": "constant", "warmup_epochs": 5}, {"warmup_epochs": "--warmup-epochs"},
     "--warmup-epochs 5 does nothing with --schedule constant"),
    ({"arch": "seed_cnn"}, {"weights": "--weights"}, "--weights is read only by --arch mobilenetv2; seed_cnn starts")])
def test_options_that_do_nothing_are_a_warning_each(tmp_path, capsys, option, given, warning):
    """They passed silently, as if they shaped the run."""
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    with pytest.raises(UserError, match="does not exist"):  # warned before the data is read
        run(TrainSettings(data=str(tmp_path / "none"), out=str(tmp_path / "run"), **option), given=given)
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("WARNING")]
    assert len(warnings) == 1 and warnings[0].startswith(f"WARNING: {warning}"), warnings


@pytest.mark.parametrize("out", ["notes.txt", "notes.txt/run"])
def test_an_out_that_is_a_file_is_refused(tmp_path, out):
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    (tmp_path / "notes.txt").write_text("mine")
    where = "is a file" if out == "notes.txt" else f"lies under the file {tmp_path / 'notes.txt'}"
    with pytest.raises(UserError, match=re.escape(f"--out {tmp_path / out} {where}; pass a folder.")):
        run(TrainSettings(data=str(tmp_path / "not read yet"), out=str(tmp_path / out)))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def as_this_users_permissions() -> list[str]:
    """The command prefix that makes this user's file permissions count: root reads and writes
    anywhere, so as root the command runs without the capabilities that override them (setpriv)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("root reads and writes anywhere and setpriv, which drops that power, is absent")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


@pytest.mark.parametrize("made", [True, False])
def test_an_out_this_user_cannot_write_is_one_sentence_before_any_work(tmp_path, made):
    """An --out in a folder the user may not write (another user's, read-only) was a
    PermissionError traceback: at once for a new folder (its lock), and after the dataset had
    loaded and the model was built for an empty folder already there."""
    closed = tmp_path / "closed"
    closed.mkdir()
    out = closed / "run"
    if made:
        out.mkdir()
    target = out if made else closed
    target.chmod(0o555)
    try:
        r = subprocess.run([*as_this_users_permissions(), sys.executable, "-m", "edge", "train", "--data",
                            str(tmp_path / "not read yet"), "--out", str(out)], capture_output=True, text=True,
                           env={**os.environ, "QUEUE_MOOD_CACHE": str(tmp_path / "cache")}, timeout=300)
    finally:
        target.chmod(0o755)
    assert r.returncode == 2, r.stderr
    where = "" if made else f" (it would be made in {closed})"
    assert r.stderr.strip() == (f"error: --out {out} cannot be written by this user{where}: the folder is read-only "
                                "or another user's; choose a folder you can write to, or change its permissions.")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "convert"])
def test_an_out_in_a_folder_this_user_cannot_write_is_one_sentence(tmp_path, command):
    """An --out of this user's inside a folder it may not write (a shared runs/ folder of root's):
    the hold's lock, which goes beside --out, was a PermissionError traceback."""
    closed = tmp_path / "closed"
    out = closed / "run"
    out.mkdir(parents=True)
    closed.chmod(0o555)
    try:
        r = subprocess.run([*as_this_users_permissions(), sys.executable, "-m", "edge", command,
                            *(["--data", str(tmp_path / "not read yet")] if command == "train" else
                              [str(tmp_path / "model.keras"), "--data", str(tmp_path / "data")]), "--out", str(out)],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "QUEUE_MOOD_CACHE": str(tmp_path / "cache")})
    finally:
        closed.chmod(0o755)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"error: --out {out} cannot be used by this user: its lock file goes beside it, in "
                                f"{closed}, which is read-only or another user's (Permission denied); choose a folder "
                                "you can write to, or change its permissions.")


@pytest.mark.parametrize("out", ["run", "angry/run"])
def test_an_out_inside_the_dataset_is_refused_before_any_work(tmp_path, out):
    """A run folder made inside a folder of class folders was read as a class of its own by the
    next command on that dataset: the run's own --resume, edge eval and edge convert refused it."""
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    data = tmp_path / "data"
    with pytest.raises(UserError, match=re.escape(f"--out {data / out} lies inside --data {data}, where the next "
                                                  "command that reads the dataset would take its files for images "
                                                  "or classes; pass --out a folder outside it.")):
        run(TrainSettings(data=str(data), out=str(data / out)))
    assert not (data / out).exists()


@pytest.mark.parametrize("closed", ["image", "folder", "votes"])
def test_a_dataset_or_votes_file_this_user_cannot_read_is_one_sentence(tmp_path, closed):
    """A file of the dataset or the votes file that this user may not read (unpacked by root with
    a tight umask) was a PermissionError traceback."""
    from conftest import write_class_folders

    data = write_class_folders(tmp_path / "data", 2)
    votes = tmp_path / "votes.csv"
    votes.write_text("file,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,nf\n")
    path = {"votes": votes, "folder": data / "sad", "image": data / "sad" / "0001.png"}[closed]
    path.chmod(0)
    try:
        r = subprocess.run([*as_this_users_permissions(), sys.executable, "-m", "edge", "train", "--data", str(data),
                            "--out", str(tmp_path / "run"), "--labels", "ferplus", "--votes", str(votes)],
                           capture_output=True, text=True,
                           env={**os.environ, "QUEUE_MOOD_CACHE": str(tmp_path / "cache")}, timeout=300)
    finally:
        path.chmod(0o755)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"error: Votes file {path} cannot be read (Permission denied); make it readable by "
                                f"the user that runs edge (e.g. sudo chmod a+r {path})." if closed == "votes" else
                                f"error: Cannot read {path} (Permission denied); make the dataset readable by the "
                                f"user that runs edge (e.g. sudo chmod -R a+rX {data}).")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, name", [
    (("train", "--data", "", "--out", "run"), "--data"),
    (("train", "--data", "d", "--out", ""), "--out"),
    (("train", "--data", "d", "--out", "run", "--init-from", ""), "--init-from"),
    (("train", "--data", "d", "--out", "run", "--labels", "ferplus", "--votes", ""), "--votes"),
    (("train", "--data", "d", "--out", "run", "--teacher", " "), "--teacher"),
    (("eval", "--data", ""), "--data"),
    (("convert", "", "--data", "d", "--out", "o"), "MODEL"),  # was: the current folder's model.keras
    (("convert", "run", "--data", "", "--out", "o"), "--data"),
    (("convert", "run", "--data", "d", "--out", ""), "--out"),
    (("convert", "run", "--data", "d", "--out", "o", "--votes", ""), "--votes"),
    (("eval", "--data", "d", "--votes", ""), "--votes"),
    (("soup", "", "a", "b"), "OUT")])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch, args, name):
    """An unset shell variable (--out "$RUN") wrote a whole run into the current folder."""
    from click.testing import CliRunner

    from edge.cli import cli

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 2 and f"error: {name} is empty (an unset shell variable?); give a path" in r.output, r.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", ["-5", "99999999999"])
def test_a_seed_keras_cannot_take_is_refused_at_the_option(tmp_path, seed):
    """It was a ValueError traceback from keras.utils.set_random_seed, after the dataset had loaded."""
    from click.testing import CliRunner

    from edge.cli import cli

    r = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--seed", seed])
    assert r.exit_code == 2 and f"Invalid value for '--seed': {seed} is not in the range 0<=x<=4294967295" in r.output
    assert not (tmp_path / "run").exists()


def test_batch_size_zero_is_one_sentence_on_the_command_line(tmp_path, synthetic_dataset):
    from tests.conftest import run_cli

    r = run_cli("train", "--data", synthetic_dataset, "--out", tmp_path / "run", "--batch-size", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--batch-size must be at least 1" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_resume_refuses_options_that_differ_from_the_saved_ones(tmp_path, synthetic_dataset):
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    out = _stub_run(tmp_path / "run", synthetic_dataset)
    s = TrainSettings(data=str(synthetic_dataset), out=str(out), epochs=4, lr=0.5, batch_size=64, arch="queue_net")
    with pytest.raises(UserError, match=r"--lr 0\.5 \(saved: 0\.002\), --arch queue_net \(saved: "):
        run(s, resume=True, given={"data": "--data", "out": "--out", "lr": "--lr", "arch": "--arch",
                                   "batch_size": "--batch-size"})  # --batch-size 64 is the saved value
    assert (out / "command.txt").read_text() == "first\n"  # nothing recorded that was not used


def test_resume_takes_the_saved_votes_file_named_through_a_symlink(tmp_path, synthetic_dataset):
    """The run saves --votes resolved: the same file typed through a symlinked folder is not 'another value'."""
    from train.resume import resume_settings
    from train.settings import TrainSettings

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "votes.csv").write_text("file\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    out = _stub_run(tmp_path / "run", synthetic_dataset, labels="ferplus", votes=str(tmp_path / "real" / "votes.csv"))
    s = TrainSettings(data=str(synthetic_dataset), out=str(out), labels="ferplus", votes=str(tmp_path / "link" / "votes.csv"))
    settings, notes = resume_settings(s, {"out": "--out", "labels": "--labels", "votes": "--votes"})
    assert settings.votes == str(tmp_path / "real" / "votes.csv") and notes == []


def _moved_label_file_run(tmp_path, data, name):
    """A stub run that started on a votes or teacher file, which has moved since: (run, new place)."""
    from edge.card import sha256_file

    file = "votes.csv" if name == "votes" else "teacher_probs.npz"
    first, moved = tmp_path / file, tmp_path / "moved" / file
    first.write_text("file,votes\n")
    labels = {"kind": "ferplus", "votes_sha256": sha256_file(first)} if name == "votes" else {
        "kind": "folder", "teacher": {"models": [str(first)], "sha256": [sha256_file(first)]}}
    out = _stub_run(tmp_path / "run", data, **({"labels": "ferplus"} if name == "votes" else {}), **{name: str(first)})
    (out / "data.json").write_text(json.dumps({"fingerprint": "0123456789abcdef01234567", "labels": labels}))
    moved.parent.mkdir()
    first.rename(moved)
    return out, moved


@pytest.mark.parametrize("name", ["votes", "teacher"])
def test_resume_finds_a_moved_votes_or_teacher_file_by_its_bytes(tmp_path, synthetic_dataset, cache_env, name):
    """The votes or teacher file moved (as --data may): each of the three refusals used to send
    the user to another (pass --votes; --votes needs --labels ferplus; --votes differs)."""
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    out, moved = _moved_label_file_run(tmp_path, synthetic_dataset, name)
    base = {"data": str(synthetic_dataset), "out": str(out)}
    with pytest.raises(UserError, match=re.escape(f"--{name} {tmp_path / moved.name}, which {out} started with, "
                                                  f"does not exist; if it moved, resume with --{name} and its new place")):
        run(TrainSettings(**base), resume=True, given={"data": "--data", "out": "--out"})
    # The same bytes at the new place, without repeating --labels: the options pass, the (stub) images do not.
    with pytest.raises(UserError, match="differ from those .* started on"):
        run(TrainSettings(**base, **{name: str(moved)}), resume=True,
            given={"data": "--data", "out": "--out", name: f"--{name}"})
    moved.write_text("other bytes\n")
    with pytest.raises(UserError, match=re.escape(f"--{name} {moved} is not the file {out} started with")):
        run(TrainSettings(**base, **{name: str(moved)}), resume=True,
            given={"data": "--data", "out": "--out", name: f"--{name}"})
    assert (out / "command.txt").read_text() == "first\n"


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path, synthetic_dataset):
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    out = _stub_run(tmp_path / "run", synthetic_dataset, done=3)
    with pytest.raises(UserError, match="--epochs 2 is fewer than the 3 epochs"):
        run(TrainSettings(data=str(synthetic_dataset), out=str(out), epochs=2), resume=True,
            given={"epochs": "--epochs"})


def test_resume_without_a_backup_is_refused_and_overwrites_nothing(tmp_path, synthetic_dataset):
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    out = _stub_run(tmp_path / "soup", synthetic_dataset)
    (out / "backup" / "training_metadata.json").unlink()
    (out / "backup").rmdir()
    (out / "model.keras").write_bytes(b"a finished model")
    with pytest.raises(UserError, match="no backup/; the run finished or was never started"):
        run(TrainSettings(data=str(synthetic_dataset), out=str(out)), resume=True)
    assert (out / "model.keras").read_bytes() == b"a finished model"


def test_resume_refuses_a_changed_dataset_and_keeps_the_first_record(tmp_path, synthetic_dataset, cache_env):
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    out = _stub_run(tmp_path / "run", synthetic_dataset)  # data.json holds another fingerprint
    before = (out / "data.json").read_text()
    with pytest.raises(UserError, match="differ from those .* started on"):
        run(TrainSettings(data=str(synthetic_dataset), out=str(out)), resume=True)
    assert (out / "data.json").read_text() == before


@pytest.mark.slow
def test_a_csv_run_names_its_skipped_rows_as_rows(tmp_path, cache_env, capsys):
    """The note spoke of "file(s) ... outside the class folders" for rows of a CSV."""
    from tests.conftest import pattern_image
    from tests.test_data import _write_csv
    from train.trainer import TrainSettings, run

    rng = np.random.default_rng(0)
    rows = [[c, " ".join(map(str, pattern_image(c, rng).ravel())), usage]
            for usage in ("Training", "Training", "PublicTest") for c in range(7)]
    data = _write_csv(tmp_path / "fer2013.csv", [*rows, [0, "1 2 3 4", "Training"]])
    run(TrainSettings(data=str(data), out=str(tmp_path / "run"), arch="seed_cnn", epochs=1, batch_size=7,
                      augment=False))
    assert (f"1 row(s) of the CSV were left out (unparseable, or not a 48x48 image); they are listed, each with why, "
            f"under \"skipped\" in {tmp_path / 'run' / 'data.json'}.") in capsys.readouterr().out


@pytest.mark.slow
def test_a_diverged_run_stops_at_its_first_nan_loss_and_keeps_its_folder_as_before(tmp_path, synthetic_dataset,
                                                                                   cache_env):
    """A NaN loss used to train on to a normal report with "loss": NaN in metrics.json."""
    from edge.errors import UserError
    from train.resume import never_trained
    from train.trainer import TrainSettings, run

    out = tmp_path / "run"
    s = TrainSettings(data=str(synthetic_dataset), out=str(out), arch="seed_cnn", epochs=2, batch_size=16,
                      steps_per_epoch=2, lr=1e12, optimizer="sgd", augment=False)
    with pytest.raises(UserError, match=r"Training diverged in epoch 1 \(the loss became nan\); nothing was kept, so "
                                        r"run the command again with a lower --lr than 1e\+12, e\.g\. 1e\+11\."):
        run(s)
    assert never_trained(out) and not (out / "metrics.json").exists()  # the same command with a lower --lr starts over
    assert "nan" not in (out / "history.csv").read_text()


def test_divergence_after_kept_epochs_points_at_them(tmp_path):
    """A NaN at an epoch's end is caught before the callbacks after it write that epoch."""
    import math

    import keras

    from train.callbacks import Diverged, diverged_error, stop_on_divergence
    from train.trainer import TrainSettings

    cb = stop_on_divergence(keras)
    cb.on_epoch_begin(2)
    cb.on_train_batch_end(0, {"loss": 1.5})
    with pytest.raises(Diverged) as exc:
        cb.on_epoch_end(2, {"loss": 1.5, "val_loss": math.inf})
    out = _stub_run(tmp_path / "run", tmp_path, done=2)
    err = diverged_error(TrainSettings(data="d", out=str(out), lr=0.5), out, *exc.value.args)
    assert str(err) == (f"Training diverged in epoch 3 (the loss became inf); {out} keeps the 2 epoch(s) before it, "
                        f"so train a new --out (--init-from {out / 'model.keras'} starts from their best) with a lower "
                        "--lr than 0.5, e.g. 0.05.")


def test_reports_write_nan_as_null():
    """JSON has no NaN: a model that outputs NaN gave metrics.json and `edge eval --json` a "loss": NaN."""
    from train.report import json_text

    assert json.loads(json_text({"loss": float("nan"), "ece": [np.float64("inf"), 0.5]})) == {"loss": None,
                                                                                               "ece": [None, 0.5]}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, synthetic_dataset, cache_env):
    """Two quick epochs (two batches each) with the backup left for --resume."""
    from train.trainer import TrainSettings, run

    out = tmp_path_factory.mktemp("short") / "run"
    run(TrainSettings(data=str(synthetic_dataset), out=str(out), arch="mini_xception", epochs=2, batch_size=16,
                      steps_per_epoch=2, warmup_epochs=0, augment=False))
    return out


@pytest.mark.slow
def test_resume_lengthens_a_run_from_another_working_folder(tmp_path, synthetic_dataset, cache_env, monkeypatch, capsys):
    import shutil

    from train.trainer import TrainSettings, run

    data = shutil.copytree(synthetic_dataset, tmp_path / "work" / "data")
    (data / "train" / "sad" / "empty.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path / "work")
    short = dict(arch="mini_xception", batch_size=16, steps_per_epoch=2, warmup_epochs=0, augment=False)
    run(TrainSettings(data="data", out="run", epochs=1, **short), command=["edge", "train"])
    out = tmp_path / "work" / "run"
    assert "1 file(s) were left out (unreadable, not images" in capsys.readouterr().out
    assert json.loads((out / "train_settings.json").read_text())["data"] == str(data)
    first_data, first_seconds = (out / "data.json").read_text(), json.loads((out / "timing.json").read_text())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    run(TrainSettings(data=str(data), out=str(out), epochs=2, **short), resume=True, command=["edge", "train"],
        given={"data": "--data", "out": "--out", "epochs": "--epochs"})
    assert _epochs(out) == [0, 1]
    lines = (out / "command.txt").read_text().splitlines()
    assert f"(in {tmp_path / 'work'})" in lines[0] and f"(in {tmp_path / 'elsewhere'})" in lines[1]
    assert "--epochs 2 replaces the saved 1" in lines[1]
    assert json.loads((out / "train_settings.json").read_text())["epochs"] == 2
    assert (out / "data.json").read_text() == first_data
    total = json.loads((out / "metrics.json").read_text())["train_seconds"]
    assert total > first_seconds["train_seconds"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("keep_previous", [True, False])
def test_a_backup_damaged_by_a_crash(short_run, synthetic_dataset, tmp_path, keep_previous):
    """The previous epoch's copy takes over; with none left, one sentence."""
    import shutil

    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    out = shutil.copytree(short_run, tmp_path / "run")
    weights = out / "backup" / "latest.weights.h5"
    assert (out / "backup" / "latest.weights.h5.bkp").exists()
    weights.write_bytes(weights.read_bytes()[:1000])
    if not keep_previous:
        (out / "backup" / "latest.weights.h5.bkp").unlink()
        with pytest.raises(UserError, match="backup cannot be read .*damaged by a crash"):
            run(TrainSettings(data=str(synthetic_dataset), out=str(out), epochs=3), resume=True,
                given={"epochs": "--epochs"})  # the run has finished its 2: without more, nothing to resume
    else:
        run(TrainSettings(data=str(synthetic_dataset), out=str(out), epochs=3), resume=True,
            given={"epochs": "--epochs"})
        assert _epochs(out) == [0, 1, 2]  # epoch 1 again, from the previous epoch's state; its first row trimmed


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["empty_metadata", "weights_an_epoch_ahead"])
def test_a_last_backup_that_cannot_be_used_gives_way_to_the_one_before(short_run, synthetic_dataset, tmp_path,
                                                                        capsys, damage):
    """empty_metadata: killed or out of disk while the metadata was rewritten in place (as Keras
    writes it). weights_an_epoch_ahead: killed between the weights and the metadata, which still
    names the epoch before; resuming from it would train that epoch twice."""
    import shutil

    from train.trainer import TrainSettings, run

    out = shutil.copytree(short_run, tmp_path / "run")
    meta = out / "backup" / "training_metadata.json"
    if damage == "empty_metadata":
        meta.write_text("")
    else:
        shutil.copy(meta.with_name(meta.name + ".bkp"), meta)
    run(TrainSettings(data=str(synthetic_dataset), out=str(out), epochs=3), resume=True, given={"epochs": "--epochs"})
    said = capsys.readouterr().out
    assert "resuming from the one before it, so epoch 2 trains again" in said, said
    if damage == "weights_an_epoch_ahead":
        assert "4 optimizer steps on, its metadata says 2" in said
    assert _epochs(out) == [0, 1, 2]
    assert json.loads(meta.read_text())["iterations"] == 3 * 2  # each epoch trained once: the schedule in step
    v = json.loads((out / "versions.json").read_text())
    assert len(v["resumed_sessions"]) == 1


class _Killed(BaseException):
    """A SIGKILL at one point of the backup's save: nothing after it runs."""


def _opens_but_fails_mid_load(good, dest):
    """`good`'s weights file as a kill during HDF5's closing metadata flush can leave it: it
    opens, and a group fails only while Keras is loading (here a dangling link; in CI an h5py
    RuntimeError). Keras then leaves the file open, which the fallback must not trip over."""
    import shutil

    import h5py

    shutil.copyfile(good, dest)
    with h5py.File(dest, "a") as f:
        del f["layers/dense_1/vars"]
        f["layers/dense_1/vars"] = h5py.SoftLink("/nowhere")


def _tiny_backup(tmp_path, fit_epochs):
    """A Dense model, its backup callback, and its weights after each of `fit_epochs` epochs."""
    from train import callbacks
    from train.keras_io import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.2),
                              keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    history = tmp_path / "history.csv"
    history.write_text("epoch,val_accuracy\n" + "".join(f"{e},0.5\n" for e in range(3)))
    cb = callbacks.backup_callback(keras, tmp_path / "backup", history)
    cb.set_model(model)
    cb.set_params({"steps": 2})
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 3), "float32")
    saved = [[w.copy() for w in model.get_weights()]]
    for epoch in range(fit_epochs):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
        saved.append([w.copy() for w in model.get_weights()])
        cb.on_epoch_end(epoch)
    return cb, model, saved


def _resumed(tmp_path):
    """A fresh model whose backup callback has restored the backup; its epoch and weights."""
    import warnings

    cb, model, _ = _tiny_backup(tmp_path, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cb.on_train_begin()
    return model._initial_epoch, model.get_weights()


def test_a_backup_whose_last_weights_fail_mid_load_resumes_from_the_one_before(tmp_path, capsys):
    import shutil

    cb, _, saved = _tiny_backup(tmp_path, 2)
    weights = tmp_path / "backup" / "latest.weights.h5"
    _opens_but_fails_mid_load(f"{weights}.bkp", tmp_path / "damaged.weights.h5")
    shutil.copyfile(tmp_path / "damaged.weights.h5", weights)
    epoch, restored = _resumed(tmp_path)
    assert "resuming from the one before it, so epoch 2 trains again" in capsys.readouterr().out
    assert epoch == 1 and all(np.array_equal(a, b) for a, b in zip(restored, saved[1]))


@pytest.mark.slow
def test_a_kill_at_any_point_of_a_backup_leaves_one_to_resume_from(tmp_path, monkeypatch):
    """Kill the third epoch's save at each of its writes in turn (a copy or a weights file cut
    short, a rename or the metadata not done): the resume finds the second epoch's pair or the
    third's, whole, and never says the state is damaged."""
    import keras

    from edge import files

    point = 0
    while True:
        run_dir = tmp_path / str(point)
        run_dir.mkdir()
        cb, model, saved = _tiny_backup(run_dir, 2)
        model.fit(np.ones((8, 4), "float32"), np.zeros((8, 3), "float32"), batch_size=4, epochs=1, verbose=0,
                  shuffle=False)
        saved.append([w.copy() for w in model.get_weights()])
        writes = [0]

        def step():
            writes[0] += 1
            return writes[0] == point + 1

        with monkeypatch.context() as m:
            write_all, replace, save_weights = files.write_all, os.replace, keras.Model.save_weights

            def cut_write(fd, data):  # a copy or the metadata cut short in its temporary file
                if step():
                    os.write(fd, data[:1000])
                    raise _Killed
                return write_all(fd, data)

            def cut_replace(src, dst, *a, **kw):
                if step():
                    raise _Killed
                return replace(src, dst, *a, **kw)

            def cut_weights(self, filepath, *a, **kw):
                if step():
                    save_weights(self, tmp_path / "whole.weights.h5")
                    _opens_but_fails_mid_load(tmp_path / "whole.weights.h5", filepath)
                    raise _Killed
                return save_weights(self, filepath, *a, **kw)

            m.setattr(files, "write_all", cut_write)
            m.setattr(os, "replace", cut_replace)
            m.setattr(keras.Model, "save_weights", cut_weights)
            try:
                cb.on_epoch_end(2)
                killed = False
            except _Killed:
                killed = True
        epoch, restored = _resumed(run_dir)
        assert epoch in (2, 3), (point, epoch)
        assert all(np.array_equal(a, b) for a, b in zip(restored, saved[epoch])), point
        if not killed:
            break
        point += 1
    assert point >= 4  # every write of the save was cut once


@pytest.mark.slow
def test_a_crash_while_saving_the_best_model_keeps_the_previous_one(short_run, synthetic_dataset, tmp_path,
                                                                    monkeypatch):
    import shutil

    import keras

    from train.trainer import TrainSettings, run

    out = shutil.copytree(short_run, tmp_path / "run")
    (out / "history.csv").write_text("epoch,val_accuracy\n0,-1\n")  # so the next epoch is saved as the best
    good = (out / "model.keras").read_bytes()

    def crash(self, path, *args, **kwargs):
        open(path, "wb").write(good[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        run(TrainSettings(data=str(synthetic_dataset), out=str(out), epochs=3), resume=True,
            given={"epochs": "--epochs"})
    assert (out / "model.keras").read_bytes() == good


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_ctrl_c_names_the_resume_command(tmp_path, synthetic_dataset, cache_env, sig):
    """SIGTERM (systemd, kill) and SIGHUP ended the run with 143 and 129 and no word of how to continue."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edge.cli", "train", "--data", str(synthetic_dataset), "--out", str(out),
           "--arch", "mini_xception", "--epochs", "50", "--batch-size", "16", "--steps-per-epoch", "2"]
    # A shell starts background jobs with SIGINT ignored (nohup: SIGHUP), and Python keeps it so:
    # undo that, or the test fails whenever the suite itself runs in the background.
    proc = subprocess.Popen(cmd, env={**os.environ, "QUEUE_MOOD_CACHE": str(cache_env)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not (out / "backup").exists():
        time.sleep(0.2)
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + sig and "Traceback" not in err, err[-2000:]
    by = "" if sig == signal.SIGINT else f" by {sig.name}"
    assert f"Interrupted{by}; continue it with: edge train --data {synthetic_dataset} --out {out} --resume" in err


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("left", ["nothing", "first_row", "first_row_and_half_a_backup", "a_cut_short_write"])
def test_a_run_stopped_before_its_first_backup_starts_again(tmp_path, resume, left):
    """Killed (or out of disk) before the first epoch's backup was whole: the command starts
    over, with or without --resume (a supervisor that always resumes is not stuck)."""
    from train.trainer import TrainSettings, run

    out = _stub_run(tmp_path / "run", tmp_path / "data")
    (out / "backup" / "training_metadata.json").unlink()
    if left == "first_row_and_half_a_backup":  # the first epoch's backup cut short
        (out / "backup" / "latest.weights.h5").write_bytes(b"half the weights")
    else:
        (out / "backup").rmdir()
    if left.startswith("first_row"):  # the first epoch's row and best model written, not its backup
        (out / "history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.0,0.5,1.0\n")
        (out / "model.partial.keras").write_bytes(b"half a model")
    else:
        (out / "history.csv").write_text("")  # CSVLogger opens it when training starts
    if left == "a_cut_short_write":  # killed (or out of disk) while versions.json was written
        (out / "versions.json.tmp").write_text('{"tensorflow": "2.')
    from edge.errors import UserError

    with pytest.raises(UserError, match="Dataset path .* does not exist"):  # past the run folder check
        run(TrainSettings(data=str(tmp_path / "data"), out=str(out)), resume=resume)


@pytest.mark.slow
def test_a_run_killed_before_its_first_backup_trains_each_epoch_once(tmp_path, synthetic_dataset, cache_env, capsys):
    import shutil

    from train.trainer import TrainSettings, run

    s = TrainSettings(data=str(synthetic_dataset), out=str(tmp_path / "run"), arch="mini_xception", epochs=1,
                      batch_size=16, steps_per_epoch=2, warmup_epochs=0, augment=False)
    out = _stub_run(tmp_path / "run", synthetic_dataset, epochs=1, arch="mini_xception", batch_size=16,
                    steps_per_epoch=2, warmup_epochs=0, augment=False)
    shutil.rmtree(out / "backup")
    (out / "history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.0,0.99,1.0\n")
    (out / "timing.json").write_text('{"train_seconds": 1000.0}')
    run(s, resume=True)
    assert "starting it from the first epoch" in capsys.readouterr().out
    assert _epochs(out) == [0]  # no second epoch 0 appended to the interrupted one
    assert json.loads((out / "metrics.json").read_text())["train_seconds"] < 1000


@pytest.mark.slow
def test_the_training_step_is_traced_once(tmp_path, synthetic_dataset, cache_env, monkeypatch):
    """A variable first made inside fit's first step (a metric's, the optimizer's) makes TF trace
    that step a second time: about 7 s of every training here, tests included."""
    import keras

    from train.trainer import TrainSettings, run

    traced = []
    step = keras.Model.train_step
    monkeypatch.setattr(keras.Model, "train_step", lambda self, data: traced.append(1) or step(self, data))
    run(TrainSettings(data=str(synthetic_dataset), out=str(tmp_path / "run"), arch="mini_xception", epochs=2,
                      batch_size=16, steps_per_epoch=2, warmup_epochs=0, augment=False))
    assert _epochs(tmp_path / "run") == [0, 1]
    assert len(traced) == 1


def test_resume_refuses_a_flag_by_what_it_means(tmp_path, synthetic_dataset):
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    out = _stub_run(tmp_path / "run", synthetic_dataset)
    with pytest.raises(UserError, match=re.escape("--no-augment (the run was started without it) differ")):
        run(TrainSettings(data=str(synthetic_dataset), out=str(out), augment=False), resume=True,
            given={"augment": "--no-augment"})


def _finished_stub(tmp_path, data, accs, **saved):
    out = _stub_run(tmp_path / "run", data, done=len(accs), **saved)
    rows = "".join(f"{i},0.5,1.0,{a},1.0\n" for i, a in enumerate(accs))
    (out / "history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n" + rows)
    (out / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "macro_f1": 0.4}))
    return out


@pytest.mark.parametrize("accs, saved, given, needle", [
    ([0.5, 0.6, 0.7, 0.8], {}, {}, "all 4 epochs trained"),
    ([0.5, 0.7, 0.6, 0.6], {"epochs": 10, "patience": 2}, {}, "stopped early after epoch 4"),
    ([0.5, 0.7, 0.6, 0.6], {"epochs": 10, "patience": 2}, {"epochs": 20}, "and --patience"),
])
def test_resume_of_a_finished_run_says_so_and_trains_nothing(tmp_path, synthetic_dataset, capsys, accs, saved,
                                                              given, needle):
    from train.trainer import TrainSettings, run

    out = _finished_stub(tmp_path, synthetic_dataset, accs, **saved)
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    s = TrainSettings(data=str(synthetic_dataset), out=str(out), **given)
    assert run(s, resume=True, given={k: "--" + k for k in given}) == {"accuracy": 0.5, "macro_f1": 0.4}
    said = capsys.readouterr().out
    assert "has finished" in said and needle in said and said.count("\n") == 1, said
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == before


@pytest.mark.parametrize("given", [{"epochs": 8}, {"epochs": 10, "patience": 5}])
def test_resume_with_more_epochs_or_patience_trains_on(tmp_path, synthetic_dataset, given):
    """As the README says: more --epochs lengthen a run that ran all its epochs; after an early
    stop, a larger --patience with them."""
    from edge.errors import UserError
    from train.trainer import TrainSettings, run

    accs = [0.5, 0.7, 0.6, 0.6] if "patience" in given else [0.5, 0.6, 0.7, 0.8]
    out = _finished_stub(tmp_path, synthetic_dataset, accs, epochs=4 if "patience" not in given else 10, patience=2)
    with pytest.raises(UserError, match="differ from those .* started on"):  # past the finished check: it reads the data
        run(TrainSettings(data=str(synthetic_dataset), out=str(out), **given), resume=True,
            given={k: "--" + k for k in given})


def test_timing_survives_a_full_disk_and_a_damaged_file(tmp_path, monkeypatch, capsys):
    import errno
    import os

    import keras

    from edge import files
    from train.callbacks import timing_callback

    path = tmp_path / "timing.json"
    path.write_text('{"train_seconds": 12.0}')

    def full_disk(fd, data):
        os.write(fd, data[:3])  # part of it, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    timing = timing_callback(keras, path)
    timing.on_train_begin()
    monkeypatch.setattr(files, "write_all", full_disk)
    with pytest.raises(OSError):
        timing.on_epoch_end(0)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"train_seconds": 12.0}  # the last whole record kept
    path.write_text("")  # as a version that rewrote it in place left it
    again = timing_callback(keras, path)
    again.on_train_begin()  # no traceback
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "timing.json cannot be read" in err
    again.on_epoch_end(0)
    assert json.loads(path.read_text())["train_seconds"] < 5


def test_versions_keep_the_first_session_and_add_each_resumed_one(tmp_path):
    from train.provenance import record_versions

    path = tmp_path / "versions.json"
    record_versions(path, resumed=False)
    first = json.loads(path.read_text())
    path.write_text(json.dumps({**first, "tensorflow": "an older build"}))
    record_versions(path, resumed=True)
    record_versions(path, resumed=True)
    v = json.loads(path.read_text())
    assert v["tensorflow"] == "an older build" and len(v["resumed_sessions"]) == 2
    assert v["resumed_sessions"][0]["tensorflow"] == first["tensorflow"]


def test_versions_name_the_code_and_the_image_library(tmp_path):
    """Augmentation, architectures and image decoding are code and OpenCV, not settings: the
    record names the commit (and whether tracked files differed from it) and OpenCV's version."""
    from pathlib import Path

    import cv2

    from train.provenance import record_versions

    record_versions(tmp_path / "versions.json", resumed=False)
    v = json.loads((tmp_path / "versions.json").read_text())
    assert v["opencv"] == cv2.__version__ and "version" in v["queue_mood"]
    repo = Path(__file__).resolve().parents[1]
    git = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True)
    if git.returncode or Path(git.stdout.split()[0]).resolve() != repo:
        pytest.skip(f"{repo} is not a git checkout")
    assert v["queue_mood"]["commit"] == git.stdout.split()[1]
    assert isinstance(v["queue_mood"]["modified"], bool)


def test_a_report_cut_short_leaves_no_metrics_json(tmp_path, monkeypatch):
    """metrics.json comes last: its presence says the figures are there too (and --resume
    takes it to mean the run finished)."""
    from types import SimpleNamespace

    from train import report

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "confusion_figure", killed)
    y = np.arange(14) % 7
    va = SimpleNamespace(names=[f"{i}.png" for i in range(14)], y=y)
    tr = SimpleNamespace(x=np.zeros((14, 48, 48), np.uint8), y=y, counts=lambda: np.bincount(y, minlength=7))
    model = SimpleNamespace(name="m", count_params=lambda: 1)
    ds = SimpleNamespace(source=str(tmp_path / "data"), skipped=[])
    with pytest.raises(KeyboardInterrupt):
        report.write_run_report(tmp_path, model, va, np.eye(7)[y], tr, ds, np.ones(7), 1.0, "val")
    assert not (tmp_path / "metrics.json").exists()


def test_history_with_a_torn_last_row_reads_the_whole_ones_and_a_bad_middle_row_is_one_sentence(tmp_path):
    from edge.errors import UserError
    from train.resume import val_accuracies

    h = tmp_path / "history.csv"
    head = "epoch,accuracy,loss,val_accuracy,val_loss\n"
    h.write_text(head + "0,0.3,1.9,0.35,1.8\n1,0.4,1.7,0.41,1.6\n2,0.45,1.")  # a crash while writing epoch 2
    assert val_accuracies(h) == [0.35, 0.41]
    h.write_bytes((head + "0,0.3,1.9,0.35,1.8\n").encode() + b"\0" * 40)  # ext4 left NUL bytes there
    assert val_accuracies(h) == [0.35]
    h.write_text(head + "0,0.3,1.9,0.35,1.8\nxx\n2,0.45,1.5,0.47,1.4\n")
    with pytest.raises(UserError, match="line 3 is not an epoch's row"):
        val_accuracies(h)


def train_until_built(monkeypatch, data: str, out: str) -> None:
    """Run `edge train` up to where the model would be built: its notes on the data come before."""
    from train.trainer import TrainSettings, run

    class Built(Exception):
        pass

    def build(*args, **kwargs):
        raise Built

    monkeypatch.setattr(archs, "build", build)
    with pytest.raises(Built):
        run(TrainSettings(data=data, out=out, epochs=1, batch_size=4))


def test_a_class_no_training_target_has_is_named(tmp_path, cache_env, capsys, monkeypatch):
    """A dataset without some class folders trains a model of all seven outputs; the classes it
    cannot learn are named before training, not discovered on the Pi."""
    from tests.conftest import write_class_folders
    from train.trainer import unlearned_classes

    targets = np.eye(len(LABELS))[[0, 3, 4, 5, 6]]
    assert unlearned_classes(targets) == ["disgust", "fear"]
    soft = targets.copy()
    soft[0, 1] = 0.1  # a vote for disgust: the class is in the targets
    assert unlearned_classes(soft) == ["fear"]
    data = write_class_folders(tmp_path / "five", 10, seed=6, names=[n for n in LABELS if n not in ("disgust", "fear")])
    train_until_built(monkeypatch, str(data), str(tmp_path / "r"))
    err = capsys.readouterr().err
    assert "WARNING: no training image of disgust, fear in" in err and "cannot learn those classes" in err


@pytest.mark.parametrize("held_out", [False, True])
def test_training_names_the_classes_its_validation_images_lack(tmp_path, monkeypatch, capsys, cache_env, held_out):
    """A val/ without disgust (or a class too small to have 10% of it held out) showed only support 0 in
    metrics.json; it is named before training, with the folder to add images to."""
    from tests.conftest import write_class_folders

    data = tmp_path / "ds"
    if held_out:  # class folders only: 10% of each class is held out, none of 2 disgust images
        write_class_folders(data, 10, seed=6, names=[n for n in LABELS if n != "disgust"])
        write_class_folders(data, 2, seed=7, names=["disgust"])
        want = (f"WARNING: the validation images (stratified 10% of train, seed 1234) have no image of disgust, so the "
                f"report scores it on nothing (support 0); add images of disgust to {data} to measure it.")
    else:
        write_class_folders(data / "train", 4, seed=6)
        write_class_folders(data / "val", 2, seed=7, names=[n for n in LABELS if n != "disgust"])
        want = (f"WARNING: {data / 'val'} has no image of disgust, so the report scores it on nothing (support 0); "
                f"add images of disgust to {data / 'val'} to measure it.")
    train_until_built(monkeypatch, str(data), str(tmp_path / "r"))
    err = capsys.readouterr().err.splitlines()
    assert want in err and "no training image" not in "".join(err)


def test_training_on_classes_too_small_to_hold_any_image_out_says_so(tmp_path, cache_env):
    """10% of 2 images a class rounds to none: no validation image at all is one sentence."""
    from edge.errors import UserError
    from tests.conftest import write_class_folders
    from train.trainer import TrainSettings, run

    write_class_folders(tmp_path / "ds", 2)
    with pytest.raises(UserError, match="gives 14 training and 0 validation images; both must be non-empty"):
        run(TrainSettings(data=str(tmp_path / "ds"), out=str(tmp_path / "r"), epochs=1, batch_size=4))


@pytest.mark.parametrize("finished_epoch", [False, True])
def test_a_full_disk_while_training_is_one_sentence_that_says_how_to_go_on(tmp_path, monkeypatch, finished_epoch):
    """Keras's checkpoint writes raise OSError: a full or read-only disk was a traceback."""
    import errno

    from click.testing import CliRunner

    from edge.cli import cli
    from train import trainer

    out = tmp_path / "run"

    def full_disk(s, **kw):
        (out / "backup").mkdir(parents=True) if finished_epoch else out.mkdir()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer, "run", full_disk)
    r = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--out", str(out)])
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert line.startswith(f"error: Cannot write into {out} (No space left on device); free some space there, then ")
    assert "\n" not in line and "Traceback" not in line
    if finished_epoch:
        assert line.endswith(f"continue it with: edge train --data {tmp_path} --out {out} --resume.")
    else:
        assert line.endswith("run the same command again (no epoch had finished).")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_that_a_library_turned_into_its_own_error_still_ends_as_an_interruption(
        tmp_path, monkeypatch, request, sig):
    """SIGTERM during Keras's save_weights: numpy turned the KeyboardInterrupt into a TypeError,
    and the run ended with a traceback and status 1 instead of 143 and the resume command."""
    from click.testing import CliRunner

    from edge.cli import cli
    from train import trainer

    out = tmp_path / "run"
    if sig == signal.SIGHUP:  # as at a terminal: under nohup (as CI runs) it is ignored, and edge train keeps it so
        was = signal.signal(signal.SIGHUP, signal.SIG_DFL)
        request.addfinalizer(lambda: signal.signal(signal.SIGHUP, was))

    def signalled_mid_save(s, **kw):
        (out / "backup").mkdir(parents=True)
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises before this ends
        except KeyboardInterrupt:
            raise TypeError("Variable.__array__() got an unexpected keyword argument 'copy'") from None
        raise AssertionError("the stop signal's handler did not raise")

    monkeypatch.setattr(trainer, "run", signalled_mid_save)
    r = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--out", str(out)])
    assert r.exit_code == 128 + sig, r.output
    assert r.output.strip() == (f"Interrupted by {sig.name}; continue it with: edge train --data {tmp_path} "
                                f"--out {out} --resume")
    assert "Traceback" not in r.output


def test_an_error_without_a_stop_signal_is_not_called_an_interruption(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edge.cli import cli
    from train import trainer

    def broken(s, **kw):
        raise TypeError("a real bug")

    monkeypatch.setattr(trainer, "run", broken)
    r = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert r.exit_code != 0 and "Interrupted" not in r.output
    assert isinstance(r.exception, TypeError)


def test_training_batches_are_cut_and_mixed_as_asked():
    """--cutmix and --mixup reach the batches the model trains on, the same for the same seed."""
    import keras

    from train.data import FER2013_SIZE, Split
    from train.trainer import TrainSettings, _batches

    n, side = 64, FER2013_SIZE
    x = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None] * 3, side * side, 1).reshape(n, side, side)
    split = Split(x, np.arange(n) % 7, [f"{i}.png" for i in range(n)])
    targets = np.eye(7, dtype=np.float32)[split.y]
    Batches = _batches(keras)

    def levels(**kw):
        s = TrainSettings(data="d", out="o", batch_size=16, augment=False, **kw)
        bx, by, _ = Batches(split, targets, s, np.ones(7, np.float32))[0]
        return [len(np.unique(img)) for img in bx[..., 0]], by

    plain, plain_y = levels()
    assert set(plain) == {1} and set(np.unique(plain_y)) == {0, 1}
    cut, cut_y = levels(cutmix_alpha=1.0)
    assert max(cut) == 2 and np.allclose(cut_y.sum(1), 1) and (cut_y.max(1) < 1).any()
    assert np.array_equal(levels(cutmix_alpha=1.0)[1], cut_y)
    blended, blended_y = levels(mixup_alpha=0.4)
    assert set(blended) == {1} and (blended_y.max(1) < 1).any()


def test_a_run_folder_another_training_is_writing_is_refused(tmp_path):
    """Found in a review: a second `--resume` while the first run still trained wrote the same
    epochs twice into history.csv, checkpoints and model. The hold is the one convert takes."""
    from edge.errors import UserError
    from edge.files import held_by_this_process
    from train.trainer import TrainSettings, run

    out = tmp_path / "run"
    with held_by_this_process(out), pytest.raises(UserError, match=r"run is in use: another process is writing it"):
        run(TrainSettings(data=str(tmp_path / "no-data"), out=str(out)), resume=True)
    assert not out.exists()
