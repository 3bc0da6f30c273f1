"""The alert sinks: a row for each configured sink, and what its spool holds; nothing is sent."""

from __future__ import annotations

import dataclasses
import logging
import platform
import tempfile
import warnings

from edge.errors import UserError
from edge.ops.doctor.context import FAIL, OK, WARN, _Context
from edge.ops.doctor.service import home_note, service_active
from edge.paths import expand_path


def sink_verdict(line: str) -> str:
    """A sink's check() line -> status: unreachable brokers/servers are WARN (events are spooled
    and sent later); a sink that cannot work at all is FAIL."""
    low = line.lower()
    if "not reachable" in low:
        return WARN
    if any(word in low for word in ("cannot", "not found", "check failed", "failed")):
        return FAIL
    return OK


def check_sinks(ctx: _Context, cfg) -> None:
    """Each configured sink's Fanout.check() line, built against an empty temporary spool (so
    the doctor never sends a spooled event), with the real spool's backlog counted beside it."""
    # The sinks' own lines (spooling, retrying, still busy at the stop) speak of a running
    # service; the doctor builds them only to check them and says what it found in its rows.
    sinks_log = logging.getLogger("edge.sinks")
    level = sinks_log.level
    sinks_log.setLevel(logging.CRITICAL)
    try:
        _check_each_sink(ctx, cfg)
    finally:
        sinks_log.setLevel(level)


def _check_each_sink(ctx: _Context, cfg) -> None:
    from edge.config import SinksConfig
    from edge.sinks import SINKS, build_sinks
    from edge.sinks.fanout import configurable
    from edge.sinks.spool import DEAD_DIR, DEFAULT_SPOOL_DIR

    spool_root = expand_path(cfg.sinks.spool_dir or DEFAULT_SPOOL_DIR)
    device = cfg.device_name or platform.node()
    configured = [k for k in configurable() if getattr(cfg.sinks, k, None) is not None]
    ctx.add("sink log", OK, "the journal / stderr (always on)")
    for key in configured:
        section = SINKS[key].doctor_config(getattr(cfg.sinks, key), service_active())
        if isinstance(section, str):  # the sink says why it is not built here
            ctx.add(f"sink {key}", OK, section)
            continue
        backlog = ""
        real = spool_root / key
        try:
            pending = len(list(real.glob("*.json"))) if real.is_dir() else 0
            dead = len(list((real / DEAD_DIR).glob("*.json"))) if (real / DEAD_DIR).is_dir() else 0
            backlog = f"; {pending} undelivered in {real}" if pending else ""
            backlog += f"; {dead} rejected events in {real / DEAD_DIR}" if dead else ""
        except OSError:
            backlog = f"; spool {real} not readable by this user"
        with tempfile.TemporaryDirectory(prefix="qm-doctor-") as tmp:
            one = SinksConfig(spool_dir=tmp, **{key: section})
            try:
                with warnings.catch_warnings():  # gpiozero warns once per pin factory it tries
                    warnings.simplefilter("ignore")
                    fan = build_sinks(one, device)
            except UserError as exc:
                ctx.add(f"sink {key}", FAIL, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001
                ctx.add(f"sink {key}", FAIL, f"cannot be set up: {type(exc).__name__}: {exc}")
                continue
            try:
                line = fan.check().get(key, "check failed: no answer")
            finally:
                fan.close()
        values = [getattr(section, f.name) for f in dataclasses.fields(section)] if dataclasses.is_dataclass(section) else []
        ctx.add(f"sink {key}", sink_verdict(line), line + home_note(ctx, *values) + backlog)
