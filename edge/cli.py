"""The `edge` command: parse arguments, build settings, call one run() per subcommand.

Build-machine subcommands (train, convert) import TensorFlow lazily, inside run().
"""

from __future__ import annotations

import sys

import click

from edge.errors import UserError


class Group(click.Group):
    """Turns a UserError from any subcommand into one sentence on stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


def build_stage(module: str):
    """A build-machine module (train/, convert/), loaded only by the commands that need it:
    the edge runtime itself never imports them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"This command needs the build-machine packages ({exc.name} is missing); "
                        "install them with: pip install 'queue-mood[train]'.") from exc


@click.group(cls=Group)
def cli():
    """Queue-mood monitor: train, convert and run a facial-expression model on a Raspberry Pi."""


@cli.command()
@click.option("--data", required=True, help="Dataset folder (class or split folders) or fer2013.csv.")
@click.option("--out", required=True, help="Run folder to write (model.keras, metrics.json, figures).")
@click.option("--arch", default="queue_net", show_default=True, help="Architecture from the registry.")
@click.option("--epochs", type=int, default=40, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adamw", "adam"]), default="adamw", show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True,
              help="cosine: warm-up then cosine decay to 1% of --lr.")
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option("--class-weight-power", type=float, default=0.5, show_default=True,
              help="0 = no class weights, 1 = inverse frequency.")
@click.option("--mixup", "mixup_alpha", type=float, default=0.0, show_default=True, help="Mixup alpha (0 = off).")
@click.option("--no-augment", is_flag=True, help="Train on the images as they are (the seed_cnn baseline recipe).")
@click.option("--patience", type=int, default=12, show_default=True, help="Early-stopping patience in epochs.")
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--weights", type=click.Choice(["imagenet", "none"]), default="imagenet", show_default=True,
              help="mobilenetv2 only.")
@click.option("--steps-per-epoch", type=int, default=None, help="Cap batches per epoch (quick trials).")
@click.option("--warmup-epochs", type=int, default=2, show_default=True)
@click.option("--init-from", default=None, help="Start from this .keras model's weights, or an int8 .tflite converted from the same --arch: a second schedule.")
@click.option("--labels", type=click.Choice(["folder", "ferplus"]), default="folder", show_default=True,
              help="folder: one label per image from its class folder; ferplus: the ten FER+ annotators' vote distribution.")
@click.option("--votes", default=None, help="FER+ votes CSV (default: ferplus_votes.csv beside or above --data).")
@click.option("--folder-weight", type=float, default=0.0, show_default=True,
              help="ferplus: share of the folder label mixed into each vote distribution.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last epoch.")
def train(data, out, arch, epochs, batch_size, lr, optimizer, schedule, label_smoothing, class_weight_power, mixup_alpha,
          no_augment, patience, seed, weights, steps_per_epoch, warmup_epochs, init_from, labels, votes, folder_weight,
          resume):
    """Train a model on FER2013 (or any dataset in a supported layout)."""
    trainer = build_stage("train.trainer")
    s = trainer.TrainSettings(data=data, out=out, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, schedule=schedule,
                      label_smoothing=label_smoothing, class_weight_power=class_weight_power,
                      mixup_alpha=mixup_alpha, augment=not no_augment, patience=patience, seed=seed,
                      weights=None if weights == "none" else weights, steps_per_epoch=steps_per_epoch,
                      warmup_epochs=warmup_epochs, init_from=init_from, labels=labels, votes=votes,
                      folder_weight=folder_weight)
    metrics = trainer.run(s, resume=resume)
    click.echo(f"val accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}; report in {out}")


@cli.command()
@click.argument("model")
@click.option("--data", required=True, help="Dataset folder or fer2013.csv (train split calibrates, val split checks parity).")
@click.option("--out", required=True, help="Folder for model_int8.tflite, model_float32.tflite, model.json, parity.*")
@click.option("--calibration-size", type=int, default=500, show_default=True, help="Representative images, stratified by class.")
@click.option("--max-drop", type=float, default=0.5, show_default=True, help="Largest allowed accuracy drop, percentage points.")
@click.option("--min-agreement", type=float, default=0.97, show_default=True, help="Smallest allowed Keras/int8 top-1 agreement.")
@click.option("--float16", is_flag=True, help="Also write model_float16.tflite.")
@click.option("--split", default=None, help="Split to check parity on (default: val).")
@click.option("--votes", default=None, help="FER+ votes CSV to score and calibrate against (default: the one the run trained on).")
def convert(model, data, out, calibration_size, max_drop, min_agreement, float16, split, votes):
    """Quantize a trained model (run folder or .keras) to int8 TFLite and check parity."""
    build_stage("train.trainer").import_keras()
    quantize = build_stage("convert.quantize")
    parity, failures = quantize.run(quantize.ConvertSettings(model=model, data=data, out=out, calibration_size=calibration_size,
                                           max_drop_pp=max_drop, min_agreement=min_agreement, float16=float16,
                                           split=split, votes=votes))
    click.echo(build_stage("convert.parity").markdown(parity))
    if failures:
        raise UserError(f"Parity gate failed: {'; '.join(failures)} (files kept in {out}).")


@cli.command("eval")
@click.argument("model_arg", metavar="[MODEL]", required=False)
@click.option("--model", "model_opt", default=None, help="A .keras or .tflite model (default: the shipped model).")
@click.option("--data", required=True, help="Dataset folder or fer2013.csv.")
@click.option("--split", default=None, help="Split to evaluate (default: val, else all images).")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as JSON.")
@click.option("--raw", is_flag=True, help="Skip the card's temperature (uncalibrated probabilities).")
@click.option("--votes", default=None, help="FER+ votes CSV for the FER+ majority score (default: ferplus_votes.csv "
              "beside or above --data, if any).")
@click.option("--degrade", default=None, metavar="SIDES",
              help="Also score the split shrunk to these face sizes and scaled back up, e.g. 40,32,24.")
def eval_cmd(model_arg, model_opt, data, split, as_json, raw, votes, degrade):
    """Evaluate any model (.keras through Keras, .tflite through the edge runtime) on a dataset."""
    try:
        sides = [int(v) for v in degrade.split(",") if v.strip()] if degrade else None
    except ValueError:
        raise UserError(f"--degrade takes face sizes in pixels separated by commas (e.g. 40,32,24), not '{degrade}'.")
    rep = build_stage("train.evaluate").evaluate(model_opt or model_arg, data, split, calibrated=not raw,
                                                 votes=votes, degrade=sides)
    if as_json:
        import json

        click.echo(json.dumps(rep, indent=2))
    else:
        from edge.metrics import format_report

        click.echo(format_report(rep, f"{rep['model']} on {rep['data']} [{rep['split']}] via {rep['runtime']}"))


@cli.command("run")
@click.option("--config", "config_path", default=None, help="TOML config file (default: built-in defaults).")
@click.option("--camera", type=int, default=None, help="Camera index: the Pi camera via picamera2, else a USB camera.")
@click.option("--source", default=None, help="Video file, image folder or rtsp:// / http:// stream instead of a camera.")
@click.option("--model", default=None, help="int8 .tflite model with model.json beside it (default: the shipped model).")
@click.option("--detector", type=click.Choice(["blazeface", "haar", "yunet"]), default=None)
@click.option("--detector-model", default=None, help="Face detector model file.")
@click.option("--threads", type=int, default=None, help="Interpreter threads (default 1).")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--preview", default=None, metavar="VIDEO.mp4",
              help="Write an annotated video for debugging (off by default: frames never leave memory).")
@click.option("--print-config", is_flag=True, help="Print the effective config as TOML and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON at the end.")
@click.option("-v", "--verbose", count=True)
def run_cmd(config_path, camera, source, model, detector, detector_model, threads, max_frames, duration, preview,
            print_config, as_json, verbose):
    """Watch the queue: camera -> faces -> expressions -> queue mood -> local alerts."""
    import json
    import logging

    from edge.app import RunOptions, run
    from edge.config import load_config, to_dict, to_toml

    overrides = {k: v for k, v in {
        "source.camera": camera, "source.path": source, "model.path": model, "detector.kind": detector,
        "detector.model": detector_model, "model.threads": threads}.items() if v is not None}
    cfg = load_config(config_path, overrides)
    if print_config:
        click.echo(to_toml(to_dict(cfg)))
        return
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = run(cfg, RunOptions(max_frames=max_frames, duration_s=duration, preview=preview))
    if as_json:
        click.echo(json.dumps(summary, indent=2))


@cli.command("analyze")
@click.argument("path")
@click.option("--out", default=None, help="Folder for the results (default: ./<name>-analysis).")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Analyse every Nth frame (or image).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True,
              help="Format of timeline.* and tracks.*.")
@click.option("--annotate", is_flag=True, help="Also write OUT/annotated.mp4 with boxes and labels (off by default: privacy).")
@click.option("--config", "config_path", default=None, help="TOML config file (default: built-in defaults).")
@click.option("--model", default=None, help="int8 .tflite model with model.json beside it (default: the shipped model).")
def analyze_cmd(path, out, every, fmt, annotate, config_path, model):
    """Analyse a video, an image or a folder of images: per-face timeline, per-track summary, chart."""
    from pathlib import Path

    from edge.analyze import AnalyzeOptions, analyze, report_lines
    from edge.config import load_config

    cfg = load_config(config_path, {"model.path": model} if model else {})
    out = out or f"{Path(path).stem or 'input'}-analysis"
    summary = analyze(cfg, path, AnalyzeOptions(out=out, every=every, fmt=fmt, annotate=annotate))
    for line in report_lines(summary):
        click.echo(line)


@cli.command("bundle")
@click.option("--model", default=None, help="int8 .tflite with model.json beside it (default: the config's, else the shipped model).")
@click.option("--config", "config_path", default=None, help="TOML config to ship (default: edge run's defaults with camera 0).")
@click.option("--out", required=True, help="Bundle folder, or a file ending in .tar.gz.")
@click.option("--wheel", default=None, help="A prebuilt queue_mood-*.whl (default: build one from this checkout).")
def bundle_cmd(model, config_path, out, wheel):
    """Pack model, detector, config, wheel, install.sh and the systemd unit for a Pi."""
    from edge.bundle import BundleSettings, run

    result = run(BundleSettings(out=out, model=model, config=config_path, wheel=wheel))
    click.echo(f"bundle {result.path} ({len(result.files)} files, {result.size_bytes / 2**20:.1f} MiB)")
    for note in result.notes:
        click.echo(f"note: {note}")


@cli.command("doctor")
@click.option("--config", "config_path", default=None, help="TOML config to check (default: built-in defaults).")
@click.option("--model", default=None, help="int8 .tflite model to check instead of the config's.")
@click.option("--camera", type=int, default=None, help="Camera index to probe (default: the config's camera).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.pass_context
def doctor_cmd(ctx, config_path, model, camera, as_json):
    """Check this machine: runtime, numpy/OpenCV, camera, model, detector, config, sinks, disk, Pi health."""
    from edge.doctor import DoctorSettings, run

    ctx.exit(run(DoctorSettings(config=config_path, model=model, camera=camera, as_json=as_json), echo=click.echo))


BENCHMARKS = ("accuracy", "latency", "pipeline", "detector_recall", "peer")


@cli.command("bench", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("name", type=click.Choice(BENCHMARKS))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_cmd(name, args):
    """Run benchmarks/NAME.py with ARGS (`edge bench NAME --help` lists them); results go to benchmarks/results."""
    import importlib
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent  # a checkout: benchmarks/ sits beside edge/
    if importlib.util.find_spec("benchmarks") is None and (root / "benchmarks" / "__init__.py").is_file():
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ImportError as exc:
        raise UserError(f"The benchmark scripts are not importable ({exc}); run from a checkout of the project "
                        "or reinstall it with pip install -e '.[dev]'.") from exc
    sys.argv = [f"edge bench {name}", *args]  # argparse's usage line and the command recorded in the results
    sys.exit(module.main(list(args)) or 0)


def main():
    cli(prog_name="edge")


if __name__ == "__main__":
    main()
