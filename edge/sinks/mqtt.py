"""Publishes each event to an MQTT broker (QoS 1) and the current alert state, retained, to a
state topic. Every message is written to the on-disk spool before it is published and removed
only when the broker acknowledges it (PUBACK), so nothing is lost while the broker is down,
nor when the process restarts in the meantime: a new sink on the same spool resends it.
A new process, once connected, also publishes the retained state {"state": "cleared",
"event": null, "device": ...} (after what older runs spooled, before its own first alert): its
alert policy starts clear, and the topic may still say "raised" from before a restart. After each
reconnect it publishes the current state again: a broker restarted without persistence has
forgotten it. Each state names its monitor, and one that hears another monitor on its state
topic logs one ERROR naming it (Pis left at the default topic overwrite each other's state)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from edge.errors import check, check_host, check_range, missing_dependency
from edge.outages import OutageLog
from edge.sinks.base import AlertEvent, Sink, SinkUnavailable, register
from edge.sinks.restamp import restamped, spooled
from edge.sinks.spool import DEFAULT_SPOOL_DIR, Spool
from edge.sinks.webhook import tcp_reachable
from edge.words import plural

log = logging.getLogger(__name__)

STATE_KINDS = ("raised", "cleared")
CHECK_WAIT_S = 5.0  # check(): how long the broker may take to answer the sink's connect
# The retained state a new process starts with: its alert policy starts clear, and the state
# topic may still say "raised" from before a restart (crash, power cut, upgrade).
START_STATE = {"state": "cleared", "event": None}
# Other monitors remembered (this sink's and Home Assistant's), newest kept: a second Pi restarting
# every few minutes for months, or anyone publishing made-up names, must not fill this one's memory.
OTHERS_KEPT = 64


def new_client(mqtt, client_id: str):
    """A paho client whose callbacks cannot end its network thread. paho re-raises an exception
    out of a callback there, and the thread ends: no PUBACK read, no reconnect, `connected` left
    true, every later alert held in the spool until a restart, and nothing said. Suppressed, paho
    goes on, and the fault is logged (paho's own lines, such as a lost socket, stay unsaid: the
    outage lines say those once)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.suppress_exceptions = True
    client.on_log = _log_callback_faults
    return client


def _log_callback_faults(client, userdata, level, buf: str) -> None:
    if buf.startswith("Caught exception in "):
        log.error("MQTT: %s; delivery goes on (a fault in queue-mood: please report this line).", buf)


def first_heard(heard: OrderedDict, name) -> bool:
    """True the first time name is heard: it is then remembered, and the oldest past OTHERS_KEPT
    forgotten (a forgotten one heard again is said again, once)."""
    if name in heard:
        return False
    heard[name] = None
    if len(heard) > OTHERS_KEPT:
        heard.popitem(last=False)
    return True


def stop_client(client, wait_s: float) -> None:
    """Disconnect and end paho's network thread, waiting for it at most wait_s: loop_stop()
    joins a thread that may be asleep between reconnects or in a connect attempt (5 s, longer
    for a slow DNS lookup). The thread is a daemon and ends by itself once it sees the stop."""
    client.disconnect()
    stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
    stopper.start()
    stopper.join(max(0.0, wait_s))


def connect_error() -> str:
    """Why a connect failed, from paho's on_connect_fail: paho calls it inside its `except OSError:`
    around the connect, so that is the current exception."""
    exc = sys.exc_info()[1]
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) if exc else "connection failed"


class BrokerOutages:
    """The paho callbacks that follow a broker connection, for the sinks that hold one: each
    failed (re)connect counted in `failed`, one WARNING per outage, not per retry (paho retries
    forever). A broker that comes and goes (restarted by a cron job, a flaky Wi-Fi link) made
    two lines per outage and sink, some 400 an hour: its outages follow the journal's flap rule
    (edge.outages), and the sink says the end at back_level() with outages.more(). A sink sets
    _who and _retrying, calls _init_outages() before connecting, and _refused() first in its
    on_connect; close() sets _closing."""

    _who = "MQTT"  # starts each line this logs
    _retrying = "retrying"  # what the sink does meanwhile

    def _init_outages(self) -> None:
        self.connect_error = ""  # why the last connect failed; "" once one succeeds
        self._outage = False  # the broker is known to be unreachable: its WARNING is logged
        self._closing = False  # close() disconnects on purpose
        self._answered = False  # the broker answered this connect attempt (CONNACK, accepted or not)
        self.outages = OutageLog()
        self._down_since = 0.0  # monotonic start of the current outage

    def _on_pre_connect(self, client, userdata) -> None:
        self._answered = False

    def _refused(self, reason_code) -> bool:
        """From on_connect: True (counted) when the broker refused the connection."""
        self._answered = True  # a refusal is counted here; the disconnect that follows it is not
        if reason_code.is_failure:
            self._connect_failed(f"refused the connection: {reason_code}")
        else:
            self.connect_error = ""
        return reason_code.is_failure

    def _on_connect_fail(self, client, userdata) -> None:
        self._connect_failed(f"not reachable ({connect_error()})")

    def _connect_failed(self, what: str) -> None:
        self.failed += 1
        self.connect_error = what
        if not self._outage and not self._closing:
            self._outage_starts()
            log.log(self.outages.level, "%s broker %s:%d %s; %s.", self._who, self.host, self.port, what,
                    self._retrying)
        elif not self._closing and self.outages.overdue(time.monotonic() - self._down_since):
            # it came and went, and now stays gone: said all the same
            log.warning("%s broker %s:%d %s; %s.", self._who, self.host, self.port, what, self._retrying)
        self._outage = True

    def _outage_starts(self) -> None:
        self.outages.start()
        self._down_since = time.monotonic()

    def back_level(self) -> int:
        """The level of the line saying an outage ended: INFO for one said, DEBUG for one counted."""
        return logging.INFO if self.outages.said else logging.DEBUG

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected and not self._closing:
            self._outage_starts()
            log.log(self.outages.level, "%s disconnected from %s:%d (%s); %s.", self._who, self.host, self.port,
                    reason_code, self._retrying)
            self._outage = True  # the failed reconnects that follow are the same outage
        elif not self.connected and not self._answered and not self._closing:
            # Closed before any CONNACK (its connection limit reached, a client id it rejects):
            # paho calls only this, so without it the outage would go uncounted and unlogged.
            self._connect_failed("closed the connection before accepting it (its client limit reached, the "
                                 "client id refused, or a TLS port: this sink speaks plain MQTT)")
        self.connected = False


def safe_id(name: str) -> str:
    """name in [a-zA-Z0-9_-] (Home Assistant's node ids; any broker takes it in a client id). When
    that changed it, 6 hex of the name's SHA-1 follow, so "Kasse 1" and "Kasse.1" do not share
    an id; a name already safe keeps it as it is."""
    safe = re.sub(r"[^a-zA-Z0-9_-]", "_", name)
    return safe if safe == name else f"{safe}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def check_topic(topic: str, path: str) -> None:
    check(bool(topic) and not set(topic) & {"#", "+", "\0"} and len(topic.encode()) <= 65535, path, topic,
          "a non-empty MQTT topic without the wildcards # and + (they are for subscribing, not publishing)")


@dataclass
class MqttSinkConfig:
    """Alert sink: events published to an MQTT broker; undelivered events are spooled."""

    host: str = ""  # broker host name, e.g. `"broker.local"`
    port: int = 1883  # broker TCP port
    topic: str = "queue-mood/alerts"  # each event is published here (QoS 1)
    state_topic: str = "queue-mood/state"  # retained: the current alert state
    client_id: str = ""  # MQTT client id; empty: derived from the device name
    username: str = ""  # broker user; empty: no login
    password: str = ""  # broker password
    keepalive_s: int = 30  # MQTT keep-alive interval in seconds
    discovery: bool = True  # Home Assistant MQTT discovery: this Pi appears as a device with sensors
    discovery_prefix: str = "homeassistant"  # Home Assistant's discovery prefix setting

    def validate(self, p):
        check_host(self.host, f"{p}.host", f"{p}.port")
        check_range(self.port, 1, 65535, f"{p}.port", "a TCP port")
        check_topic(self.topic, f"{p}.topic")
        check_topic(self.state_topic, f"{p}.state_topic")
        check_range(self.keepalive_s, 5, 65535, f"{p}.keepalive_s", "seconds")
        check(bool(re.fullmatch(r"[^#+/\s]+(/[^#+/\s]+)*", self.discovery_prefix)), f"{p}.discovery_prefix",
              self.discovery_prefix, "an MQTT topic prefix without #, +, spaces or leading/trailing /")


@register
class MqttSink(BrokerOutages, Sink):
    key = "mqtt"
    Config = MqttSinkConfig
    order = 30
    spooled = True  # build_sinks passes spool=Spool(<spool_dir>/mqtt)
    _retrying = "spooling events, retrying"

    @classmethod
    def build(cls, cfg: MqttSinkConfig, spool_root, device_name: str) -> list[Sink]:
        sinks: list[Sink] = [cls(**dataclasses.asdict(cfg), spool=Spool(spool_root / cls.key), device_name=device_name)]
        if cfg.discovery:
            from edge.sinks.homeassistant import HomeAssistantSink

            sinks.append(HomeAssistantSink(cfg.host, cfg.port, cfg.username, cfg.password, cfg.keepalive_s,
                                           device_name=device_name, prefix=cfg.discovery_prefix))
        return sinks

    @classmethod
    def doctor_config(cls, cfg: MqttSinkConfig, service_running: bool) -> MqttSinkConfig:
        # never take over the running service's client id on the broker, nor announce this Pi
        # to Home Assistant (its availability would flip to offline on close), nor set the
        # retained alert state (the doctor does not know it)
        return _DoctorConfig(**{**dataclasses.asdict(cfg), "discovery": False,
                                "client_id": f"{cfg.client_id or 'queue-mood'}-doctor-{os.getpid()}"})

    def __init__(self, host: str, port: int = 1883, topic: str = "queue-mood/alerts",
                 state_topic: str = "queue-mood/state", client_id: str = "", username: str = "",
                 password: str = "", keepalive_s: int = 30, discovery: bool = True,
                 discovery_prefix: str = "homeassistant", *, spool: Spool | None = None,
                 device_name: str = "", reconnect_min_s: float = 1.0, reconnect_max_s: float = 60.0,
                 close_wait_s: float = 0.5, announce_state: bool = True):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise SinkUnavailable(str(missing_dependency("paho-mqtt", "mqtt"))) from None
        self._ok_rc = (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # NO_CONN: paho queues it
        self._too_large = mqtt.MQTT_ERR_PAYLOAD_SIZE
        self.delivered = 0  # events the broker acknowledged (not the state messages beside them)
        self.host, self.port, self.topic, self.state_topic = host, port, topic, state_topic
        # discovery/discovery_prefix: build() adds a HomeAssistantSink for them
        self.spool = spool if spool is not None else Spool(DEFAULT_SPOOL_DIR / self.key)
        self.close_wait_s = close_wait_s
        self.connected = False
        self._init_outages()
        self._pump_lock = threading.Lock()  # one publisher at a time keeps spool order
        # Never held while calling paho: paho calls on_publish holding its own message lock.
        self._mid_lock = threading.Lock()
        # paho message id -> (spool id, None for the start state; an event, not a state message), awaiting PUBACK
        self._inflight: dict[int, tuple[str | None, bool]] = {}
        self._early: set[int] = set()  # PUBACKs that beat the bookkeeping after publish()
        self._publishing = False  # a publish() is under way: an unknown PUBACK may be its own
        # True once this process has a state to publish: its start state, or an event's state spooled
        self._state_set = not announce_state
        # Every state message names its monitor: several Pis left at the default state_topic
        # overwrite each other's retained state (a clear at till 2 hides till 1's alert), and
        # each tells from the other's messages on the topic that it is not alone there.
        self.device = device_name or socket.gethostname()
        self._others: OrderedDict[str, None] = OrderedDict()  # the newest OTHERS_KEPT other monitors heard (logged)
        self._start_state = {**START_STATE, "device": self.device}
        self._alert_state = self._start_state  # the policy's, as the last raised/cleared event left it
        self._announce_state = announce_state
        self._retained = self._start_state  # the newest state message, for publishing again on a reconnect
        self._restate = False  # a reconnect: publish _retained again once the spool is sent
        self._state_spooled: str | None = None  # the spool id of this run's newest state message
        # A random suffix: many Pis share the host name "raspberrypi", and a broker drops the
        # older of two clients with the same id. The spool, not the broker session, keeps events.
        # The name made safe: a broker may refuse every connect of an id with spaces or umlauts.
        cid = client_id or f"queue-mood-{safe_id(self.device)}-{uuid.uuid4().hex[:6]}"
        self._client = new_client(mqtt, cid)
        if username:
            self._client.username_pw_set(username, password or None)
        self._client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.connect_async(host, port, keepalive_s)
        self._client.loop_start()  # connects, and reconnects forever, in paho's thread

    # paho callbacks (paho's network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._refused(reason_code) or self._closing:
            return
        if self._outage:
            log.log(self.back_level(), "MQTT broker %s:%d reachable again (%d messages spooled)%s.", self.host,
                    self.port, len(self.spool), self.outages.more())
        else:
            log.info("MQTT connected to %s:%d (%d messages spooled).", self.host, self.port, len(self.spool))
        self._outage = False
        self.connected = True
        # A broker restarted without persistence (or a new one) has forgotten the retained state:
        # a dashboard subscribing now would see none until the next alert, raised or not.
        self._restate = self._announce_state and self._state_set
        if self._announce_state:
            client.subscribe(self.state_topic, qos=0)
        self._pump()  # resend what waited on disk; paho itself resends what was in flight

    def _on_message(self, client, userdata, msg) -> None:
        """A state message of another monitor on this one's state_topic. Retained ones are left
        out: they may be this Pi's own, from before it was renamed; a monitor running now publishes
        again at its start, each alert and each reconnect."""
        try:  # whatever anyone may publish there: raising here would end paho's network thread
            other = json.loads(msg.payload).get("device")
        except (ValueError, AttributeError, RecursionError):  # RecursionError: "[[[[..."
            return
        if msg.retain or not isinstance(other, str) or other == self.device or not first_heard(self._others, other):
            return
        log.error("MQTT: another monitor, %r, publishes its alert state to this one's state_topic %r, so each "
                  "overwrites the other's retained state; give each Pi its own [sinks.mqtt] state_topic "
                  "(e.g. queue-mood/%s/state).", other, self.state_topic, safe_id(self.device))
        self._restate = self._state_set  # said again, so the other one hears of this one too
        self._pump()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._mid_lock:
            sent = self._inflight.get(mid)
            if sent is None:
                if self._publishing:  # the PUBACK beat the bookkeeping after publish()
                    self._early.add(mid)
                return
        self._acked(*sent)
        with self._mid_lock:  # only now: a pump meanwhile saw it in flight, not pending again
            del self._inflight[mid]

    def _acked(self, event_id: str | None, is_event: bool) -> None:
        if is_event:  # counted first: once the spool no longer holds it, stats say it was delivered
            with self._mid_lock:
                self.delivered += 1
        if event_id is not None:
            self.spool.ack(event_id)

    def _pump(self) -> None:
        """Publish every spooled message that is not already in flight, oldest first."""
        with self._pump_lock:
            if not self.connected:
                return
            with self._mid_lock:
                busy = {event_id for event_id, _ in self._inflight.values()}
            for event_id, msg in self.spool.pending():
                if event_id in busy:
                    continue
                if not (isinstance(msg, dict) and {"topic", "payload"} <= msg.keys()
                        and isinstance(msg.get("retain"), bool)):
                    # valid JSON, but not what keep() writes (a hand edit): never sendable, and
                    # raising here would end paho's network thread (it calls this on connect)
                    self.spool.dead_letter(event_id, "its spool file does not hold an MQTT message")
                    continue
                if not self._publish(event_id, msg):
                    return
            if not self._state_set:  # after what older runs spooled, before this run's first event
                self._state_set = self._publish(None, {"topic": self.state_topic, "retain": True,
                                                       "payload": self._start_state})
            elif self._restate:  # after the spool, whose state messages are older
                self._restate = not self._publish(None, {"topic": self.state_topic, "retain": True,
                                                         "payload": restamped(self._retained)})

    def _publish(self, event_id: str | None, msg: dict) -> bool:
        """Publish one message (QoS 1), acked in the spool (event_id) on its PUBACK. False:
        paho cannot take it now, try again later. Called with the pump lock held."""
        with self._mid_lock:
            self._publishing = True
        try:
            info = self._client.publish(msg["topic"], json.dumps(msg["payload"]), qos=1, retain=msg["retain"])
        except (ValueError, TypeError, KeyError) as exc:
            # A bad topic (e.g. spooled before the config was fixed) or payload: paho
            # refuses it before sending, and retrying can never succeed.
            info, why = None, f"MQTT cannot publish it: {exc}"
        else:
            why = "MQTT payload too large" if info.rc == self._too_large else ""
        queued = info is not None and info.rc in self._ok_rc
        sent = (event_id, not msg["retain"])  # retained: a state message, not an event
        with self._mid_lock:
            # Only this publish can have been acked early (one at a time: the pump lock); any
            # other unknown id is stale and must not match a later message that reuses it once
            # paho's ids wrap at 65535 (that message would be deleted from the spool unsent).
            acked = queued and info.mid in self._early
            self._publishing = False
            self._early.clear()
            if queued and not acked:
                self._inflight[info.mid] = sent
        if acked:
            self._acked(*sent)
        if why and event_id is not None:
            self.spool.dead_letter(event_id, why)
        if not queued and not why:
            log.warning("MQTT publish failed (rc=%s); will retry.", info.rc)
            return False
        return True

    def keep(self, event: AlertEvent) -> bool:
        payload = spooled(event)  # the state messages hold it too: each is stamped again as it is sent
        self.spool.put({"topic": self.topic, "retain": False, "payload": payload})
        state = self._state_after(event.kind, payload)
        if state is not None:
            self._state_set = True  # START_STATE would now be older news
            # Retained, so a dashboard that subscribes later still sees whether an alert is on.
            if self._state_spooled is not None:
                # The state this replaces is old news (the broker keeps the newest only): spooled on
                # through a broker outage, each took a file and half the cap's room, and at the cap an
                # alert was dropped while they stayed. Removed first, so the new one never pushes an
                # alert out. Its event stays; one already sent or in flight: no matter.
                self.spool.discard(self._state_spooled)
            self._state_spooled = self.spool.put({"topic": self.state_topic, "retain": True, "payload": state})
            self._retained = state  # once spooled: a reconnect's pump publishes it after its event
        return True

    def _state_after(self, kind: str, payload: dict) -> dict | None:
        """The retained state an event leaves (None: unchanged). While the camera is down nothing
        is known of the queue, so "unknown", as /status and Home Assistant say; when it is back,
        the alert's state again (the policy keeps it meanwhile)."""
        if kind in STATE_KINDS:
            self._alert_state = {"state": kind, "event": payload, "device": self.device}
            return self._alert_state
        if kind == "camera_down":
            return {"state": "unknown", "event": payload, "device": self.device}
        return self._alert_state if kind == "camera_up" else None

    def unsaved(self) -> int:
        # events only: the retained state messages beside them are not alerts of their own; read
        # without the spool's lock, which a stalled write at the stop may hold
        return sum(not msg["retain"] and not (self.spool.dir / f"{event_id}.json").exists()
                   for event_id, msg in self.spool.held().items())

    def send(self, event: AlertEvent) -> None:
        self.keep(event)
        self._pump()

    def flush(self) -> None:
        self._pump()

    def close(self) -> None:
        self._closing = True  # a deliberate disconnect: no warning
        self._pump()
        deadline = time.monotonic() + self.close_wait_s
        while self.connected and self._inflight and time.monotonic() < deadline:
            time.sleep(0.02)  # give PUBACKs a moment, so the next start does not resend
        # Not connected: nothing to send, so no waiting for paho's thread to finish a connect attempt.
        stop_client(self._client, deadline - time.monotonic() if self.connected else 0.0)

    def check(self) -> str:
        why = tcp_reachable(self.host, self.port)
        backlog = f"; {plural(len(self.spool), 'message')} spooled" if len(self.spool) else ""
        where = f"MQTT broker {self.host}:{self.port}"
        if why:
            return f"{where} not reachable ({why}){backlog}"
        # An open port says nothing of the login (a wrong password, a TLS port): this sink is
        # connecting already, so wait for the broker's answer.
        deadline = time.monotonic() + CHECK_WAIT_S
        while not self.connected and not self.connect_error and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.connected:
            return f"{where} reachable, connected{backlog}"
        if self.connect_error:  # "failed": the doctor FAILs it, as a setting to fix
            return f"{where} reachable, but connecting failed: it {self.connect_error}{backlog}"
        return f"{where}: the port opens, but the broker is not reachable by MQTT (no answer within " \
               f"{CHECK_WAIT_S:g} s){backlog}"


@dataclass
class _DoctorConfig(MqttSinkConfig):
    """`edge doctor`'s section: the sink only checks the broker."""

    announce_state: bool = False
