"""Home Assistant MQTT discovery, on when the MQTT sink is configured ([sinks.mqtt]
discovery = true): the Pi appears in Home Assistant as one device with sensors for the
negative share, the faces and the faces per emotion, and a problem binary sensor for the alert.

Topics follow Home Assistant's documented discovery scheme:
  <prefix>/sensor/<node_id>/<object_id>/config, <prefix>/binary_sensor/<node_id>/alert/config
  queue-mood/<node_id>/mood          the state all entities read (JSON, retained)
  queue-mood/<node_id>/availability  "online", retained; the broker publishes the last will
                                     "offline" (retained) when the Pi drops off
  queue-mood/<node_id>/instance      each process's client id, at each connect: another one there
                                     is a second Pi of the same name (two Pis left at the host
                                     name "raspberrypi"), logged as an ERROR once per process
Configs are sent on connect and again whenever Home Assistant's birth message ("online" on
homeassistant/status, or <prefix>/status) arrives, so a restarted Home Assistant finds the
device again. An "offline" on the availability topic while connected is a last will: an older
connection's, which the broker sends only once its keep-alive notices that connection is gone (a
power cut, a dropped network: after this process connected), or this connection's own, which a
stopping broker sends to it just before closing it (the two look alike): "online" is published
again at once.

A connection of its own (not the alert sink's): live values are QoS 0 and never spooled, and
the availability topic tracks this process, whatever the alert spool is doing."""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from collections import OrderedDict

from edge import __version__
from edge.errors import missing_dependency
from edge.sinks.base import AlertEvent, Sink, SinkUnavailable
from edge.sinks.mqtt import BrokerOutages, first_heard, new_client, safe_id, stop_client
from edge.sinks.webhook import tcp_reachable

log = logging.getLogger(__name__)

BASE_TOPIC = "queue-mood"
ONLINE, OFFLINE = "online", "offline"
# Home Assistant's birth topic is a setting of its own, not derived from the discovery prefix:
# one who changed only the prefix still announces a restart here.
HA_BIRTH_TOPIC = "homeassistant/status"


def node_id(device: str) -> str:
    """Home Assistant allows [a-zA-Z0-9_-] in the node id; names that differ only in other
    characters get different ids (safe_id), so two Pis of different names never share entities
    or topics (two of the same name do: the instance topic tells them so)."""
    return safe_id(device) or "queue_mood"


class Topics:
    def __init__(self, prefix: str, device: str):
        self.prefix, self.node = prefix, node_id(device)
        self.state = f"{BASE_TOPIC}/{self.node}/mood"
        self.availability = f"{BASE_TOPIC}/{self.node}/availability"
        self.instance = f"{BASE_TOPIC}/{self.node}/instance"
        self.births = sorted({HA_BIRTH_TOPIC, f"{prefix}/status"})

    def config(self, component: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self.node}/{object_id}/config"


def discovery_configs(topics: Topics, device: str, labels) -> list[tuple[str, dict]]:
    """(config topic, payload) for every entity of this Pi."""
    common = {"state_topic": topics.state, "availability_topic": topics.availability,
              "payload_available": ONLINE, "payload_not_available": OFFLINE, "has_entity_name": True,
              "device": {"identifiers": [f"queue_mood_{topics.node}"], "name": f"Queue mood {device}",
                         "manufacturer": "queue-mood", "model": "Queue-mood monitor", "sw_version": __version__},
              "origin": {"name": "queue-mood", "sw_version": __version__}}

    def entity(component, object_id, name, template, **extra):
        payload = {**common, "name": name, "unique_id": f"queue_mood_{topics.node}_{object_id}",
                   "value_template": template, **extra}
        return topics.config(component, object_id), payload

    out = [entity("sensor", "negative_share", "Negative share", "{{ value_json.negative_share }}",
                  unit_of_measurement="%", state_class="measurement", icon="mdi:emoticon-sad-outline"),
           entity("sensor", "faces", "Faces", "{{ value_json.faces }}", state_class="measurement",
                  icon="mdi:account-group")]
    out += [entity("sensor", f"faces_{label}", f"Faces {label}", f"{{{{ value_json.counts.{label} }}}}",
                   state_class="measurement", icon="mdi:emoticon-outline") for label in labels]
    out.append(entity("binary_sensor", "alert", "Alert", "{{ value_json.alert }}", payload_on="ON",
                      payload_off="OFF", device_class="problem"))
    return out


def state_payload(faces: int, negative_share: float | None, counts: dict, alert_raised: bool) -> dict:
    """negative_share is None while the camera is down: nothing is known about the queue, so every
    value is null, which the templates render as "None", Home Assistant's payload for unknown
    (a silent camera never reads as a clear queue of 0 faces)."""
    if negative_share is None:
        return {"faces": None, "negative_share": None, "counts": dict.fromkeys(counts), "alert": None}
    return {"faces": faces, "negative_share": round(100 * negative_share, 1), "counts": dict(counts),
            "alert": "ON" if alert_raised else "OFF"}


class HomeAssistantSink(BrokerOutages, Sink):
    key = "homeassistant"
    _who = "Home Assistant discovery:"

    def __init__(self, host: str, port: int = 1883, username: str = "", password: str = "", keepalive_s: int = 30,
                 *, device_name: str = "", prefix: str = "homeassistant", reconnect_min_s: float = 1.0,
                 reconnect_max_s: float = 60.0, close_wait_s: float = 0.5):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise SinkUnavailable(str(missing_dependency("paho-mqtt", "mqtt"))) from None
        self.host, self.port, self.close_wait_s = host, port, close_wait_s
        self.device = device_name or socket.gethostname()
        self.topics = Topics(prefix, self.device)
        self.connected = False
        self._init_outages()
        self._lock = threading.Lock()
        self._labels: list[str] | None = None  # known from the first status (the model's labels)
        self._state: dict | None = None
        self._instance = f"queue-mood-ha-{self.topics.node}-{uuid.uuid4().hex[:6]}"  # new at each start
        # the newest OTHERS_KEPT other instances (logged): each start of a second Pi of the same name is a new one
        self._others: OrderedDict[bytes, None] = OrderedDict()
        self._client = new_client(mqtt, self._instance)
        if username:
            self._client.username_pw_set(username, password or None)
        self._client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_message
        self._client.connect_async(host, port, keepalive_s)
        self._client.loop_start()

    # paho's network thread
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._refused(reason_code):
            return
        if self._outage and not self._closing:
            log.log(self.back_level(), "Home Assistant discovery: broker %s:%d reachable again%s.", self.host,
                    self.port, self.outages.more())
        self._outage = False
        self.connected = True
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        client.subscribe([*((topic, 1) for topic in self.topics.births), (self.topics.availability, 1),
                          (self.topics.instance, 1)])
        client.publish(self.topics.instance, self._instance, qos=1)  # after the subscribe: heard by all
        self._announce()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic in self.topics.births and msg.payload == ONLINE.encode():
            log.info("Home Assistant came online; sending the discovery configs again.")
            self._announce()
        elif msg.topic == self.topics.availability and msg.payload == OFFLINE.encode() and self.connected \
                and not self._closing:
            # A half-open connection of this Pi's last run (a power cut) outlived this one's
            # start: its last will would show a running Pi unavailable until the next restart.
            # A broker stopping sends this connection's own too, just before the outage: which one it
            # is cannot be told here, so the line names both; said only with an outage that will be.
            log.log(logging.INFO if self.outages.due() else logging.DEBUG, "Home Assistant discovery: the broker "
                    "sent a last will marking this Pi offline, an earlier connection's (left half-open by a power "
                    "cut or a dropped network) or this connection's own (a broker stopping sends it as it closes "
                    "the connection); saying online again.")
            client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        elif msg.topic == self.topics.instance and msg.payload != self._instance.encode() \
                and first_heard(self._others, msg.payload):
            # Not retained: only a process running now says so, never this Pi's earlier runs.
            log.error("Home Assistant discovery: another running monitor has the device name %r (a second Pi left "
                      "at the same host name?): Home Assistant shows the two as one device, with values from "
                      "either; give each Pi its own device_name in its config.", self.device)
            client.publish(self.topics.instance, self._instance, qos=1)  # so the other one learns it too

    def _announce(self) -> None:
        """Every entity's config, then the last known state (so the entities are not 'unknown')."""
        with self._lock:
            labels, state = self._labels, self._state
        if labels is None:
            return
        for topic, payload in discovery_configs(self.topics, self.device, labels):
            self._client.publish(topic, json.dumps(payload), qos=1)
        if state is not None:
            self._client.publish(self.topics.state, json.dumps(state), qos=0, retain=True)

    def _publish_state(self, state: dict, labels: list[str]) -> bool:
        """False while not connected: the state is then published on connect, unless a newer one replaces it."""
        with self._lock:
            new_labels = labels != self._labels
            self._labels, self._state = labels, state
        if not self.connected:
            return False  # live values: the next one replaces this, nothing to keep
        if new_labels:
            self._announce()
        else:
            self._client.publish(self.topics.state, json.dumps(state), qos=0, retain=True)
        return True

    # the sink interface (the frame loop's thread)
    def update(self, status: dict) -> None:
        self._publish_state(state_payload(status["faces"], status["negative_share"], status["counts"],
                                          status["alert_state"] == "raised"), list(status["counts"]))

    def send(self, event: AlertEvent) -> None:
        if event.kind in ("raised", "cleared") and event.counts:  # the alert's sensor follows at once
            if not self._publish_state(state_payload(event.faces, event.negative_share, event.counts,
                                                     event.kind == "raised"), list(event.counts)):
                return
        self.delivered += 1  # events (camera ones have nothing to show here), not discovery or live messages

    def close(self) -> None:
        self._closing = True  # a deliberate disconnect: no warning
        if self.connected:  # a clean disconnect sends no last will: say offline ourselves
            info = self._client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(self.close_wait_s)
            except (RuntimeError, ValueError):
                pass
        stop_client(self._client, self.close_wait_s if self.connected else 0.0)

    def check(self) -> str:
        why = tcp_reachable(self.host, self.port)
        where = f"Home Assistant discovery under {self.topics.prefix}/ via {self.host}:{self.port}"
        return f"{where}: broker not reachable ({why})" if why else f"{where}: broker reachable"
