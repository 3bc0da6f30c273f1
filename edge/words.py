"""Counts in sentences: "1 frame", "2 frames", never "1 frames"."""


def plural(n: int, noun: str) -> str:
    """"1 track", "0 tracks", "3 tracks" (nouns that take an s)."""
    return f"{n} {noun if n == 1 else noun + 's'}"
