"""Plugin registries, in the way of Frigate's detector plugins: each detector or sink module
declares its key, its config dataclass and its doctor check beside its code, and registers
itself. Config validation ([detector], [sinks.*]), the CLI's choices, `edge doctor`,
`edge bundle` and the docs read them from here, so a new plugin is one new file."""

from __future__ import annotations

import importlib
import logging
import pkgutil

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
        whose optional dependency is missing is logged and left out, not fatal."""
        for mod in pkgutil.iter_modules(path):
            if mod.name.startswith("_"):
                continue
            try:
                importlib.import_module(f"{package}.{mod.name}")
            except ImportError as exc:
                log.warning("%s '%s' is unavailable: %s", self.family, mod.name, exc)
