"""The model and the face detector, each loaded and run once here (the model on a grey face,
the detector by its own check)."""

from __future__ import annotations

from edge.errors import UserError
from edge.ops.doctor.context import FAIL, OK, WARN, _Context


def check_model(ctx: _Context, cfg) -> None:
    import numpy as np

    from edge.config import resolve_model
    from edge.pipeline.classifier import Classifier

    try:
        path = resolve_model(cfg)
        clf = Classifier(path, num_threads=cfg.model.threads)
        s = clf.card.input_size
        probs = clf.predict(np.full((1, s, s), 128, np.uint8))
    except UserError as exc:
        ctx.add("model", FAIL, str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - an interpreter failure is a FAIL line, not a crash
        ctx.add("model", FAIL, f"dummy inference failed: {type(exc).__name__}: {exc}")
        return
    card = clf.card
    if probs.shape != (1, len(card.labels)) or not np.isfinite(probs).all() or abs(float(probs.sum()) - 1) > 0.05:
        ctx.add("model", FAIL, f"{path}: dummy inference gave {probs.round(3).tolist()}, not probabilities")
        return
    acc = card.edge_accuracy()
    extra = f", accuracy {acc[0]:.1%} ({acc[1]})" if acc else ""
    if notes := clf.notes():  # a failed parity gate or a float model: it runs, but not as it should
        ctx.add("model", WARN, f"{path}: " + "; ".join(notes))
        return
    ctx.add("model", OK, f"{path} ({card.architecture or 'model'}{extra}; {len(card.labels)} labels, "
                         f"{s}x{s} {card.color}, {clf.interp.get_input_details()[0]['dtype'].__name__} input): dummy inference ran")


def check_detector(ctx: _Context, cfg) -> None:
    from edge.ops.doctor.budget import frames_timed
    from edge.pipeline.detectors.regions import configured_detector

    try:
        det = configured_detector(cfg)
        w, h, _, _ = frames_timed(cfg.source)
        status, line = det.doctor(w, h)  # the plugin's own check
    except UserError as exc:
        ctx.add("detector", FAIL, str(exc))
        return
    except Exception as exc:  # noqa: BLE001
        ctx.add("detector", FAIL, f"{cfg.detector.kind} failed its check: {type(exc).__name__}: {exc}")
        return
    ctx.add("detector", status, line)
