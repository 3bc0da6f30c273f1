"""The one label order shared by every stage (FER2013's classes, alphabetical)."""

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

# Other spellings users' datasets have (the Kaggle "emotion-detection-fer" layout).
ALIASES = {
    "disgusted": "disgust",
    "fearful": "fear",
    "surprised": "surprise",
}

# fer2013.csv's integer codes, which are not alphabetical.
FER2013_CSV_CODES = {0: "angry", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"}


def columns_in_label_order(labels) -> list[int]:
    """The output column of each of LABELS, in LABELS order, for a model whose card lists its
    outputs as `labels` (the same names, in any order): scores and reports index LABELS, while
    the runtime reads a model's outputs by the card's names."""
    return [list(labels).index(name) for name in LABELS]


def label_index(name: str) -> int | None:
    """Index of a class folder name in LABELS, or None if it names no known class."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return LABELS.index(key) if key in LABELS else None

# FER+ vote columns (Barsoum et al. 2016) -> our classes. contempt has no FER2013 class and
# unknown / nf (not a face) mark doubtful images; the training stage reads these names.
FERPLUS_CLASSES = {
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprise": "surprise",
}
FERPLUS_DOUBTFUL = ("unknown", "nf")
FERPLUS_UNUSED = ("contempt",)
