"""A model and its card must belong together wherever a model is loaded, not only in `edge bundle`."""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest

from edge.config import load_config, resolve_model
from edge.errors import UserError
from edge.pipeline.classifier import Classifier
from edge.pipeline.core import load_parts
from tests.conftest import run_cli


def copy_model(shipped_model, folder, **card_changes):
    shutil.copy(shipped_model, folder / "model_int8.tflite")
    card = json.loads(shipped_model.with_name("model.json").read_text())
    card.update(card_changes)
    (folder / "model.json").write_text(json.dumps(card))
    return folder / "model_int8.tflite"


def test_a_card_written_for_other_bytes_is_refused(tmp_path, shipped_model):
    stale = copy_model(shipped_model, tmp_path, model_sha256="0" * 64)
    with pytest.raises(UserError, match="sha256 differs"):
        Classifier(stale)


@pytest.mark.parametrize("damage", ["truncated", "other bytes", "card damaged", "card missing", "model missing"])
def test_a_damaged_installed_model_says_to_reinstall_the_bundle_elsewhere_to_convert(tmp_path, shipped_model,
                                                                                      monkeypatch, damage):
    """On a Pi the model is where install.sh put it, and its reader has no training setup:
    `edge convert` is advice only for a model elsewhere."""
    from edge import release
    from edge.ops import bundle

    prefix = tmp_path / "opt"
    for module in (bundle, release):  # release knows an install by its folders, bundle says how to reinstall
        monkeypatch.setattr(module, "INSTALL_PREFIX", str(prefix))
    monkeypatch.setattr(release, "MODEL_DIR", str(prefix / "model"))
    bundle_folder = tmp_path / "queue-mood-bundle"  # `edge bundle --out`: a manifest too, but install.sh beside it
    bundle_folder.mkdir()
    (bundle_folder / "MANIFEST.json").write_text("{}")
    (bundle_folder / "install.sh").write_text("")
    for folder, installed in ((prefix / "model", True), (tmp_path / "run", False), (bundle_folder / "model", False)):
        folder.mkdir(parents=True)
        model = copy_model(shipped_model, folder)
        if damage == "truncated":
            model.write_bytes(model.read_bytes()[:5000])
        elif damage == "other bytes":
            data = bytearray(model.read_bytes())
            data[len(data) // 2] ^= 0xFF
            model.write_bytes(bytes(data))
        elif damage == "card damaged":
            (folder / "model.json").write_text("{not json")
        elif damage == "card missing":
            (folder / "model.json").unlink()
        else:
            model.unlink()  # deleted, or never copied
        with pytest.raises(UserError) as err:  # as edge run and edge doctor load it
            Classifier(resolve_model(load_config(None, {"model.path": str(model)})))
        said = str(err.value)
        if installed:
            assert f"sudo {prefix}/bundle/install.sh" in said and "edge convert" not in said, said
        else:
            assert "edge convert" in said and "install.sh" not in said, said


def test_a_folder_given_to_the_classifier_is_said_to_be_a_folder(tmp_path):
    """The callers resolve the folder `edge convert --out` wrote (edge.config.model_file); any
    other folder must not be called missing."""
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path))} is a folder, not a model file; "):
        Classifier(tmp_path)


def test_a_sibling_borrowing_the_card_is_not_checked(tmp_path, shipped_model):
    model = copy_model(shipped_model, tmp_path, model_sha256="0" * 64)
    borrowed = model.rename(tmp_path / "model_other.tflite")  # the card names model_int8.tflite, not this file
    assert Classifier(borrowed).labels


def test_edge_run_warns_about_a_model_that_failed_the_parity_gate(tmp_path, shipped_model, caplog):
    card = json.loads(shipped_model.with_name("model.json").read_text())
    model = copy_model(shipped_model, tmp_path, parity={**card["parity"], "passed": False})
    cfg = load_config(None, {"model": {"path": str(model)}})
    with caplog.at_level(logging.WARNING, logger="edge"):
        load_parts(cfg)
    assert any("parity gate" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge"):
        load_parts(load_config(None, {"model": {"path": str(shipped_model)}}))
    assert not [r for r in caplog.records if "parity gate" in r.getMessage()]


def test_the_folder_edge_convert_wrote_names_its_int8_model(tmp_path, shipped_model):
    from edge.config import resolve_model

    model = copy_model(shipped_model, tmp_path)
    assert resolve_model(load_config(None, {"model": {"path": str(tmp_path)}})) == model
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no model_int8.tflite"):
        resolve_model(load_config(None, {"model": {"path": str(empty)}}))
    # a conversion that failed its parity gate into a new --out leaves only failed/ there
    (empty / "failed").mkdir()
    copy_model(shipped_model, empty / "failed")
    (empty / "command.txt").write_text("edge convert ...\n")
    with pytest.raises(UserError, match=re.escape(f"Model folder {empty} holds no model: its conversion failed the "
                                                  f"parity gate; the failed files and the parity report (parity.md) "
                                                  f"are in {empty / 'failed'}")):
        resolve_model(load_config(None, {"model": {"path": str(empty)}}))


@pytest.mark.parametrize("given", ["model.keras", "."])
def test_a_keras_model_given_to_edge_run_is_said_to_need_edge_convert(tmp_path, shipped_model, given):
    """A training run's model.keras (or its folder) is not a TFLite model gone bad: the sentence
    must say to convert it, even with a model.json lying beside it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"PK\x03\x04 a Keras zip")
    shutil.copy(shipped_model.with_name("model.json"), run)
    r = run_cli("run", "--model", run / given, "--source", tmp_path, "--max-frames", 1, env={"HOME": str(tmp_path)})
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert errors == [f"error: {run / 'model.keras'} is a Keras model; convert it for the Pi first with `edge convert "
                      f"{run / 'model.keras'} --data DATASET --out DIR`, then pass --model DIR."], r.stderr


def test_bundle_takes_the_folder_edge_convert_wrote(tmp_path, shipped_model):
    from edge.ops.bundle import _resolve_model

    model = copy_model(shipped_model, tmp_path)
    assert _resolve_model(str(tmp_path), load_config(None)) == (model, [])


def test_bundle_refuses_a_sibling_the_pi_would_refuse(tmp_path, shipped_model):
    """A file beside the card under another name (the float32 model convert writes, an older model
    renamed) runs here, but the bundle installs it as model_int8.tflite, the file the card's sha256
    names, and every start on the Pi would refuse it."""
    from edge.card import check_pair, load_card
    from edge.ops.bundle import MODEL_FILE, _resolve_model

    model = copy_model(shipped_model, tmp_path, model_sha256="0" * 64)
    sibling = model.rename(tmp_path / "model_float32.tflite")
    with pytest.raises(UserError, match=r"model_float32.tflite is not the model its card .* was written for.*"
                                        r"pass --model .*model_int8.tflite"):
        _resolve_model(str(sibling), load_config(None))
    installed = tmp_path / "pi" / MODEL_FILE  # what the bundle would have put on the Pi
    installed.parent.mkdir()
    shutil.copy(sibling, installed)
    shutil.copy(tmp_path / "model.json", installed.with_name("model.json"))
    with pytest.raises(UserError, match="sha256 differs"):
        check_pair(installed, load_card(installed))
    renamed = copy_model(shipped_model, tmp_path / "pi").rename(tmp_path / "pi" / "v5.tflite")  # the card's own bytes
    assert _resolve_model(str(renamed), load_config(None)) == (renamed, [])


def test_eval_reads_the_outputs_by_the_names_the_card_gives_them(tmp_path, shipped_model, cache_env):
    """The runtime names each output by the card's labels; `edge eval` must score the same reading,
    so a card listing them in another order (a model trained elsewhere, a hand edit) shows in its
    figures instead of scoring as the shipped order."""
    import numpy as np

    from edge.labels import LABELS
    from tests.conftest import write_class_folders
    from train.evaluate import evaluate

    data = write_class_folders(tmp_path / "data", 4, seed=3)
    (tmp_path / "a").mkdir()
    copy_model(shipped_model, tmp_path / "a")
    order = list(reversed(LABELS))
    (tmp_path / "b").mkdir()
    copy_model(shipped_model, tmp_path / "b", labels=order)
    cm_a = np.array(evaluate(str(tmp_path / "a"), str(data))["confusion_matrix"])
    cm_b = np.array(evaluate(str(tmp_path / "b"), str(data))["confusion_matrix"])
    # Column j of the model is LABELS[j] to card a and order[j] to card b: the predictions move with the names.
    expected = np.zeros_like(cm_a)
    for j, name in enumerate(order):
        expected[:, LABELS.index(name)] = cm_a[:, j]
    assert not np.array_equal(expected, cm_a)  # the renaming changes what is scored
    assert np.array_equal(cm_b, expected)


@pytest.mark.parametrize("args, name", [
    (("run", "--model", "", "--max-frames", "1"), "--model"),
    (("run", "--config", " ", "--max-frames", "1"), "--config"),
    (("analyze", "{tmp}/x.mp4", "--model", "", "--out", "{tmp}/a"), "--model"),
    (("bundle", "--model", "", "--out", "{tmp}/b"), "--model"),
    (("bundle", "--config", "", "--out", "{tmp}/b"), "--config"),
    (("doctor", "--model", ""), "--model"),
    (("eval", "", "--data", "{tmp}/d"), "MODEL"),
    (("eval", "--model", "", "--data", "{tmp}/d"), "--model"),
])
def test_an_empty_model_or_config_is_refused_not_taken_for_the_default(tmp_path, args, name):
    """`edge run --model "$NEW_MODEL"` with the variable unset must not run the shipped model with
    the same log line as a new one; left out, the option means the default, given empty it is refused."""
    from tests.conftest import run_cli

    r = run_cli(*[a.format(tmp=tmp_path) for a in args], env={"QUEUE_MOOD_CACHE": str(tmp_path / "c")})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "a").exists()
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: {name} is empty (an unset shell variable?); give a path, or leave {name} out for its default."]


def tiny_model(folder, shipped_model, *, softmax=True, outputs=1, batch=None, channels=1, pixels_max=None, classes=7,
               width=8, int8_io=True):
    """An 8x8 (8 x width) model with its card: float32, or int8 quantized on inputs in [0, pixels_max] (with
    int8_io=False, behind the float input and output TFLite's converter gives it by default)."""
    import numpy as np

    tf = pytest.importorskip("tensorflow")
    from edge.card import sha256_file

    inp = tf.keras.Input((8, width, channels) if channels else (8, width), batch_size=batch)  # 0: no channel axis
    x = inp if channels else tf.keras.layers.Reshape((8, width, 1))(inp)
    x = tf.keras.layers.Conv2D(4, 3, activation="relu")(tf.keras.layers.Rescaling(1 / 255)(x))
    x = tf.keras.layers.Reshape((-1,))(x)  # with batch=1, a flatten that holds the batch
    heads = [tf.keras.layers.Dense(classes)(x) for _ in range(outputs)]
    keras_model = tf.keras.Model(inp, [tf.keras.layers.Softmax()(h) if softmax else h for h in heads])
    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if pixels_max is not None:
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.uniform(0, pixels_max, (1, 8, width, channels)).astype(np.float32)]
                                               for _ in range(10))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = conv.inference_output_type = tf.int8
    folder.mkdir(exist_ok=True)
    path = folder / "model_int8.tflite"
    path.write_bytes(conv.convert())
    interp = tf.lite.Interpreter(model_path=str(path))
    quant = [None if d["dtype"] == np.float32 else {"scale": float(d["quantization"][0]),
                                                    "zero_point": int(d["quantization"][1])}
             for d in (interp.get_input_details()[0], interp.get_output_details()[0])]
    card = json.loads(shipped_model.with_name("model.json").read_text())
    card.update(input_size=8, input_quant=quant[0], output_quant=quant[1], model_sha256=sha256_file(path),
                temperature=1.0, flip_average=False, parity={}, metrics={})
    (folder / "model.json").write_text(json.dumps(card))
    return path, keras_model


def test_a_model_that_gives_logits_is_refused_wherever_it_is_loaded(tmp_path, shipped_model):
    """Temperature, mood and alerts read the output as probabilities: logits (no softmax) would be
    scored as if they were, negative 'probabilities' and all, by edge run, analyze and eval."""
    path, _ = tiny_model(tmp_path, shipped_model, softmax=False)
    with pytest.raises(UserError, match="does not output probabilities.*add the softmax"):
        Classifier(path)
    with pytest.raises(UserError, match="does not output probabilities"):
        load_parts(load_config(None, {"model": {"path": str(path)}}))


def test_a_model_with_two_outputs_is_refused(tmp_path, shipped_model):
    """The runtime lists outputs in its own order (here the second Keras head first): reading
    output 0 would silently score the wrong head."""
    path, _ = tiny_model(tmp_path, shipped_model, outputs=2)
    with pytest.raises(UserError, match="2 output"):
        Classifier(path)


def test_a_colour_model_is_refused_as_one(tmp_path, shipped_model):
    path, _ = tiny_model(tmp_path, shipped_model, channels=3)
    with pytest.raises(UserError, match="colour input .* grayscale"):
        Classifier(path)


@pytest.mark.parametrize("classes", [8, 6])
def test_a_model_of_other_classes_is_refused_as_one_not_as_a_card_mismatch(tmp_path, shipped_model, classes):
    """An 8-class model (FER+ with contempt) or a 6-class one: 'the model and model.json do not
    belong together' sends the user to edit the card, which is then refused for its labels."""
    path, _ = tiny_model(tmp_path, shipped_model, classes=classes)
    with pytest.raises(UserError, match=rf"gives {classes} class scores.* only models of the 7 classes angry, "
                                        r"disgust.*`edge train`") as info:
        Classifier(path)
    assert "belong together" not in str(info.value)


@pytest.mark.parametrize("shape, made", [("[1, 8, 10, 1]", dict(width=10)),
                                         ("[1, 8, 8]", dict(channels=0)),  # a Keras Input((48, 48)), no channel axis
                                         ("[1, 8, 8, 4]", dict(channels=4))])
def test_a_model_with_a_rectangular_input_is_refused_as_one(tmp_path, shipped_model, shape, made):
    """A card has one input_size: no card fits an 8x10 model, so 'do not belong together' misleads."""
    path, _ = tiny_model(tmp_path, shipped_model, **made)
    with pytest.raises(UserError, match=rf"takes input {re.escape(shape)}, but edge feeds .* square grayscale") as info:
        Classifier(path)
    assert "belong together" not in str(info.value)


def test_a_card_of_another_input_size_than_its_model_is_refused_as_not_belonging_together(tmp_path, shipped_model):
    path, _ = tiny_model(tmp_path, shipped_model)
    card = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**card, "input_size": 48}))
    with pytest.raises(UserError, match=r"takes input \[1, 8, 8, 1\] .* card says \[n, 48, 48, 1\] .* do not belong"):
        Classifier(path)


def test_an_int8_model_that_expects_scaled_pixels_is_refused(tmp_path, shipped_model):
    """Quantized for inputs in [0, 1], every pixel above 1 saturates: every face would give the
    same probabilities."""
    path, _ = tiny_model(tmp_path / "unit", shipped_model, pixels_max=1.0)
    with pytest.raises(UserError, match="pixel values 0-255"):
        Classifier(path)
    pixels, _ = tiny_model(tmp_path / "pixels", shipped_model, pixels_max=255.0)
    assert Classifier(pixels).labels


def test_an_int8_model_with_float_input_and_output_is_not_warned_about_as_a_float_model(tmp_path, shipped_model):
    """TFLite's converter quantizes a model fully but keeps float input and output unless told
    otherwise: it runs at int8 speed, so edge run, doctor and bundle must not call it a float model
    that runs several times slower; a float model still is."""
    wrapped, _ = tiny_model(tmp_path / "wrapped", shipped_model, pixels_max=255.0, int8_io=False)
    assert Classifier(wrapped).interp.get_input_details()[0]["dtype"].__name__ == "float32"
    assert not [n for n in Classifier(wrapped).notes() if "float model" in n]
    floating, _ = tiny_model(tmp_path / "float", shipped_model)
    assert [n for n in Classifier(floating).notes() if "float model" in n]


def test_a_model_exported_with_a_fixed_batch_runs_one_crop_at_a_time(tmp_path, shipped_model):
    """Resized to the batch slots such a model fails to prepare (or computes garbage) as soon as
    two faces, or one face and its mirror image, are classified together."""
    import numpy as np

    path, keras_model = tiny_model(tmp_path, shipped_model, batch=1)
    clf = Classifier(path)
    crops = np.random.default_rng(1).integers(0, 256, (5, 8, 8), np.uint8)
    want = np.concatenate([keras_model(crops[i : i + 1, ..., None].astype(np.float32)).numpy() for i in range(5)])
    assert np.allclose(clf.predict(crops), want, atol=1e-5)


@pytest.mark.parametrize("labels", [
    ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"],  # FER+ with contempt
    ["angry", "happy", "neutral", "sad", "surprise"],
    ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"],
])
def test_a_card_with_other_classes_is_refused_saying_what_to_do(tmp_path, shipped_model, labels):
    """Editing the card cannot make an 8- or 5-class model fit: the sentence must say so, not only 'fix it'."""
    model = copy_model(shipped_model, tmp_path, labels=labels)
    with pytest.raises(UserError, match=r"key 'labels' .* in any order .*`edge train`"):
        Classifier(model)


def test_a_sibling_borrowing_the_card_runs_with_a_warning(tmp_path, shipped_model, caplog):
    """Another model put beside a card under another name runs (convert's float sibling does), but
    with that card's temperature, crop rule and accuracy: edge run and doctor must say so."""
    model = copy_model(shipped_model, tmp_path, model_sha256="0" * 64)
    borrowed = model.rename(tmp_path / "mine.tflite")
    assert any("written for model_int8.tflite" in n for n in Classifier(borrowed).notes())
    with caplog.at_level(logging.WARNING, logger="edge"):
        load_parts(load_config(None, {"model": {"path": str(borrowed)}}))
    assert any("sha256 differs" in r.getMessage() for r in caplog.records)
    own = tmp_path / "own"
    own.mkdir()
    assert not Classifier(copy_model(shipped_model, own)).notes()  # the card's own file: nothing to say
