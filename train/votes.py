"""FER+ votes (ten annotators per FER2013 image) as training targets and as a second
ground truth for evaluation.

The votes file has one row per image: `file` relative to the dataset folder, then vote
counts per FER+ column (edge.labels.FERPLUS_*). Targets are the votes over our seven
classes as a distribution; images without a row keep their folder label; images whose
votes are mostly unknown / not-a-face are left out of training and of the FER+ metric.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.labels import FERPLUS_CLASSES, FERPLUS_DOUBTFUL, FERPLUS_UNUSED, LABELS
from edge.paths import check_readable, not_a_file
from train.data import open_csv

VOTES_FILE = "ferplus_votes.csv"
# Column order that lines FER+ names up with LABELS, so a row maps to our classes by position.
_CLASS_COLUMNS = [next(k for k, v in FERPLUS_CLASSES.items() if v == name) for name in LABELS]


@dataclass
class Votes:
    source: str
    counts: dict[str, np.ndarray]  # file -> votes over LABELS (int)
    doubtful: set[str]  # files whose votes are mostly unknown or not-a-face

    def __len__(self) -> int:
        return len(self.counts)


def find_votes(data: str | Path, votes: str | Path | None) -> Path:
    """The votes file: the given path, else ferplus_votes.csv beside or above the data folder."""
    if votes:
        p = Path(votes)
        if why := not_a_file(p):
            raise UserError(f"Votes file {p} {why}; pass --votes PATH to ferplus_votes.csv.")
        check_readable(p, "Votes file")
        return p
    if found := votes_beside(data):
        check_readable(found, "Votes file")
        return found
    raise UserError(f"FER+ labels need the votes file: pass --votes PATH ({VOTES_FILE} was not found in {data} "
                    "or the two folders above it).")


def votes_beside(data: str | Path) -> Path | None:
    """ferplus_votes.csv in the data folder or one of the two above it (as fer2013.tar.gz and
    the votes file sit side by side), else None."""
    data = Path(data).resolve()
    return next((f / VOTES_FILE for f in (data, *list(data.parents)[:2]) if (f / VOTES_FILE).is_file()), None)


def read_votes(path: str | Path) -> Votes:
    path = Path(path)
    with open_csv(path) as fh:
        reader = csv.DictReader(fh)
        need = {"file", *FERPLUS_CLASSES, *FERPLUS_DOUBTFUL, *FERPLUS_UNUSED}
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}  # " Anger" from a spreadsheet is anger
        missing = need - set(cols)
        if missing:
            raise UserError(f"{path} is not a FER+ votes file: it lacks the columns {', '.join(sorted(missing))}.")
        counts, doubtful, first_line = {}, set(), {}
        for row in reader:
            lineno = reader.line_num  # DictReader passes over blank lines
            # It pads a short row with None and files a long one's extra cells under the key None.
            found = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None, []))
            if found != len(reader.fieldnames):
                raise UserError(f"{path}:{lineno} has {found} columns, expected {len(reader.fieldnames)} as in its header.")
            try:
                ours = np.array([int(row[cols[c]]) for c in _CLASS_COLUMNS], np.int64)
                unsure = sum(int(row[cols[c]]) for c in FERPLUS_DOUBTFUL)
                other = sum(int(row[cols[c]]) for c in FERPLUS_UNUSED)
                if any(int(row[cols[c]]) < 0 for c in need - {"file"}):  # a target of negative probabilities
                    raise ValueError("a negative count")
            except (TypeError, ValueError) as exc:
                raise UserError(f"{path}:{lineno} has a vote count that is not a whole number of 0 or more ({exc}); "
                                "fix that row.") from exc
            name = row[cols["file"]].strip().replace("\\", "/")
            if name in counts:  # which of the two would count is no choice to make silently
                raise UserError(f"{path}:{lineno} gives votes for {name} again (line {first_line[name]} did); keep "
                                "one row per image.")
            counts[name], first_line[name] = ours, lineno
            # Half or more of the votes say "unknown" or "not a face": the image teaches nothing
            # reliable, so it is left out. An image with no vote on our classes (all contempt) too.
            if 2 * unsure >= unsure + other + ours.sum() or ours.sum() == 0:
                doubtful.add(name)
    if not counts:
        raise UserError(f"{path} has no rows of votes.")
    return Votes(str(path), counts, doubtful)


def majority(counts: np.ndarray) -> int:
    """Index of the class with the most votes, or -1 for a tie or no votes."""
    top = counts.max()
    return int(counts.argmax()) if top > 0 and (counts == top).sum() == 1 else -1


def soft_targets(names: list[str], folder_y: np.ndarray, votes: Votes, folder_weight: float = 0.0):
    """(targets (n, 7) float32, keep mask, counts) for a split.

    A matched image's target is its vote distribution over our classes, mixed with its folder
    label's one-hot by folder_weight (0: votes only); an unmatched image keeps its folder
    label; a doubtful image is left out (keep False).
    """
    k = len(LABELS)
    targets = np.eye(k, dtype=np.float32)[folder_y]
    keep = np.ones(len(names), bool)
    matched = 0
    for i, name in enumerate(names):
        c = votes.counts.get(name)
        if c is None:
            continue
        if name in votes.doubtful:
            keep[i] = False
            continue
        matched += 1
        targets[i] = (1 - folder_weight) * c / c.sum() + folder_weight * targets[i]
    if len(names) and not matched and not (~keep).any():
        raise unmatched_error(names, votes)
    counts = {"images": len(names), "vote_labels": matched, "folder_label_fallback": len(names) - matched - int((~keep).sum()),
              "left_out_doubtful": int((~keep).sum())}
    return targets, keep, counts


def unmatched_error(names: list[str], votes: Votes) -> UserError:
    """The sentence for images none of which has a row in the votes file."""
    if not any("/" in n for n in names):  # fer2013.csv's rows ("fer2013.csv:2"): an image file is class/name at least
        return UserError(f"None of the {len(names)} images matches a row of {votes.source}: they are rows of a CSV "
                         f"({names[0]}, ...), and the votes name each image by its file in FER2013's folder layout "
                         "(e.g. train/angry/Training_10118481.jpg); use that layout as --data (as fer2013.tar.gz "
                         "unpacks), or leave the votes out.")
    # No file name in common either: not a folder given at the wrong level (which the sentence
    # below mends) but another copy of FER2013 whose files were renamed, as Kaggle's PNG one is.
    if not {n.rsplit("/", 1)[-1] for n in names} & {f.rsplit("/", 1)[-1] for f in votes.counts}:
        return UserError(f"None of the {len(names)} images matches a row of {votes.source}, not even by file name "
                         f"({names[0]}, ...): the votes name FER2013's own files (e.g. "
                         "train/angry/Training_10118481.jpg), which copies such as Kaggle's emotion-detection-fer "
                         "rename; use the copy fer2013.tar.gz unpacks as --data, or leave the votes out.")
    return UserError(f"None of the {len(names)} images matches a row of {votes.source}; its file column must be "
                     "relative to the dataset folder (e.g. train/angry/Training_10118481.jpg), so pass the folder "
                     "that holds train/ and val/ as --data.")


def unscorable(names: list[str], votes: Votes, given: bool = True) -> UserError | None:
    """Why the FER+ majority can score none of these images (none has a row, or none a majority);
    None when some image has one. given: the votes file was asked for, not found beside the data."""
    maj = majority_labels(names, votes)
    if not len(names) or (maj >= 0).any():
        return None
    if not any(n in votes.counts for n in names):
        return unmatched_error(names, votes)
    n = skip_counts(names, votes, maj)
    todo = "leave out --votes to score the folder labels only" if given else "only the folder labels are scored"
    return UserError(f"None of the {len(names)} images has a FER+ majority in {votes.source} ({n['tie']} tied, "
                     f"{n['doubtful']} doubtful, {n['no_votes']} without a row), so there is nothing to score against "
                     f"it; {todo}.")


def skip_counts(names: list[str], votes: Votes, maj: np.ndarray) -> dict:
    """The images without a FER+ majority, by why: no row, doubtful votes, a tie."""
    unmatched = sum(n not in votes.counts for n in names)
    doubtful = sum(n in votes.doubtful for n in names)
    return {"no_votes": unmatched, "doubtful": doubtful, "tie": int((maj < 0).sum()) - unmatched - doubtful}


def majority_labels(names: list[str], votes: Votes) -> np.ndarray:
    """The FER+ majority per image; -1 where it is unknown (no row, tie, doubtful)."""
    out = np.full(len(names), -1, np.int64)
    for i, name in enumerate(names):
        c = votes.counts.get(name)
        if c is not None and name not in votes.doubtful:
            out[i] = majority(c)
    return out


def ferplus_report(names: list[str], probs: np.ndarray, votes: Votes) -> dict:
    """The classification report against the FER+ majority, on the images that have one;
    the images skipped (no row, doubtful, tied majority) are counted."""
    from edge.metrics import classification_report

    maj = majority_labels(names, votes)
    known = maj >= 0
    rep = classification_report(maj[known], np.asarray(probs)[known]) if known.any() else {"images": 0}
    rep["skipped"] = skip_counts(names, votes, maj)
    rep["votes"] = votes.source
    return rep
