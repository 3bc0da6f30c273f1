"""Counts in sentences: "1 frame", "2 frames", never "1 frames"."""


def plural(n: int, noun: str, many: str = "") -> str:
    """"1 track", "0 tracks", "3 tracks"; `many` for a noun that does not just take an s."""
    return f"{n} {noun if n == 1 else many or noun + 's'}"
