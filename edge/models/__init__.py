"""The shipped default model, located as package data (never relative to the cwd)."""

from __future__ import annotations

from pathlib import Path

from edge.card import INT8_MODEL
from edge.errors import UserError


def default_model_path() -> Path:
    p = Path(__file__).resolve().parent / "default" / INT8_MODEL
    if not p.exists():
        raise UserError(f"The shipped default model is missing ({p}); pass --model PATH to a model from `edge convert`.")
    return p
