"""What every doctor check shares: the three verdicts, one check's row, the command's settings,
and the context the checks fill in turn."""

from __future__ import annotations

from dataclasses import dataclass, field

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass
class Check:
    name: str
    status: str  # OK | WARN | FAIL
    detail: str


@dataclass
class DoctorSettings:
    config: str | None = None
    model: str | None = None
    camera: int | None = None
    as_json: bool = False
    camera_timeout_s: float = 15.0


@dataclass
class _Context:
    s: DoctorSettings
    checks: list[Check] = field(default_factory=list)
    on_pi: bool = False
    board: str = ""
    cfg: object = None
    config_loaded: bool = True  # False: the file failed, and the checks run on the built-in defaults
    home: str = ""  # `~` in the config: the service's HOME when this is the service's config, "" otherwise

    def add(self, name: str, status: str, detail: str) -> Check:
        c = Check(name, status, " ".join(str(detail).split()))
        self.checks.append(c)
        return c
