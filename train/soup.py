"""`edge soup`: average the weights of several runs that were fine-tuned from the same start
("model soup", Wortsman et al. 2022) into one run folder that `edge eval` and `edge convert`
take. Costs nothing on the Pi: the result is one model of the same architecture.

Only runs that share a start land in one basin, where an average of weights behaves like an
average of models; runs trained from different initialisations average into noise. Batch-norm
statistics are averaged like every other weight."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from edge.errors import UserError
from edge.paths import check_out_folder

COPIED = ("train_settings.json", "data.json", "versions.json")  # the first run's: labels, votes, data for convert


def _model_file(run: Path) -> Path:
    path = run / "model.keras" if run.is_dir() else run
    if path.suffix != ".keras" or not path.is_file():
        raise UserError(f"{run} is not a run folder with a model.keras (or a .keras file): give folders written by `edge train`.")
    return path


def _check_recipes(files: list[Path]) -> None:
    """Refuse runs trained on other label kinds (the first run's settings go with the soup, and
    convert scores it by them); warn when the runs did not start from the same weights."""
    settings = {}
    for f in files:
        p = f.parent / "train_settings.json"
        settings[f] = json.loads(p.read_text()) if p.exists() else None
    known = {f: s for f, s in settings.items() if s}
    labels = {f: s.get("labels", "folder") for f, s in known.items()}
    if len(set(labels.values())) > 1:
        raise UserError("A soup averages runs trained on one kind of label, but these differ: "
                        + ", ".join(f"{f.parent} --labels {v}" for f, v in labels.items()) + ".")
    starts = {f: s.get("init_from") or f"random weights of seed {s.get('seed')}" for f, s in known.items()}
    if len(set(starts.values())) > 1:
        print("warning: these runs started from different weights (" + ", ".join(f"{f.parent}: {v}" for f, v in starts.items())
              + "); their average may score far below each run.", file=sys.stderr, flush=True)


def soup(out: str | Path, runs: list[str | Path]) -> Path:
    """Writes OUT/model.keras, the uniform average of the runs' weights, and OUT/soup.json."""
    import numpy as np

    from train.keras_io import load_keras
    from train.provenance import record_command

    out, runs = Path(out), [Path(r) for r in runs]
    if len(runs) < 2:
        raise UserError("A soup needs at least two runs to average; give their folders after the output folder.")
    check_out_folder(out, "OUT")
    if (out / "model.keras").exists():
        raise UserError(f"{out / 'model.keras'} already exists; choose a new output folder (nothing was overwritten).")
    files = [_model_file(r) for r in runs]
    resolved = [f.resolve() for f in files]
    for i, f in enumerate(resolved):
        if f in resolved[:i]:  # it would weigh double, and soup.json would count it as another run
            raise UserError(f"{f} is given twice ({runs[resolved.index(f)]} and {runs[i]}); give each run once.")
    _check_recipes(files)
    models = [load_keras(f) for f in files]  # a file that is no Keras model is one sentence
    weights = [m.get_weights() for m in models]
    shapes = [w.shape for w in weights[0]]
    for f, m, w in zip(files[1:], models[1:], weights[1:]):
        if m.name != models[0].name or [x.shape for x in w] != shapes:
            raise UserError(f"{f} is a {m.name} with other layers than {files[0]} ({models[0].name}); "
                            "a soup averages runs of one architecture from one start.")
    models[0].set_weights([np.mean([w[i] for w in weights], axis=0).astype(weights[0][i].dtype)
                           for i in range(len(shapes))])
    out.mkdir(parents=True, exist_ok=True)
    models[0].save(out / "model.partial.keras")  # renamed when whole: a crash leaves no truncated model.keras
    (out / "model.partial.keras").replace(out / "model.keras")
    for name in COPIED:
        if (files[0].parent / name).exists():
            shutil.copy(files[0].parent / name, out / name)
    record_command(out)  # as edge train and edge convert do: how this folder was made
    (out / "soup.json").write_text(json.dumps({"method": "uniform weight average",
                                               "runs": [str(f.resolve()) for f in files]}, indent=2) + "\n")
    return out / "model.keras"
