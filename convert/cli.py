"""The conversion stage's command, `edge convert`, registered with the edge CLI through the
"queue_mood.commands" entry points in pyproject.toml (edge never imports convert)."""

from __future__ import annotations

import click

from edge.card import DEFAULT_MAX_DROP_PP, DEFAULT_MIN_AGREEMENT
from edge.errors import UserError
from edge.paths import not_empty


@click.command()
@click.argument("model", callback=not_empty)
@click.option("--data", required=True, callback=not_empty, help="Dataset folder or fer2013.csv (train split calibrates, val split checks parity).")
@click.option("--out", required=True, callback=not_empty, help="Folder for model_int8.tflite, model_float32.tflite, model.json, parity.*")
@click.option("--calibration-size", type=int, default=500, show_default=True, help="Representative images, stratified by class.")
@click.option("--max-drop", type=float, default=DEFAULT_MAX_DROP_PP, show_default=True, help="Largest allowed accuracy drop, percentage points.")
@click.option("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT, show_default=True, help="Smallest allowed Keras/int8 top-1 agreement.")
@click.option("--float16", is_flag=True, help="Also write model_float16.tflite.")
@click.option("--split", default=None, help="Split the parity gate, flip averaging and temperature are judged and "
              "fitted on (default: the run's validation images).")
@click.option("--votes", default=None, callback=not_empty, help="FER+ votes CSV to score and calibrate against (default: the one the run trained on).")
def convert(model, data, out, calibration_size, max_drop, min_agreement, float16, split, votes):
    """Quantize a trained model (run folder or .keras) to int8 TFLite and check parity."""
    from pathlib import Path

    from convert import quantize
    from convert.parity import markdown
    from train.cli import write_errors
    from train.keras_io import import_keras

    import_keras()
    settings = quantize.ConvertSettings(model=model, data=data, out=out, calibration_size=calibration_size,
                                        max_drop_pp=max_drop, min_agreement=min_agreement, float16=float16,
                                        split=split, votes=votes)
    with write_errors(out, lambda: "run the same command again (a model already in --out is unchanged)"):
        parity, failures = quantize.run(settings)
    click.echo(markdown(parity))
    if failures:
        err = UserError(f"Parity gate failed: {'; '.join(failures)}; the failed files are in {Path(out) / quantize.FAILED_DIR} "
                        f"and any passing model in {out} is unchanged.")
        err.exit_code = 1  # the model failed, not the command: a script tells it from a bad option (2)
        raise err
