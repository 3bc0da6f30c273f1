"""Accuracy of any set of models on a dataset folder, next to the peer (the `fer` package's
mini_XCEPTION) and, when given, the seed_cnn baseline.

A .tflite runs through the edge Classifier exactly as on the Pi: the card's crop size, its
quantization and, when the card says so, flip averaging and temperature (the "edge" path);
--raw adds the bare model (no flip averaging, no temperature). A .keras runs through Keras
(imported only then). Rows: accuracy, macro-F1, per-class recall, file size, parameters; one
confusion-matrix PNG per row and one per-class-recall chart.

    python benchmarks/accuracy.py edge/models/default/model_int8.tflite runs/default/model.keras \\
        --data data/fer2013 --baseline runs/seed_cnn
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.peer import PEER_NOTE, PeerModel, add_peer_args, peer_or_reason
from edge.errors import UserError
from edge.labels import LABELS, columns_in_label_order
from train.data import EVAL_ORDER, FER2013_SIZE

NAME = "accuracy"


def default_data() -> Path:
    return common.REPO / "data" / "fer2013"


class Data:
    """The evaluation split at each input size, with the same seeded subset for every model."""

    def __init__(self, path: str, split: str | None, limit: int | None, seed: int):
        self.path, self.split, self.limit, self.seed = path, split, limit, seed
        self._by_size: dict[int, tuple] = {}
        self.split_name = None

    def get(self, size: int):
        if size not in self._by_size:
            from train.data import eval_split, load_dataset

            # After the first size, the split found then: the same images at every size, warned about once.
            sp, name = eval_split(load_dataset(self.path, size=size, progress=False), self.split or self.split_name)
            if self.limit and self.limit < len(sp):
                idx = np.sort(np.random.default_rng(self.seed).choice(len(sp), self.limit, replace=False))
                sp = sp.take(idx)
            self.split_name = name
            self.names = list(sp.names)
            self._by_size[size] = (sp.x, sp.y)
        return self._by_size[size]


def baseline_info(path: Path) -> dict:
    """What the run folder says about a baseline: architecture, epoch cap, epochs run, best epoch."""
    folder = path if path.is_dir() else path.parent
    for candidate in (folder, folder.parent):
        if (candidate / "history.csv").is_file() or (candidate / "train_settings.json").is_file():
            folder = candidate
            break
    info: dict = {"run_folder": str(folder)}
    settings = folder / "train_settings.json"
    if settings.is_file():
        s = json.loads(settings.read_text())
        info.update({"arch": s.get("arch"), "epochs_cap": s.get("epochs"), "patience": s.get("patience"),
                     "augment": s.get("augment"), "label_smoothing": s.get("label_smoothing"),
                     "class_weight_power": s.get("class_weight_power"), "lr": s.get("lr")})
    hist = folder / "history.csv"
    if hist.is_file():
        with hist.open() as fh:
            rows = list(csv.DictReader(fh))
        info["epochs_run"] = len(rows)
        if rows and "val_accuracy" in rows[0]:
            best = max(range(len(rows)), key=lambda i: float(rows[i]["val_accuracy"]))
            info["best_epoch"] = best + 1
    return info


def baseline_label(info: dict) -> str:
    arch = info.get("arch") or "seed_cnn"
    cap, ran = info.get("epochs_cap"), info.get("epochs_run")
    parts = [f"{arch} baseline"]
    if cap:
        parts.append(f"capped at {cap} epochs" + (f", ran {ran}" if ran is not None else ""))
    return f"{parts[0]} ({', '.join(parts[1:])})" if len(parts) > 1 else parts[0]


def evaluate_tflite(path: Path, others, data: Data, threads: int, calibrated: bool) -> dict:
    from benchmarks.peer import constant_elements
    from edge.pipeline.classifier import Classifier

    card, where = common.find_card_for(path, others)
    if card is None:
        raise UserError(f"{where}.")
    clf = Classifier(path, card=card, num_threads=threads, calibrated=calibrated)
    x, y = data.get(card.input_size)
    t = time.perf_counter()
    probs = clf.predict_many(x)[:, columns_in_label_order(clf.labels)]  # y indexes LABELS, whatever the card's order
    seconds = time.perf_counter() - t
    params = (card.metrics or {}).get("parameters")
    source = "card metrics (Keras count)" if params else "constant tensor elements (BN folded)"
    if not params:
        params = constant_elements(clf.interp)
    path_desc = (f"edge Classifier, flip-average {'on' if clf.flip_average else 'off'}, T={clf.temperature:g}"
                 if calibrated else "edge Classifier, raw (no flip average, T=1)")
    return {"y": y, "probs": probs, "runtime": clf.runtime.describe(), "path": path_desc, "parameters": int(params),
            "parameters_source": source, "card": where, "seconds": seconds}


def evaluate_keras(path: Path, data: Data) -> dict:
    from train.keras_io import load_keras

    m = load_keras(path)
    import keras

    x, y = data.get(int(m.input_shape[1]))
    t = time.perf_counter()
    probs = m.predict(x.astype(np.float32)[..., None], batch_size=256, verbose=0)
    seconds = time.perf_counter() - t
    return {"y": y, "probs": probs, "runtime": f"keras {keras.__version__}", "path": "Keras float (raw model)",
            "parameters": int(m.count_params()), "parameters_source": "Keras count_params", "seconds": seconds}


def evaluate_peer(files, data: Data, threads: int, backend: str) -> dict:
    peer = PeerModel(files, threads=threads, backend=backend)
    x, y = data.get(FER2013_SIZE)  # the peer resizes FER crops itself, as fer does
    t = time.perf_counter()
    probs = peer.predict_fer_images(x)
    seconds = time.perf_counter() - t
    sp = files.spec
    return {"y": y, "probs": probs, "runtime": peer.runtime, "model_path": peer.path,
            "path": f"fer preprocessing: {FER2013_SIZE}->{sp.input_size} px ({sp.resize}), x/{sp.scale_divisor:g}, "
                    f"(x-{sp.shift:g})*{sp.multiply:g}; fer label order mapped to ours",
            "parameters": peer.parameters(),
            "parameters_source": "Keras count_params" if peer.backend == "keras" else "constant tensor elements",
            "seconds": seconds}


def _calibration_changes_anything(path: Path, others) -> bool:
    card, _ = common.find_card_for(path, others)
    if card is not None and not card.flip_average and card.temperature == 1.0:
        print(f"{common.model_label(path)} (raw): same as the edge path (card: no flip average, T=1); not repeated")
        return False
    return True


def recalls(per_class: dict) -> dict:
    """Recall per class; None for a class with no image in the set scored (--limit, a store's own
    folders, the FER+ majority), which has no recall: 0.000 would read as a model that misses it."""
    return {k: round(v["recall"], 4) if v["support"] else None for k, v in per_class.items()}


def make_row(label: str, kind: str, model_path: Path, res: dict, note: str = "", votes=None, names=None) -> dict:
    from edge.metrics import classification_report

    rep = classification_report(res["y"], res["probs"])
    plus = {}
    if votes is not None:  # a second ground truth: the ten annotators' majority
        from train.votes import ferplus_report

        fp = ferplus_report(names, res["probs"], votes)
        plus = {"ferplus": {"images": fp["images"], "accuracy": round(fp["accuracy"], 4),
                            "macro_f1": round(fp["macro_f1"], 4),
                            "per_class_recall": recalls(fp["per_class"])}}
    return {
        "label": label, "kind": kind, "model": str(model_path), "size_bytes": Path(model_path).stat().st_size,
        "runtime": res["runtime"], "path": res["path"], "images": rep["images"],
        "accuracy": round(rep["accuracy"], 4), "macro_f1": round(rep["macro_f1"], 4),
        "per_class_recall": recalls(rep["per_class"]),
        "ece": round(rep["ece"], 4), "loss": round(rep["loss"], 4),
        "parameters": res["parameters"], "parameters_source": res["parameters_source"],
        "seconds": round(res["seconds"], 2), "confusion_matrix": rep["confusion_matrix"], "note": note,
        **({"card": res["card"]} if res.get("card") else {}), **plus,
    }


def run(args, argv=None) -> dict:
    models = common.expand_models(args.models or common.default_models())
    if not models:
        raise UserError("No model given and no shipped default model found; pass .tflite/.keras models or folders.")
    if not Path(args.data).exists():
        raise UserError(f"Dataset {args.data} does not exist; extract fer2013.tar.gz and pass --data DIR.")
    threads = args.threads or common.all_cores()
    data = Data(args.data, args.split, args.limit, args.seed)
    data.get(FER2013_SIZE)  # read before the models: a folder without images is one error, not a skipped row per model
    rows, skipped = [], []
    votes = None
    if args.votes:
        from train.votes import find_votes, read_votes, unscorable

        votes = read_votes(find_votes(args.data, args.votes))
        why = unscorable(data.names, votes)  # no image with a row or a majority: one sentence, not a row per model
        if why:
            raise why

    def add(label, kind, path, fn, note=""):
        print(f"{label} ...", flush=True)
        try:
            res = fn()
            rows.append(make_row(label, kind, path, res, note, votes, data.names))
            r = rows[-1]
            fp = f"  FER+ majority {r['ferplus']['accuracy']:.4f}" if votes is not None else ""
            print(f"  accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}{fp}  ({r['images']} images, {r['seconds']:.1f} s)")
        except UserError as exc:
            skipped.append({"label": label, "reason": str(exc)})
            print(f"  skipped: {exc}")

    for p in models:
        label = common.model_label(p)
        if p.suffix == ".tflite":
            add(label, "ours", p, lambda p=p: evaluate_tflite(p, models, data, threads, calibrated=True))
            if args.raw and _calibration_changes_anything(p, models):
                add(f"{label} (raw)", "ours", p, lambda p=p: evaluate_tflite(p, models, data, threads, calibrated=False))
        else:
            add(label, "ours", p, lambda p=p: evaluate_keras(p, data))
    if args.models:
        common.refuse_skipped_models({s["label"]: s["reason"] for s in skipped})

    peer_files, why = peer_or_reason(args)
    peer = None
    if peer_files is not None:
        path = peer_files.tflite if args.peer_backend == "tflite" and peer_files.tflite else peer_files.hdf5
        add(f"peer: fer {peer_files.version} mini_XCEPTION ({path.name})", "peer", path,
            lambda: evaluate_peer(peer_files, data, threads, args.peer_backend), PEER_NOTE)
        peer = peer_files.to_dict()
    else:
        print(f"peer skipped: {why}")

    baseline = None
    if args.baseline:
        bp = Path(args.baseline).expanduser()
        info = baseline_info(bp)
        model = bp / "model.keras" if bp.is_dir() else bp
        if not model.is_file():
            skipped.append({"label": "baseline", "reason": f"{model} does not exist"})
        else:
            label = baseline_label(info)
            note = (f"Baseline trained with its own recipe (no augmentation, no class weights, no label smoothing), "
                    f"capped at {info.get('epochs_cap')} epochs to bound training time (ran {info.get('epochs_run')}, "
                    f"best epoch {info.get('best_epoch')}); it is not converged, so it is a lower bound for that network.")
            fn = (lambda: evaluate_keras(model, data)) if model.suffix == ".keras" else \
                (lambda: evaluate_tflite(model, [model], data, threads, calibrated=True))
            add(label, "baseline", model, fn, note)
        baseline = info

    report = common.run_header(NAME, argv, [Path(r["model"]) for r in rows])
    report.update({
        "data": str(args.data), "split": data.split_name, "limit": args.limit, "threads": threads,
        "labels": list(LABELS), "rows": rows, "skipped": skipped, "votes": votes.source if votes else None,
        "peer": peer if peer else {"skipped": why}, "peer_note": PEER_NOTE, "baseline": baseline,
    })
    return report


def figures(report: dict, out: Path) -> list[Path]:
    plt = common.pyplot()
    if plt is None:
        return []
    from train.report import confusion_figure

    paths = []
    for r in report["rows"]:
        p = out / f"{common.stem(NAME)}_confusion_{common.slug(r['label'])}.png"
        confusion_figure(np.array(r["confusion_matrix"]), p, title=r["label"][:40])
        r["confusion_png"] = p.name
        paths.append(p)
    if report["rows"]:
        fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(LABELS)), 4.0 + 0.22 * len(report["rows"])))
        n = len(report["rows"])
        width = 0.8 / n
        for i, r in enumerate(report["rows"]):
            vals = [np.nan if r["per_class_recall"][c] is None else r["per_class_recall"][c] for c in LABELS]
            ax.bar(np.arange(len(LABELS)) + (i - (n - 1) / 2) * width, vals, width,
                   label=f"{r['label'][:60]} (acc {r['accuracy']:.3f})")
        ax.set_xticks(range(len(LABELS)), LABELS)
        ax.set_ylabel("recall")
        ax.set_ylim(0, 1)
        ax.set_title(f"Per-class recall on {report['split']} ({report['rows'][0]['images']} images)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
        fig.tight_layout()
        p = out / f"{common.stem(NAME)}_per_class.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
        report["per_class_png"] = p.name
    return paths


def markdown(report: dict) -> str:
    lines = [common.md_header(f"Accuracy on {report['data']} [{report['split']}]", report)]
    if report["limit"]:
        lines.append(f"Seeded subset of {report['limit']} images (--limit); not the full split.\n")
    rows = []
    for r in report["rows"]:
        rows.append([r["label"], r["path"], f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}",
                     *[common.fmt(r["per_class_recall"][c], 3) for c in LABELS],
                     f"{r['size_bytes'] / 1e6:.3f}", f"{r['parameters']:,}", r["runtime"]])
    heads = ["model", "path", "accuracy", "macro-F1", *[f"recall {c}" for c in LABELS], "file MB", "parameters", "runtime"]
    lines.append(common.md_table(heads, rows, [False, False, *[True] * (len(heads) - 3), False]))
    if report.get("votes"):
        plus = [r for r in report["rows"] if "ferplus" in r]
        lines += ["", f"Against the FER+ majority of ten annotators ({report['votes']}; images with a tied or "
                      "doubtful vote, or none, skipped):", ""]
        lines.append(common.md_table(
            ["model", "images", "FER+ accuracy", "FER+ macro-F1", *[f"recall {c}" for c in LABELS]],
            [[r["label"], r["ferplus"]["images"], f"{r['ferplus']['accuracy']:.4f}", f"{r['ferplus']['macro_f1']:.4f}",
              *[common.fmt(r["ferplus"]["per_class_recall"].get(c), 3) for c in LABELS]] for r in plus],
            [False, *[True] * (3 + len(LABELS))]))
    notes = [r for r in report["rows"] if r["note"] and r["kind"] == "baseline"]
    lines.append("")
    lines.append(f"**Peer caveat.** {report['peer_note']}")
    if isinstance(report["peer"], dict) and report["peer"].get("skipped"):
        lines.append(f"\nPeer not measured: {report['peer']['skipped']}")
    for r in notes:
        lines.append(f"\n**{r['label']}.** {r['note']}")
    for s in report["skipped"]:
        lines.append(f"\nSkipped {s['label']}: {s['reason']}")
    lines.append("\nColumns: accuracy and macro-F1 over all images; recall per class = correct / images of that class "
                 "(– where the set scored has none); file MB = size of the model file; parameters = Keras "
                 "count_params, the card's figure, or the element count of a .tflite's constant tensors (batch norm "
                 "folded, so a little below the Keras count). path = how inputs reach the model (the edge path is what "
                 "the Pi runs).")
    # The figures are listed once, by common.finish, which writes them.
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=None, description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help=".tflite (card beside it) or .keras models, or folders of them "
                    "(default: the shipped model and, if kept, runs/default/model.keras)")
    ap.add_argument("--data", default=str(default_data()), help="dataset folder (split or class folders) or fer2013.csv "
                    "(default: %(default)s)")
    ap.add_argument("--split", default=None, help=f"split to evaluate (default: the first the dataset has of "
                    f"{', '.join(EVAL_ORDER)}; all: class folders without split folders)")
    ap.add_argument("--limit", type=common.number(), default=None,
                    help="evaluate a seeded random subset of this many images")
    ap.add_argument("--votes", default=None, help="FER+ votes CSV: also score against the annotators' majority")
    ap.add_argument("--raw", action="store_true", help="also report each .tflite without flip averaging/temperature")
    ap.add_argument("--baseline", default=None, help="seed_cnn run folder (model.keras, history.csv, train_settings.json) "
                    "or a model inside one; its row is labelled with its capped epochs")
    ap.add_argument("--threads", type=common.number(), default=None, help="interpreter threads (default: all cores; "
                    "accuracy does not depend on it)")
    add_peer_args(ap)
    common.add_common_args(ap)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return common.finish(NAME, args, argv, run, figures, markdown)


if __name__ == "__main__":
    sys.exit(main())
