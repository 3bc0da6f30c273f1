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
@click.option("--init-from", default=None, help="Start from this .keras model's weights (same --arch): a second schedule.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last epoch.")
def train(data, out, arch, epochs, batch_size, lr, optimizer, schedule, label_smoothing, class_weight_power, mixup_alpha,
          no_augment, patience, seed, weights, steps_per_epoch, warmup_epochs, init_from, resume):
    """Train a model on FER2013 (or any dataset in a supported layout)."""
    trainer = build_stage("train.trainer")
    s = trainer.TrainSettings(data=data, out=out, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, schedule=schedule,
                      label_smoothing=label_smoothing, class_weight_power=class_weight_power,
                      mixup_alpha=mixup_alpha, augment=not no_augment, patience=patience, seed=seed,
                      weights=None if weights == "none" else weights, steps_per_epoch=steps_per_epoch,
                      warmup_epochs=warmup_epochs, init_from=init_from)
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
def convert(model, data, out, calibration_size, max_drop, min_agreement, float16, split):
    """Quantize a trained model (run folder or .keras) to int8 TFLite and check parity."""
    build_stage("train.trainer").import_keras()
    quantize = build_stage("convert.quantize")
    parity, failures = quantize.run(quantize.ConvertSettings(model=model, data=data, out=out, calibration_size=calibration_size,
                                           max_drop_pp=max_drop, min_agreement=min_agreement, float16=float16,
                                           split=split))
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
def eval_cmd(model_arg, model_opt, data, split, as_json, raw):
    """Evaluate any model (.keras through Keras, .tflite through the edge runtime) on a dataset."""
    rep = build_stage("train.evaluate").evaluate(model_opt or model_arg, data, split, calibrated=not raw)
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
@click.option("--example", is_flag=True, help="With --print-config: print a commented example with every key instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON at the end (no status line).")
@click.option("-v", "--verbose", count=True, help="-v: per-track detail each second; -vv: debug logs of every library.")
@click.option("-q", "--quiet", is_flag=True, help="Only alerts, warnings and errors; no status line.")
def run_cmd(config_path, camera, source, model, detector, detector_model, threads, max_frames, duration, preview,
            print_config, example, as_json, verbose, quiet):
    """Watch the queue: camera -> faces -> expressions -> queue mood -> local alerts."""
    import json

    from edge.service.app import RunOptions, run
    from edge.config import load_config

    overrides = {k: v for k, v in {
        "source.camera": camera, "source.path": source, "model.path": model, "detector.kind": detector,
        "detector.model": detector_model, "model.threads": threads}.items() if v is not None}
    if example:
        if not print_config:
            raise UserError("--example goes with --print-config: edge run --print-config --example.")
        from edge.configdoc import example_toml

        click.echo(example_toml(), nl=False)
        return
    cfg = load_config(config_path, overrides)
    if print_config:
        from edge.configdoc import effective_toml

        click.echo(effective_toml(cfg), nl=False)
        return
    if verbose and quiet:
        raise UserError("-v and -q contradict each other; choose one.")
    from edge.service.console import Console

    console = Console(verbose=verbose, quiet=quiet, status_line=False if as_json else None)
    try:
        summary = run(cfg, RunOptions(max_frames=max_frames, duration_s=duration, preview=preview),
                      on_result=console.on_result)
    finally:
        console.close()
    if as_json:
        click.echo(json.dumps(summary, indent=2))


@cli.command("config")
@click.option("--config", "config_path", default=None, help="TOML config file to check and print (default: built-in defaults).")
@click.option("--docs", is_flag=True, help="Print the reference of every key (docs/config.md) as Markdown.")
@click.option("--example", is_flag=True, help="Print a commented example with every key (deploy/config.example.toml).")
def config_cmd(config_path, docs, example):
    """Print the effective config, the reference of every key, or a commented example."""
    from edge import configdoc
    from edge.config import load_config

    if docs and example:
        raise UserError("Choose one of --docs and --example.")
    if docs or example:
        click.echo(configdoc.markdown() if docs else configdoc.example_toml(), nl=False)
        return
    click.echo(configdoc.effective_toml(load_config(config_path)), nl=False)


@cli.command("demo")
@click.option("--out", default=None, help="Folder for the scene, alerts.jsonl and summary.png "
                                          "(default: ~/.cache/queue-mood/demo).")
@click.option("--fast", is_flag=True, help="Run through the scene as fast as this machine can (default: its own pace).")
def demo_cmd(out, fast):
    """Watch the monitor raise and clear an alert on a made-up queue scene (no camera, no dataset)."""
    from edge.ops.demo import DemoSettings, run
    from edge.service.console import Console

    Console(status_line=False)  # logs (the alerts among them) on stderr, the live lines on stdout
    result = run(DemoSettings(out=out, realtime=not fast), echo=click.echo)
    kinds = [e["kind"] for e in result.alerts]
    if not ("raised" in kinds and "cleared" in kinds):
        err = UserError(f"The demo ran, but the alert was not both raised and cleared (events: {kinds or 'none'}); "
                        f"see {result.chart}.")
        err.exit_code = 1
        raise err


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

    from edge.ops.analyze import AnalyzeOptions, analyze, report_lines
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
    from edge.ops.bundle import BundleSettings, run

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
    from edge.ops.doctor import DoctorSettings, run

    ctx.exit(run(DoctorSettings(config=config_path, model=model, camera=camera, as_json=as_json), echo=click.echo))


BENCHMARKS = ("accuracy", "latency", "pipeline", "detector_recall", "peer")


@cli.command("bench", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("name", type=click.Choice(BENCHMARKS))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_cmd(name, args):
    """Run benchmarks/NAME.py with ARGS (`edge bench NAME --help` lists them); results go to a new runs/bench/ folder unless --out says where."""
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
