"""Home Assistant MQTT discovery against a real mosquitto: what a Home Assistant instance
subscribed to the broker would receive, checked against its documented discovery scheme."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from edge.config import SinksConfig
from edge.sinks.mqtt import MqttSinkConfig
from edge.labels import LABELS
from edge.sinks import build_sinks
from tests.test_sinks import Broker, _records, broker, ev, needs_mosquitto, wait_for  # noqa: F401 - the broker fixture

pytestmark = needs_mosquitto
NODE = "till_3_" + hashlib.sha1(b"till 3").hexdigest()[:6]  # "till 3" made safe, with its hash: see node_id
CONFIG_TOPIC = re.compile(r"homeassistant/(sensor|binary_sensor)/(?P<node>[a-zA-Z0-9_-]+)/(?P<obj>[a-zA-Z0-9_-]+)"
                          r"/config")


class Listener:
    """A paho client standing in for Home Assistant: records (topic, payload bytes, retain)."""

    def __init__(self, port: int, topics=("homeassistant/#", "queue-mood/#")):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._record
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(15), "listener could not subscribe"

    def _record(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def configs(self) -> list[tuple[str, dict]]:
        with self._lock:
            return [(t, json.loads(p)) for t, p, _ in self.messages if CONFIG_TOPIC.fullmatch(t)]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listeners():
    made = []

    def make(*a, **k):
        made.append(Listener(*a, **k))
        return made[-1]

    yield make
    for m in made:
        m.close()


def status(faces=3, share=2 / 3, state="raised", **counts) -> dict:
    return {"faces": faces, "negative_share": share, "alert_state": state,
            "counts": {**dict.fromkeys(LABELS, 0), **(counts or {"angry": 2, "happy": 1})}}


def value_of(template: str, state: dict):
    """What Home Assistant's `{{ value_json.a.b }}` templates give for a state payload."""
    (path,) = re.fullmatch(r"\{\{ value_json\.([a-z_.]+) \}\}", template).groups()
    for key in path.split("."):
        state = state[key]
    return state


def test_discovery_configs_state_birth_and_clean_offline(broker, listeners, tmp_path):  # noqa: F811
    ha = listeners(broker.port)
    fan = build_sinks(SinksConfig(spool_dir=str(tmp_path), mqtt=MqttSinkConfig(host="127.0.0.1", port=broker.port)),
                      "till 3")
    assert [s.key for s in fan.sinks] == ["log", "mqtt", "homeassistant"]
    fan.update(status())
    entities = 2 + len(LABELS) + 1
    assert wait_for(lambda: len(ha.configs()) >= entities), ha.messages
    configs = dict(ha.configs())
    assert len(configs) == entities
    state_topics, avail_topics, ids, devices = set(), set(), set(), set()
    for topic, c in configs.items():
        m = CONFIG_TOPIC.fullmatch(topic)
        assert m["node"] == NODE  # the space is not allowed in a node id
        assert c["unique_id"].endswith(m["obj"]) and c["name"]
        assert c["payload_available"] == "online" and c["payload_not_available"] == "offline"
        assert c["device"]["identifiers"] and c["device"]["name"] == "Queue mood till 3"
        state_topics.add(c["state_topic"])
        avail_topics.add(c["availability_topic"])
        ids.add(c["unique_id"])
        devices.add(json.dumps(c["device"], sort_keys=True))
    assert len(ids) == entities and len(devices) == 1  # one device, distinct entities
    (state_topic,) = state_topics
    (avail_topic,) = avail_topics
    alert = configs[f"homeassistant/binary_sensor/{NODE}/alert/config"]
    assert alert["device_class"] == "problem" and (alert["payload_on"], alert["payload_off"]) == ("ON", "OFF")
    share = configs[f"homeassistant/sensor/{NODE}/negative_share/config"]
    assert share["unit_of_measurement"] == "%" and share["state_class"] == "measurement"

    assert wait_for(lambda: ha.on(state_topic))
    state = json.loads(ha.on(state_topic)[-1])
    got = {CONFIG_TOPIC.fullmatch(t)["obj"]: value_of(c["value_template"], state) for t, c in configs.items()}
    assert got == {"negative_share": 66.7, "faces": 3, "alert": "ON",
                   **{f"faces_{k}": v for k, v in status()["counts"].items()}}

    # availability is retained: Home Assistant starting later still sees the Pi online
    late = listeners(broker.port, topics=(avail_topic,))
    assert wait_for(lambda: late.messages)
    assert late.messages[0][1:] == (b"online", True)

    # Home Assistant restarts: its birth message brings every config again
    before = len(ha.configs())
    ha.client.publish("homeassistant/status", "online", qos=1)
    assert wait_for(lambda: len(ha.configs()) >= before + entities)

    fan.update(status(faces=1, share=0.0, state="clear", happy=1))
    assert wait_for(lambda: json.loads(ha.on(state_topic)[-1])["alert"] == "OFF")

    fan.close()  # a clean stop says offline itself (the broker sends no last will then)
    assert wait_for(lambda: ha.on(avail_topic)[-1:] == [b"offline"])


def test_last_will_marks_a_dead_pi_offline(broker, listeners, tmp_path):  # noqa: F811
    ha = listeners(broker.port, topics=("queue-mood/+/availability",))
    code = textwrap.dedent(f"""
        import time
        from edge.sinks.homeassistant import HomeAssistantSink
        s = HomeAssistantSink("127.0.0.1", {broker.port}, device_name="till-9")
        while not s.connected:
            time.sleep(0.05)
        print("up", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        assert wait_for(lambda: b"online" in [p for _, p, _ in ha.messages])
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean disconnect: only the broker can say it
        proc.wait(10)
    assert wait_for(lambda: ha.messages[-1][:2] == ("queue-mood/till-9/availability", b"offline"))


@pytest.mark.parametrize("birth_topic", ["homeassistant/status", "ha/status"])
def test_a_changed_discovery_prefix_still_hears_home_assistant_restart(birth_topic, broker, listeners,  # noqa: F811
                                                                         caplog):
    """Home Assistant's birth topic is its own setting (homeassistant/status by default), apart
    from the discovery prefix: one who changed only the prefix must still get the configs again.
    (A connect that races the first update announces twice, so counts are at least, and the birth
    is known heard by the sink's own line.)"""
    from edge.sinks.homeassistant import HomeAssistantSink

    caplog.set_level(logging.INFO, logger="edge.sinks.homeassistant")
    ha = listeners(broker.port, topics=("ha/#",))
    sink = HomeAssistantSink("127.0.0.1", broker.port, device_name="till-8", prefix="ha")
    try:
        sink.update(status())
        entities = 2 + len(LABELS) + 1
        assert wait_for(lambda: len([t for t, _, _ in ha.messages if t.endswith("/config")]) >= entities)
        ha.client.publish(birth_topic, "online", qos=1)
        assert wait_for(lambda: "sending the discovery configs again" in caplog.text, timeout=5)
        assert wait_for(lambda: len([t for t, _, _ in ha.messages if t.endswith("/config")]) >= 2 * entities)
    finally:
        sink.close()


def test_an_older_connections_last_will_does_not_leave_a_running_pi_offline(broker, listeners, tmp_path):  # noqa: F811
    """A power cut leaves the last run's connection half-open at the broker; the Pi boots and
    connects again before the broker's keep-alive gives up on the old one, whose last will
    "offline" then comes after the new run's "online"."""
    import paho.mqtt.client as mqtt

    from edge.sinks.homeassistant import HomeAssistantSink

    avail = "queue-mood/till-7/availability"
    old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="queue-mood-ha-till-7-old")
    old.will_set(avail, "offline", qos=1, retain=True)
    old.connect("127.0.0.1", broker.port)
    old.loop_start()
    assert wait_for(old.is_connected)
    ha = listeners(broker.port, topics=(avail,))
    sink = HomeAssistantSink("127.0.0.1", broker.port, device_name="till-7")
    try:
        assert wait_for(lambda: sink.connected and ha.on(avail)[-1:] == [b"online"])
        old.loop_stop()
        old.socket().shutdown(socket.SHUT_RDWR)  # gone without a DISCONNECT: the broker sends its will
        assert wait_for(lambda: b"offline" in ha.on(avail))
        assert wait_for(lambda: ha.on(avail)[-1:] == [b"online"], timeout=5)
        late = listeners(broker.port, topics=(avail,))  # Home Assistant starting now sees the retained value
        assert wait_for(lambda: late.on(avail)) and late.on(avail) == [b"online"]
    finally:
        sink.close()
        old.socket() and old.socket().close()
    assert wait_for(lambda: ha.on(avail)[-1:] == [b"offline"])  # a clean stop is not taken back


def test_two_running_pis_of_the_same_name_each_say_so_and_a_restart_does_not(broker, caplog):  # noqa: F811
    """Two Pis left at the host name "raspberrypi" share one node id: Home Assistant would show
    them as one device with each other's values. A restart of the same Pi is not a second Pi."""
    from edge.sinks.homeassistant import HomeAssistantSink

    def clashes(sink):
        return [r for r in caplog.records if r.levelno == logging.ERROR and r.thread == sink._client._thread.ident]

    with caplog.at_level(logging.INFO, logger="edge.sinks.homeassistant"):
        first = HomeAssistantSink("127.0.0.1", broker.port, device_name="raspberrypi")
        assert wait_for(lambda: first.connected)
        first.close()
        again = HomeAssistantSink("127.0.0.1", broker.port, device_name="raspberrypi")  # the same Pi, restarted
        other = None
        try:
            assert wait_for(lambda: again.connected)
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            other = HomeAssistantSink("127.0.0.1", broker.port, device_name="raspberrypi")  # a second Pi
            assert wait_for(lambda: len(clashes(again)) == 1 and len(clashes(other)) == 1)
        finally:
            again.close()
            if other is not None:
                other.close()
    (line,) = {r.getMessage() for r in caplog.records if r.levelno == logging.ERROR}
    assert line == ("Home Assistant discovery: another running monitor has the device name 'raspberrypi' (a second "
                    "Pi left at the same host name?): Home Assistant shows the two as one device, with values from "
                    "either; give each Pi its own device_name in its config.")


def test_delivered_counts_the_events_it_published(broker, tmp_path):  # noqa: F811
    from edge.sinks import Fanout
    from edge.sinks.homeassistant import HomeAssistantSink

    sink = HomeAssistantSink("127.0.0.1", broker.port, device_name="till-4")
    fan = Fanout([sink], flush_every_s=3600)
    try:
        assert wait_for(lambda: sink.connected)
        fan.send(ev("raised", 1))  # its state goes to the alert sensor
        fan.send(ev("camera_down", 2))  # nothing to show: handled all the same
        assert wait_for(lambda: fan.stats()["homeassistant"]["sent"] == 2)
        assert fan.stats()["homeassistant"]["delivered"] == 2
    finally:
        fan.close()


def test_refused_login_warns_once_per_outage_counts_each_try_and_says_when_it_is_back(tmp_path, caplog):
    from edge.sinks import Fanout
    from edge.sinks.homeassistant import HomeAssistantSink

    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker", "allow_anonymous false\n")
    b.start()
    sink = HomeAssistantSink("127.0.0.1", b.port, device_name="till-5", reconnect_min_s=0.05, reconnect_max_s=0.1)
    fan = Fanout([sink], flush_every_s=3600)
    try:
        with caplog.at_level(logging.INFO, logger="edge.sinks.homeassistant"):
            assert wait_for(lambda: sink.failed >= 3)  # was: 0, one WARNING per try instead
            assert fan.stats()["homeassistant"]["failures"] >= 3  # /status and /metrics sink_failures
            b.stop()
            b.conf.write_text(b.conf.read_text().replace("allow_anonymous false", "allow_anonymous true"))
            b.start()  # same port, the login now accepted
            assert wait_for(lambda: sink.connected)
            assert _records(caplog, logging.WARNING, "") == [
                f"Home Assistant discovery: broker 127.0.0.1:{b.port} refused the connection: Not authorized; "
                "retrying."]
            assert len(_records(caplog, logging.INFO, "reachable again")) == 1
    finally:
        fan.close()
        b.stop()
