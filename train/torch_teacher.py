"""A teacher for distillation, trained with PyTorch where a GPU is (the build machine has 2 CPU
cores; a ResNet-18-sized network is out of its reach, minutes on a GPU).

    python -m train.teacher_pack --data data/fer2013 --out runs/pack.npz            # here
    python -m train.torch_teacher fit --pack runs/pack.npz --out runs/teacher --fold 0 --folds 4   # there, once per fold
    python -m train.torch_teacher combine --pack runs/pack.npz --out runs/teacher
    edge train ... --teacher runs/teacher/teacher_probs.npz                    # here

Cross-fitting: with --folds K each model trains on K-1 parts of the training images and
predicts the part it never saw, so every training image gets the probabilities of a model
that did not learn its label (a model's probabilities on its own training images are close
to those labels and teach a student little). Validation images get the mean of the K models.
Two heads share the network: one learns the FER+ vote distribution, one FER2013's folder
label; both are kept. A fit stops within --minutes (the epochs are planned from the second
epoch's time) and resumes from its checkpoint with --resume.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from edge.files import write_atomic
from train.data import FER2013_SIZE as SIZE
from train.provenance import record_command

HEADS = ("ferplus", "fer2013")  # what each output head learns: vote distributions, folder labels
FOLDER_LOSS_WEIGHT = 0.5  # the folder head's share of the loss: it rides along, the votes lead
WARMUP_EPOCHS = 2
EVAL_EVERY = 10


def _net(width: int, classes: int):
    """A ResNet-18 for 48x48 grey faces (3x3 stem at full resolution, no max-pool) with two heads."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.skip = (nn.Sequential() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            return F.relu(self.b2(self.c2(y)) + self.skip(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            cin = width
            for i, mult in enumerate((1, 2, 4, 8)):
                cout = width * mult
                layers += [Block(cin, cout, 1 if i == 0 else 2), Block(cout, cout, 1)]
                cin = cout
            self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3))
            self.heads = nn.ModuleList([nn.Linear(cin, classes) for _ in HEADS])

        def forward(self, x):
            f = self.body(x)
            return [h(f) for h in self.heads]

    return Net()


def _augment(x, torch):
    """Training views of x (B, 1, 48, 48) in [0, 1], on x's device: mirror, rotation +-15 degrees,
    zoom, shift, a camera's down-and-up scaling (24-47 px) on 30%, brightness and contrast,
    random erasing on half."""
    import torch.nn.functional as F

    b, dev = x.shape[0], x.device
    u = lambda *shape: torch.rand(*shape, device=dev)  # noqa: E731
    x = torch.where((u(b) < 0.5)[:, None, None, None], x.flip(-1), x)
    ang = (u(b) * 2 - 1) * math.radians(15)
    zoom = 1 / (0.85 + 0.3 * u(b))
    shift = (u(2, b) * 2 - 1) * 0.2
    theta = torch.stack([torch.stack([torch.cos(ang) * zoom, -torch.sin(ang) * zoom, shift[0]], 1),
                         torch.stack([torch.sin(ang) * zoom, torch.cos(ang) * zoom, shift[1]], 1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), mode="bilinear",
                      padding_mode="border", align_corners=False)
    side = int(torch.randint(24, SIZE, (1,)))
    small = F.interpolate(F.interpolate(x, size=(side, side), mode="area"), size=(SIZE, SIZE), mode="bilinear",
                          align_corners=False)
    x = torch.where((u(b) < 0.3)[:, None, None, None], small, x)
    mean = x.mean((2, 3), keepdim=True)
    x = ((x - mean) * (0.7 + 0.6 * u(b, 1, 1, 1)) + mean + (u(b, 1, 1, 1) * 2 - 1) * 0.15).clamp(0, 1)
    h, w = (0.15 + 0.3 * u(2, b, 1, 1)) * SIZE
    cy, cx = u(2, b, 1, 1) * SIZE
    rows = torch.arange(SIZE, device=dev).view(1, SIZE, 1)
    cols = torch.arange(SIZE, device=dev).view(1, 1, SIZE)
    box = ((rows - cy).abs() < h / 2) & ((cols - cx).abs() < w / 2) & (u(b, 1, 1) < 0.5)
    return torch.where(box[:, None], u(b, 1, 1, 1), x)


def _normalise(x):
    return (x - 0.5) / 0.25


def fold_indices(n: int, fold: int, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of one fold; with one fold, everything trains and nothing is held out."""
    if folds == 1:
        return np.arange(n), np.zeros(0, np.int64)
    part = np.random.default_rng(seed).permutation(n) % folds  # the same split in every fold's process
    return np.flatnonzero(part != fold), np.flatnonzero(part == fold)


def _predict(net, x_u8, torch, batch=1024):
    """Each head's probabilities on uint8 images (N, 48, 48), averaged with their mirror images."""
    net.eval()
    outs = [[] for _ in HEADS]
    with torch.no_grad(), torch.autocast(x_u8.device.type, dtype=torch.bfloat16):
        for i in range(0, len(x_u8), batch):
            xb = _normalise(x_u8[i:i + batch].float().unsqueeze(1) / 255)
            for k, (a, b) in enumerate(zip(net(xb), net(xb.flip(-1)))):
                outs[k].append(((a.float().softmax(1) + b.float().softmax(1)) / 2).cpu().numpy())
    net.train()
    classes = net.heads[0].out_features
    return [np.concatenate(o) if o else np.zeros((0, classes), np.float32) for o in outs]


def accuracy(probs: np.ndarray, truth: np.ndarray) -> float | None:
    """Top-1 accuracy on the images whose truth is known (>= 0)."""
    known = truth >= 0
    return round(float((probs[known].argmax(1) == truth[known]).mean()), 4) if known.any() else None


def _load_pack(path: Path, images: bool = True) -> dict:
    from train.teacher_pack import decoded

    with np.load(path) as d:
        pack = {k: d[k] for k in d.files if not k.endswith(("_bytes", "_offsets"))}
        if images:
            for split in ("train", "val"):
                pack[f"{split}_x"] = decoded(d[f"{split}_bytes"], d[f"{split}_offsets"])
    return pack


def _record(out: Path, argv: list[str], env: dict | None = None) -> None:
    """The command, appended to out/command.txt, and (for a fit) the machine it ran on, to out/environment.json."""
    from benchmarks.common import cpu_features, cpu_model

    out.mkdir(parents=True, exist_ok=True)
    record_command(out, [sys.executable, "-m", "train.torch_teacher", *argv])
    if env is not None:
        env = {"python": platform.python_version(), "machine": platform.machine(), "cpu": cpu_model(),
               "cpu_features": cpu_features(), "cpu_count": os.cpu_count(), **env}
        (out / "environment.json").write_text(json.dumps(env, indent=2))


def _save(obj, path: Path, torch) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


def fit(a) -> int:
    import torch
    import torch.nn.functional as F

    out = Path(a.out)
    fold_dir = out / f"fold{a.fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    _record(out, a.argv, {"torch": torch.__version__, "device": str(dev), "gpu": gpu})
    torch.manual_seed(a.seed * 100 + a.fold)
    torch.backends.cudnn.benchmark = True
    pack = _load_pack(Path(a.pack))
    n = len(pack["train_keys"])
    tr_idx, held = fold_indices(n, a.fold, a.folds, a.seed)
    if a.limit:  # a random part of each (the pack is in class order)
        tr_idx, held = (np.sort(np.random.default_rng(a.seed).permutation(i)[:a.limit]) for i in (tr_idx, held))
    x = torch.from_numpy(pack["train_x"]).to(dev)
    t_votes = torch.from_numpy(pack["train_targets"].astype(np.float32)).to(dev)
    t_folder = torch.from_numpy(pack["train_folder"].astype(np.int64)).to(dev)
    val_x = torch.from_numpy(pack["val_x"]).to(dev)

    net = _net(a.width, len(pack["labels"])).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = max(1, len(tr_idx) // a.batch_size)
    state = {"epoch": 0, "planned": a.max_epochs, "elapsed": 0.0, "history": []}
    ckpt = fold_dir / "checkpoint.pt"
    if a.resume and ckpt.exists():
        saved = torch.load(ckpt, map_location=dev, weights_only=False)
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        torch.set_rng_state(saved["rng"])
        if dev.type == "cuda" and saved.get("cuda_rng") is not None:  # the augmentation draws on the GPU's generator
            torch.cuda.set_rng_state(saved["cuda_rng"], dev)
        print(f"fold {a.fold}: resumed after epoch {state['epoch']} of {state['planned']}", flush=True)
    budget = a.minutes * 60
    rng = np.random.default_rng(a.seed * 1000 + a.fold)
    for _ in range(state["epoch"]):  # the same shuffles as an uninterrupted run
        rng.permutation(tr_idx)
    while state["epoch"] < state["planned"]:
        epoch, started = state["epoch"], time.perf_counter()
        order = torch.from_numpy(rng.permutation(tr_idx)).to(dev)
        total = torch.zeros((), device=dev)
        for s in range(steps):
            pos = epoch + s / steps
            if pos < WARMUP_EPOCHS:
                lr = a.lr * (0.1 + 0.9 * pos / WARMUP_EPOCHS)
            else:
                lr = a.lr * 0.5 * (1 + math.cos(math.pi * (pos - WARMUP_EPOCHS) / max(1, state["planned"] - WARMUP_EPOCHS)))
            for g in opt.param_groups:
                g["lr"] = lr
            b = order[s * a.batch_size:(s + 1) * a.batch_size]
            xb = _normalise(_augment(x[b].float().unsqueeze(1) / 255, torch)).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                out_v, out_f = net(xb)
            loss = (-(t_votes[b] * F.log_softmax(out_v.float(), 1)).sum(1).mean()
                    + FOLDER_LOSS_WEIGHT * F.cross_entropy(out_f.float(), t_folder[b]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        took = time.perf_counter() - started
        state["elapsed"] += took
        state["epoch"] = epoch + 1
        if state["epoch"] == WARMUP_EPOCHS:  # plan the schedule on an epoch past cudnn's first-call tuning
            fit_in = int((budget - state["elapsed"]) / took * 0.95)
            state["planned"] = max(WARMUP_EPOCHS + 1, min(a.max_epochs, WARMUP_EPOCHS + fit_in))
            print(f"fold {a.fold}: {took:.1f} s an epoch; {state['planned']} epochs fit in {a.minutes:g} min", flush=True)
        row = {"epoch": state["epoch"], "seconds": round(took, 2), "lr": round(lr, 5), "loss": round(float(total) / steps, 4)}
        if state["epoch"] % EVAL_EVERY == 0 or state["epoch"] == state["planned"]:
            pv, pf = _predict(net, val_x, torch)
            row.update(val_ferplus=accuracy(pv, pack["val_majority"]), val_fer2013=accuracy(pf, pack["val_folder"]))
            print(f"fold {a.fold} epoch {state['epoch']}/{state['planned']}: val {row['val_ferplus']} against the "
                  f"FER+ majority, {row['val_fer2013']} against FER2013 ({took:.1f} s)", flush=True)
        state["history"].append(row)
        _save({"net": net.state_dict(), "opt": opt.state_dict(), "state": state, "rng": torch.get_rng_state(),
               "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}, ckpt, torch)

    held_v, held_f = _predict(net, x[torch.from_numpy(held).to(dev)], torch)
    val_v, val_f = _predict(net, val_x, torch)
    buf = io.BytesIO()
    np.savez(buf, held=held, held_ferplus=held_v, held_fer2013=held_f, val_ferplus=val_v, val_fer2013=val_f)
    write_atomic(fold_dir / "result.npz", buf.getvalue())
    (fold_dir / "history.json").write_text(json.dumps(state["history"], indent=1))
    print(f"fold {a.fold}: done, {state['epoch']} epochs in {state['elapsed'] / 60:.1f} min", flush=True)
    return 0


def combine(a) -> int:
    out = Path(a.out)
    pack = _load_pack(Path(a.pack), images=False)
    n = len(pack["train_keys"])
    results = sorted(out.glob("fold*/result.npz"))
    if not results:
        print(f"{out} has no fold*/result.npz: run `fit` for each fold first.", file=sys.stderr)
        return 2
    train = {h: np.full((n, len(pack["labels"])), np.nan, np.float32) for h in HEADS}
    val = {h: [] for h in HEADS}
    folds = []
    for r in results:
        with np.load(r) as d:
            for h in HEADS:
                train[h][d["held"]] = d[f"held_{h}"]
                val[h].append(d[f"val_{h}"])
            history = r.with_name("history.json")
            folds.append({"fold": r.parent.name,
                          "epochs": json.loads(history.read_text()) if history.exists() else None, "val_ferplus": accuracy(d["val_ferplus"], pack["val_majority"]),
                          "val_fer2013": accuracy(d["val_fer2013"], pack["val_folder"]),
                          "val_fer2013_from_ferplus_head": accuracy(d["val_ferplus"], pack["val_folder"])})
    _record(out, a.argv)
    missing = int(np.isnan(train["ferplus"][:, 0]).sum())
    if missing:
        print(f"{missing} of {n} training images have no held-out prediction: a fold is missing or was "
              "limited (--limit); run every fold over the whole pack, then combine again.", file=sys.stderr)
        return 2
    val = {h: np.mean(v, axis=0) for h, v in val.items()}
    vote_top = np.where(pack["train_targets"].max(1) > 0, pack["train_targets"].argmax(1), -1)
    metrics = {
        "folds": folds,
        "ensemble_val_ferplus": accuracy(val["ferplus"], pack["val_majority"]),
        "ensemble_val_fer2013": accuracy(val["fer2013"], pack["val_folder"]),
        "ensemble_val_fer2013_from_ferplus_head": accuracy(val["ferplus"], pack["val_folder"]),
        "held_out_train_vs_vote_argmax": accuracy(train["ferplus"], vote_top.astype(np.int64)),
        "held_out_train_vs_folder": accuracy(train["fer2013"], pack["train_folder"].astype(np.int64)),
        "train_images": n,
    }
    np.savez_compressed(out / "teacher_probs.npz", keys=pack["train_keys"], ferplus=train["ferplus"],
                        fer2013=train["fer2013"], labels=pack["labels"], fingerprint=pack["fingerprint"],
                        val_keys=pack["val_keys"], val_ferplus=val["ferplus"], val_fer2013=val["fer2013"])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    brief = {**metrics, "folds": [{k: v for k, v in f.items() if k != "epochs"} for f in folds]}
    print(json.dumps(brief, indent=2))  # the epochs' histories are in metrics.json
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.torch_teacher", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="Train one fold's model and predict its held-out images.")
    f.add_argument("--pack", required=True, help="The pack from python -m train.teacher_pack.")
    f.add_argument("--out", required=True, help="Run folder (one fold<N>/ per fold).")
    f.add_argument("--fold", type=int, default=0)
    f.add_argument("--folds", type=int, default=4, help="1: one model on every training image (no held-out part).")
    f.add_argument("--minutes", type=float, default=6.0, help="Training time to plan the epochs for.")
    f.add_argument("--max-epochs", type=int, default=120)
    f.add_argument("--batch-size", type=int, default=128)
    f.add_argument("--lr", type=float, default=0.1, help="Peak SGD (Nesterov) learning rate.")
    f.add_argument("--width", type=int, default=64, help="Channels of the first stage (ResNet-18: 64).")
    f.add_argument("--seed", type=int, default=1234)
    f.add_argument("--limit", type=int, default=0, help="Train on a random N of the fold's training images (a quick trial).")
    f.add_argument("--device", default="auto", help="auto (cuda when there is one), cuda, cpu.")
    f.add_argument("--resume", action="store_true", help="Continue from fold<N>/checkpoint.pt.")
    c = sub.add_parser("combine", help="Gather the folds' predictions into teacher_probs.npz and metrics.json.")
    c.add_argument("--pack", required=True)
    c.add_argument("--out", required=True)
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    if a.cmd == "fit":
        for what, ok in (("--folds must be 1 or more", a.folds >= 1), ("--fold must lie in [0, --folds)", 0 <= a.fold < a.folds),
                         ("--minutes must be above 0", a.minutes > 0), ("--max-epochs must exceed the 2 warm-up epochs",
                                                                         a.max_epochs > WARMUP_EPOCHS)):
            if not ok:
                print(f"{what}.", file=sys.stderr)
                return 2
    if not Path(a.pack).is_file():
        print(f"--pack {a.pack} does not exist; make it with python -m train.teacher_pack.", file=sys.stderr)
        return 2
    return fit(a) if a.cmd == "fit" else combine(a)


if __name__ == "__main__":
    sys.exit(main())
