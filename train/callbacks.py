"""The Keras callbacks a run trains with: a backup every epoch that a kill cannot damage, the
best model written whole, early stopping and timing that count on across resumes, and a stop
at the first loss that is not a number."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.files import temporary_name, write_atomic
from train.resume import backup_epoch, best_so_far, replay_patience, trim_history, val_accuracies
from train.settings import TrainSettings


def epoch_sync(keras, batches):
    class EpochSync(keras.callbacks.Callback):
        """Tell the batches which epoch runs, so a resumed run replays the same augmentation."""

        def on_epoch_begin(self, epoch, logs=None):
            batches.set_epoch(epoch)

    return EpochSync()


def _seed_states(model) -> list:
    """The state variables of the model's random seed generators (Dropout's masks). Keras 3
    keeps them out of weights files (keras-team/keras#19796), so a resumed run would draw the
    masks of epoch 1 again; the backup's metadata carries them instead."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


class StaleBackup(ValueError):
    """A backup whose weights and metadata are of different epochs."""


def _copy_atomic(src, dst) -> None:
    """Copy src to a new file renamed over dst (write_atomic): a kill mid-copy leaves dst as it was."""
    write_atomic(Path(dst), Path(src).read_bytes())


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_callback(keras, path: Path, history_csv: Path, best=None):
    class Backup(keras.callbacks.BackupAndRestore):
        """Keras's backup (weights, then metadata naming the epochs they hold; the previous
        epoch's pair kept as .bkp) with three additions: the metadata also holds the seed
        generators' state and the optimizer's step count, and is renamed into place whole; a
        pair that cannot be read, or whose step count does not match (a kill between the two
        writes), gives way to the previous epoch's pair, said in one line; with neither left,
        one sentence, not an h5py traceback."""

        _partial = str(path / "latest.partial.weights.h5")  # Keras saves weights only under *.weights.h5

        def on_train_begin(self, logs=None):
            backup_files = map(Path, (self._weights_path, self._prev_weights_path, self._training_metadata_path,
                                      self._prev_training_metadata_path))
            for partial in (Path(self._partial), *map(temporary_name, backup_files)):
                partial.unlink(missing_ok=True)  # what a kill cut short (write_atomic's temporary names)
            try:
                meta = self._restore()
            except Exception as exc:
                if not (Path(self._prev_weights_path).exists() and Path(self._prev_training_metadata_path).exists()):
                    raise self._damaged(exc) from exc
                # Copied to new files and renamed over the damaged ones, never rewritten in place:
                # Keras leaves the damaged weights file open when h5py fails mid-load, and HDF5
                # would read the copy through that open file's cached state (the damage again).
                _copy_atomic(self._prev_weights_path, self._weights_path)
                _copy_atomic(self._prev_training_metadata_path, self._training_metadata_path)
                try:
                    meta = self._restore()
                except Exception as exc2:
                    raise self._damaged(exc2) from exc2
                why = exc if isinstance(exc, StaleBackup) else f"{type(exc).__name__}, most likely cut short by a crash"
                print(f"The last backup in {path} cannot be used ({why}); resuming from the one before it, so "
                      f"epoch {meta.get('epoch', 0) + 1} trains again.", flush=True)
            trim_history(history_csv, meta.get("epoch", 0))
            if best is not None:  # the checkpoint's bar: the best of the epochs kept
                best.best = best_so_far(history_csv)

        def _restore(self) -> dict:
            """Load the current pair; returns its metadata ({} when there is no backup)."""
            super()._load_model()
            meta = json.loads(Path(self._training_metadata_path).read_text()) if Path(
                self._training_metadata_path).exists() else {}
            epoch = int(meta.get("epoch", 0))
            steps = int(meta.get("iterations", epoch * (self.params.get("steps") or 0)))
            done = int(self.model.optimizer.iterations.numpy())
            if done != steps:  # a kill between the weights and the metadata: the weights are an epoch on
                raise StaleBackup(f"its weights are {done} optimizer steps on, its metadata says {steps}")
            seeds = _seed_states(self.model)
            if len(meta.get("seed_generators", [])) == len(seeds):
                for v, value in zip(seeds, meta.get("seed_generators", [])):
                    v.assign(np.array(value, dtype=v.dtype))
            elif seeds and meta:
                print(f"Note: the backup in {path} predates saving the dropout seeds, so from here on the "
                      "dropout masks differ from those of an uninterrupted run.", flush=True)
            return meta

        def _damaged(self, exc) -> UserError:
            return UserError(f"The training state in {path} cannot be read ({type(exc).__name__}), most likely "
                             f"damaged by a crash while it was written; train a new --out, with --init-from "
                             f"{path.parent / 'model.keras'} to keep the best epoch so far.")

        def _save_model(self):
            """Each file is written under a temporary name and renamed into place, so a kill at
            any point leaves the last epoch's pair or the one before whole (weights renamed
            ahead of their metadata are caught by the step count)."""
            path.mkdir(parents=True, exist_ok=True)
            if Path(self._weights_path).exists() and Path(self._training_metadata_path).exists():
                # The old .bkp metadata goes first: a kill between the two copies leaves a .bkp
                # pair without metadata, never one whose metadata names another epoch's weights.
                Path(self._prev_training_metadata_path).unlink(missing_ok=True)
                _copy_atomic(self._weights_path, self._prev_weights_path)
                _copy_atomic(self._training_metadata_path, self._prev_training_metadata_path)
            self.model.save_weights(self._partial, overwrite=True)
            _fsync(self._partial)
            os.replace(self._partial, self._weights_path)
            # Written after the weights, and renamed into place whole: it is what says they are complete.
            write_atomic(Path(self._training_metadata_path), json.dumps({
                "epoch": self._current_epoch, "batch": self._last_batch_seen,
                "iterations": int(self.model.optimizer.iterations.numpy()),
                "seed_generators": [np.asarray(v.numpy()).tolist() for v in _seed_states(self.model)]}))

    return Backup(str(path), double_checkpoint=True, delete_checkpoint=False)


def early_stopping(keras, patience: int, history_csv: Path | None):
    class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
        """On resume, counts on from history.csv's epochs (best val accuracy, epochs since it),
        so a resumed run stops at the epoch the uninterrupted one would."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            accs = val_accuracies(history_csv) if history_csv else []
            if accs:
                self.best, self.best_epoch, self.wait = replay_patience(accs)

    return ResumedEarlyStopping(monitor="val_accuracy", mode="max", patience=patience, restore_best_weights=True)


class Diverged(Exception):
    """The loss became NaN or infinite; args: (epoch counted from 1, the value)."""


def stop_on_divergence(keras):
    class StopOnDivergence(keras.callbacks.Callback):
        """Raises Diverged at the first training or validation loss that is not a finite number.
        It runs first at each epoch's end, so that epoch writes no history.csv row, best model or
        backup: the run folder keeps the epochs before it, and a NaN never reaches the report."""

        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            self._check(logs)

        def on_epoch_end(self, epoch, logs=None):
            self._check(logs)

        def _check(self, logs):
            for key in ("loss", "val_loss"):
                if key in (logs or {}) and not math.isfinite(float(logs[key])):
                    raise Diverged(self.epoch + 1, float(logs[key]))

    return StopOnDivergence()


def diverged_error(s: TrainSettings, out: Path, epoch: int, loss: float) -> UserError:
    """What to do after a diverged epoch: a lower --lr, from scratch or from the epochs kept."""
    kept = backup_epoch(out)
    then = (f"{out} keeps the {kept} epoch(s) before it, so train a new --out (--init-from {out / 'model.keras'} "
            "starts from their best)" if kept else "nothing was kept, so run the command again")
    return UserError(f"Training diverged in epoch {epoch} (the loss became {loss}); {then} with a lower --lr than "
                     f"{s.lr:g}, e.g. {s.lr / 10:g}.")


def best_checkpoint(keras, path: Path):
    class AtomicCheckpoint(keras.callbacks.ModelCheckpoint):
        """The best model, written to a temporary file and renamed over `path`, so a crash
        mid-write leaves the previous best model whole."""

        tmp = path.with_name(path.stem + ".partial.keras")

        def on_train_begin(self, logs=None):
            self.tmp.unlink(missing_ok=True)  # a crash's half-written file is never renamed
            super().on_train_begin(logs)

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if self.tmp.exists():
                os.replace(self.tmp, path)

    cb = AtomicCheckpoint(str(AtomicCheckpoint.tmp), monitor="val_accuracy", save_best_only=True)
    return cb


def timing_callback(keras, path: Path):
    class Timing(keras.callbacks.Callback):
        """timing.json's train_seconds, summed over every session and written each epoch, so a
        killed session's finished epochs count too."""

        before, started = 0.0, None

        def on_train_begin(self, logs=None):
            self.before = read_train_seconds(path)
            self.started = time.time()

        def total(self) -> float:
            if self.started is None:  # nothing trained in this session (a report written after a crash)
                return read_train_seconds(path)
            return self.before + time.time() - self.started

        def on_epoch_end(self, epoch, logs=None):
            write_atomic(path, json.dumps({"train_seconds": round(self.total(), 1)}, indent=2))

    return Timing()


def read_train_seconds(path: Path) -> float:
    """The earlier sessions' training time from timing.json (0 when none). A damaged file (from
    a version that rewrote it in place) is one WARNING: the count restarts, the run goes on."""
    if not path.exists():
        return 0.0
    try:
        return float(json.loads(path.read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"WARNING: {path} cannot be read ({type(exc).__name__}); the training time counts from this "
              "session, so train_seconds will be short of the true total.", file=sys.stderr, flush=True)
        return 0.0
