"""Plugin registries, in the way of Frigate's detector plugins: each detector or sink module
declares its key, its config dataclass and its doctor check beside its code, and registers
itself. Config validation ([detector], [sinks.*]), the CLI's choices, `edge doctor`,
`edge bundle` and the docs read them from here, so a new plugin is one new file."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import pkgutil
import re
import sys

log = logging.getLogger(__name__)


class Registry(dict):
    """key -> plugin class. Every plugin class has `key` and `Config` (its config dataclass,
    or None when it has no config section)."""

    def __init__(self, family: str):
        super().__init__()
        self.family = family

    def register(self, cls):
        self[cls.key] = cls
        return cls

    def load(self, package: str, path) -> None:
        """Import every module of a package, so each plugin in it registers itself. A module
        whose optional dependency is missing, or that fails otherwise at import (a plugin file
        dropped in with a bug), is logged and left out, not fatal: the monitor runs with the
        others, and a config naming it gets the unknown-kind sentence."""
        for mod in pkgutil.iter_modules(path):
            if mod.name.startswith("_"):
                continue
            try:
                importlib.import_module(f"{package}.{mod.name}")
            except ImportError as exc:
                log.warning("%s '%s' is unavailable: %s", self.family, mod.name, exc)
            except Exception as exc:  # noqa: BLE001 - whatever a plugin's import raises
                log.error("%s '%s' failed to load and is left out: %s: %s", self.family, mod.name,
                          type(exc).__name__, exc)

    def reference(self, table: str) -> list[str]:
        """Markdown rows for the docs, from the plugins themselves: the key, the first line of
        its module's docstring and its config keys with their defaults."""
        rows = [f"| {self.family} | what it is | {table} keys (defaults) |", "| --- | --- | --- |"]
        for key, cls in sorted(self.items()):
            doc = " ".join((sys.modules[cls.__module__].__doc__ or "").split())
            doc = re.split(r"(?<=\.)\s+(?=[A-Z])", doc)[0]  # the first sentence
            keys = ", ".join(f"`{f.name} = {json.dumps(_default(f))}`" for f in dataclasses.fields(cls.Config)
                             if f.name != "kind") if cls.Config else "always on, no table"
            rows.append(f"| `{key}` | {doc} | {keys} |")
        return rows


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
