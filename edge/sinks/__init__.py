"""Alert sinks: where AlertEvents go. Only the event's JSON ever leaves the device, never an image.

A sink is one module here: its `Config` dataclass (the [sinks.<key>] table) and a Sink subclass
that registers itself; importing this package imports every module in it. Constructor shape:
every sink takes the fields of its config dataclass as keyword options, so
`SINKS[key].build(cfg, spool_root, device_name)` builds it:

    LogSink()                                            # always on
    JsonlSink(path="", max_mb=10.0, keep=3)              # JsonlSinkConfig
    WebhookSink(url, timeout_s, headers, *, spool, retry_min_s=2.0, retry_max_s=120.0)
    MqttSink(host, port, topic, state_topic, client_id, username, password, keepalive_s,
             *, spool, device_name="", reconnect_min_s=1.0, reconnect_max_s=60.0, close_wait_s=0.5)
    GpioSink(pin, device, active_high, on_s)             # GpioSinkConfig
    CommandSink(argv, timeout_s)                         # CommandSinkConfig

Sinks with `spooled = True` (webhook, mqtt) keep undelivered events in a Spool; build_sinks
gives each its own `<spool_dir>/<key>` directory (left out: the default spool dir). The
keyword-only options after `*` are not in the config file; tests use them to shorten delays.

`build_sinks(sinks_cfg: SinksConfig, device_name: str) -> Fanout` makes the log sink plus every
configured section; a sink whose constructor raises SinkUnavailable (no hardware, the pin in
use, its library missing) becomes a DisabledSink with one ERROR line, and the rest run.
`Fanout.send/flush` only enqueue: each sink has a worker thread with a bounded queue that calls it, flushes it periodically, and catches, logs and counts
(`Fanout.failures`) every exception, and a sink counts its own failed deliveries (`Sink.failed`); `Fanout.close` is bounded in time; `Fanout.stats()` gives
per-sink delivery counts and `Fanout.check()` each sink's one-line status.
"""

from edge.sinks.base import SINKS, AlertEvent, Sink, register
from edge.sinks.fanout import Fanout, build_sinks
from edge.sinks.spool import Spool

SINKS.load(__name__, __path__)

__all__ = ["SINKS", "AlertEvent", "Fanout", "Sink", "Spool", "build_sinks", "register"]
