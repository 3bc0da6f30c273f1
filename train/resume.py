"""A run folder's state for --resume: which epochs it holds, whether it finished or never
trained, and which saved settings and label files a resume may change."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from edge.card import CARD_NAME
from edge.errors import UserError
from edge.paths import not_a_file
from train.settings import PATH_FIELDS, TrainSettings, absolute


# The files a run writes before its first epoch ends: a folder holding only these never
# trained, and a new command may start it afresh (after a crash or a bad option).
START_FILES = {"train_settings.json", "command.txt", "data.json", "versions.json"}


# What the end of the first epoch writes before its backup is whole (history.csv's row, the
# best model, half-written or renamed, a backup cut short): a kill or a full disk there leaves
# them, and starting afresh loses only that epoch, which trains again.
FIRST_EPOCH_FILES = {"history.csv", "model.partial.keras", "model.keras", "timing.json", "backup"}


# What --resume may change: more epochs lengthen the run (the cosine schedule stretches to the
# new end), patience only moves early stopping. Every other option must match the saved one.
RESUMABLE = ("epochs", "patience")


BACKUP_META = ("training_metadata.json", "training_metadata.json.bkp")  # the last epoch's, the one before


def backup_epoch(out: Path) -> int | None:
    """Epochs the newest readable backup metadata holds (the last epoch's, else the one
    before); None when no epoch reached a backup."""
    for name in BACKUP_META:
        try:
            return int(json.loads((out / "backup" / name).read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _history_rows(history_csv: Path) -> int:
    """Epoch rows in history.csv (lines after the header; 0 when it does not exist)."""
    try:
        return max(0, len(history_csv.read_bytes().splitlines()) - 1)
    except OSError:
        return 0


def never_trained(out: Path) -> bool:
    """True when no epoch of `out` reached a backup: it holds only what a run writes before its
    first backup is whole (CSVLogger opens history.csv at the start, and the first epoch's row
    and best model come before its backup). A model.keras counts only beside that row: without
    it the folder is not a run's (a soup, a copied model) and is never started over."""
    names = {f.name for f in out.iterdir() if not f.name.endswith(".tmp")}  # a write_atomic a kill cut short
    rows = _history_rows(out / "history.csv")
    return (names <= START_FILES | FIRST_EPOCH_FILES and backup_epoch(out) is None and rows <= 1
            and ("model.keras" not in names or rows == 1))


def discard_first_epoch(out: Path) -> bool:
    """Remove what an interrupted first epoch left (see FIRST_EPOCH_FILES), so a run started
    afresh appends no second epoch 0 to history.csv and adds no old time; True if any was there."""
    found = False
    for name in FIRST_EPOCH_FILES:
        f = out / name
        if f.is_dir():
            shutil.rmtree(f)
            found = True
        elif f.exists():
            found = found or name != "history.csv" or f.stat().st_size > 0
            f.unlink()
    return found


def same_file(name: str, new, old) -> bool:
    """A path option naming the saved file by another way (a symlink: the run saves --votes resolved)."""
    return name in PATH_FIELDS and bool(new) and bool(old) and Path(new).resolve() == Path(old).resolve()


def resume_settings(s: TrainSettings, given: dict[str, str] | None) -> tuple[TrainSettings, list[str]]:
    """The settings a resumed run uses: the saved ones, with the given options that may change
    (RESUMABLE, and --data: checked against the saved fingerprint once read). Any other given
    option that differs is refused by name. Returns (settings, notes on what changed)."""
    out = Path(s.out)
    settings_file = out / "train_settings.json"
    if not settings_file.exists():
        raise UserError(f"Nothing to resume in {out}: it has no train_settings.json; start a new run without --resume.")
    if not (out / "backup").is_dir() and not never_trained(out):
        raise UserError(f"Nothing to resume in {out}: no backup/; the run finished or was never started "
                        "(train a new --out, or start one from it with --init-from).")
    saved = absolute(TrainSettings(**{**json.loads(settings_file.read_text()), "out": s.out}))
    differ, notes, use = [], [], asdict(saved)
    for name, flag in (given or {}).items():
        new, old = getattr(s, name), getattr(saved, name)
        if name in ("out", "data") or new == old or same_file(name, new, old):
            continue
        if name in RESUMABLE or (name in MOVABLE and old and moved_label_file(out, name, flag, new)):
            use[name] = new
            notes.append(f"{flag} {new} replaces the saved {old}")
        else:
            # A flag reads by what it does: "--no-augment False (saved: True)" reads backwards.
            differ.append(f"{flag} (the run was started without it)" if isinstance(new, bool) else
                          f"{flag} {new} (saved: {old})")
    if differ:
        raise UserError(f"--resume continues {out} with its saved settings, but {', '.join(differ)} differ from them; "
                        "drop those options, or train a new --out with them.")
    done = backup_epoch(out) or 0
    if use["epochs"] < done:
        raise UserError(f"--epochs {use['epochs']} is fewer than the {done} epochs {out} has already trained; "
                        f"give --epochs {done} or more.")
    use["data"] = s.data  # the same images at another path are fine; run() compares fingerprints
    for name in MOVABLE:
        for p in label_file_paths(name, use[name]):
            if why := not_a_file(p):
                raise UserError(f"--{name} {p}, which {out} started with, {why}; if it moved, resume with --{name} "
                                "and its new place (checked by its sha256 in data.json).")
    return TrainSettings(**use), notes


# Label files a resume may find at another path: the same bytes (their sha256 in data.json) give the same targets.
MOVABLE = ("votes", "teacher")


def label_file_paths(name: str, value: str | None) -> list[Path]:
    """The files --votes or --teacher (comma-separated) names."""
    return [Path(p.strip()) for p in (value or "").split(",") if p.strip()] if name in MOVABLE else []


def moved_label_file(out: Path, name: str, flag: str, new: str) -> bool:
    """Whether `new` holds the bytes the run started on as --votes or --teacher (a file moved
    since); one sentence where it cannot be read or holds other bytes."""
    from edge.card import sha256_file

    try:
        first = json.loads((out / "data.json").read_text()).get("labels") or {}
    except (OSError, ValueError, AttributeError):
        return False
    was = [first.get("votes_sha256")] if name == "votes" else (first.get("teacher") or {}).get("sha256")
    if not was or not all(was):  # a run recorded before the hashes were kept: the path may not change
        return False
    paths = label_file_paths(name, new)
    for p in paths:
        if why := not_a_file(p):
            raise UserError(f"{flag} {p} {why}; pass the file {out} started with at its new place.")
    if [sha256_file(p) for p in paths] != was:
        raise UserError(f"{flag} {new} is not the file {out} started with (its sha256 in data.json differs), so the "
                        "resumed epochs would learn other targets; pass that file at its new place, or train a new "
                        f"--out (--init-from {out / 'model.keras'} keeps the best epoch).")
    return True


def check_label_files(out: Path, info: dict) -> None:
    """On resume, the votes and teacher files must be the bytes the run started on (their sha256
    in data.json): other bytes give the remaining epochs other targets than the first ones and
    than data.json records. Runs recorded before the hashes were kept are not checked."""
    try:
        first = json.loads((out / "data.json").read_text()).get("labels") or {}
    except (OSError, ValueError, AttributeError):
        return
    changed = []
    if first.get("votes_sha256") and first["votes_sha256"] != info.get("votes_sha256"):
        changed.append(f"--votes {info.get('votes')}")
    for key, what in (("sha256", ""), ("card_sha256", f"'s {CARD_NAME}")):
        was, now = (first.get("teacher") or {}).get(key), (info.get("teacher") or {}).get(key)
        if was and now and was != now:
            changed += [f"--teacher {m}{what}" for m, a, b in zip(info["teacher"]["models"], was, now) if a != b]
    if changed:
        raise UserError(f"{', '.join(changed)} {'is' if len(changed) == 1 else 'are'} not the file {out} started with "
                        "(its sha256 in data.json differs), so the resumed epochs would learn other targets; put the "
                        f"original back, or train a new --out (--init-from {out / 'model.keras'} keeps the best "
                        "epoch).")


def val_accuracies(history_csv: Path) -> list[float]:
    """val_accuracy of each epoch history.csv holds, in order (none when it does not exist)."""
    import csv

    if not history_csv.exists():
        return []
    with history_csv.open(newline="", errors="replace") as fh:
        rows = list(csv.DictReader(line.replace("\0", "") for line in fh))
    accs = []
    for n, r in enumerate(rows, start=2):
        try:
            accs.append(float(r["val_accuracy"]))
        except (KeyError, TypeError, ValueError):
            if n == len(rows) + 1:  # the last row, cut short by a crash while it was written: that epoch trains again
                break
            raise UserError(f"{history_csv} line {n} is not an epoch's row ({dict(r)}); fix or remove that line, "
                            "or train a new --out.") from None
    return accs


def best_so_far(history_csv: Path) -> float:
    return max(val_accuracies(history_csv), default=float("-inf"))


def replay_patience(accs: list[float]) -> tuple[float | None, int, int]:
    """(best, best epoch, epochs since it) as EarlyStopping counts them over these val
    accuracies (min_delta 0, mode max; an epoch that sets a new best resets the count)."""
    best, best_epoch, wait = None, 0, 0
    for epoch, acc in enumerate(accs):
        wait += 1
        if best is None or acc > best:
            best, best_epoch, wait = acc, epoch, 0
    return best, best_epoch, wait


def finished(out: Path, s: TrainSettings) -> str | None:
    """Why the run in `out` has nothing left to train under s (every epoch done, or early
    stopping reached with s.patience, tested as EarlyStopping tests after an epoch), or None."""
    done = backup_epoch(out) or 0
    if done >= s.epochs:
        return f"all {s.epochs} epochs trained"
    _, best_epoch, wait = replay_patience(val_accuracies(out / "history.csv")[:done])
    if done > 1 and wait > 0 and wait >= s.patience:
        return (f"stopped early after epoch {done}: no better val accuracy in the {wait} epochs since epoch "
                f"{best_epoch + 1}, --patience {s.patience}")
    return None


def trim_history(history_csv: Path, epochs: int) -> None:
    """Keep the header and the first `epochs` rows of history.csv (the epochs a backup holds).
    Truncated in place: the CSV logger already holds the file open for appending."""
    if not history_csv.exists():
        return
    with history_csv.open("r+b") as f:
        lines = f.read().splitlines(keepends=True)
        if len(lines) > epochs + 1:
            f.truncate(sum(len(line) for line in lines[: epochs + 1]))
