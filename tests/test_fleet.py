"""HQ's fleet view (deploy/fleet/): the rules checked and unit-tested with promtool, the
dashboard's queries limited to series that exist, and Debian's prometheus really scraping
two `edge run` monitors, with their store/checkout labels, through the shipped config."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from edge.config import load_config
from edge.paths import expand_path
from edge.release import checkout_commit
from tests.live_edge import METRICS_TOKEN, TOKEN, free_port
from tests.test_sinks import receivers  # noqa: F401 - a fixture: a webhook receiver

FLEET = Path(__file__).resolve().parents[1] / "deploy" / "fleet"
PROMTOOL, PROMETHEUS = shutil.which("promtool"), shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="needs promtool (apt install prometheus)")


def promtool(*args, cwd=FLEET) -> subprocess.CompletedProcess:
    r = subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@needs_promtool
@pytest.mark.slow
def test_rules_pass_promtool_check_and_their_unit_tests():
    assert "SUCCESS" in promtool("check", "rules", "rules.yml").stdout
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml").stdout


@needs_promtool
def test_the_readmes_try_it_command_checks_the_config(tmp_path):
    """The README's `To try it` command, up to starting prometheus, in a copy of deploy/fleet."""
    readme = " ".join((FLEET.parents[1] / "README.md").read_text().split())
    command = re.search(r"To try it.*?`(cd deploy/fleet && [^`]*)`", readme).group(1)
    command = command.split(" && prometheus ")[0].replace("cd deploy/fleet", f"cd {tmp_path / 'deploy' / 'fleet'}")
    shutil.copytree(FLEET, tmp_path / "deploy" / "fleet")
    r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, env={"TOKEN": TOKEN,
                       "PATH": f"{Path(PROMTOOL).parent}:/usr/bin:/bin"})
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    assert (tmp_path / "deploy" / "fleet" / "queue-mood.token").read_text().strip() == TOKEN


@needs_promtool
def test_the_readmes_try_it_commands_run_prometheus_and_alertmanager_on_data_in_the_folder(tmp_path):
    """Both `To try it` lines of the README to the end, in a copy of deploy/fleet, each on a port
    of its own (9090 and 9093 are Debian's services'): the servers become ready and keep their
    data in the folder's data/, which git ignores."""
    alertmanager = shutil.which("prometheus-alertmanager")
    if not (PROMETHEUS and alertmanager):
        pytest.skip("needs Debian's prometheus and prometheus-alertmanager")
    readme = " ".join((FLEET.parents[1] / "README.md").read_text().split())
    lines = {"prometheus": re.search(r"To try it.*?`(cd deploy/fleet && [^`]*)`", readme).group(1),
             "alertmanager": re.search(r"Alertmanager, in another shell: `(cd deploy/fleet && [^`]*)`", readme).group(1)}
    # Without these, Debian's binaries use its services' folders under /var/lib/prometheus: a
    # user's prometheus panics there, and root's leaves files the service cannot open.
    assert "--storage.tsdb.path=data/" in lines["prometheus"], lines["prometheus"]
    assert "--storage.path=data/" in lines["alertmanager"], lines["alertmanager"]
    fleet = tmp_path / "deploy" / "fleet"
    shutil.copytree(FLEET, fleet)
    env = {"TOKEN": TOKEN, "HOME": str(tmp_path), "PATH": f"{Path(PROMETHEUS).parent}:/usr/bin:/bin"}
    for name, line in lines.items():
        port = free_port()
        own = f" --web.listen-address=127.0.0.1:{port}" + (" --cluster.listen-address=" if name == "alertmanager" else "")
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(["bash", "-c", line.replace("cd deploy/fleet", f"cd {fleet}") + own],
                                stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline, ready = time.monotonic() + 60, False
            while not ready and proc.poll() is None and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as r:
                        ready = r.status == 200
                except OSError:
                    time.sleep(0.3)
            assert ready, log.read_text()[-3000:]
            assert (fleet / "data" / name).is_dir(), sorted(p.name for p in fleet.iterdir())
        finally:
            os.killpg(proc.pid, 15)  # bash and the server it started
            proc.wait(30)
    ignored = subprocess.run(["git", "check-ignore", "deploy/fleet/data/prometheus", "deploy/fleet/data/alertmanager"],
                             capture_output=True, text=True, cwd=FLEET.parents[1])
    assert ignored.stdout.split() == ["deploy/fleet/data/prometheus", "deploy/fleet/data/alertmanager"], ignored


def test_the_readmes_service_install_leaves_the_token_readable_by_debians_prometheus_user(tmp_path, request):
    """Debian's prometheus service runs as user `prometheus`: a token file left as `To try it` made it
    (umask 077, its maker's alone) fails every scrape ("unable to read authorization credentials
    file"), so every Pi reads as down. The README's service line, run into a folder of our own."""
    import grp
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root, to act as the service's user")
    try:
        pwd.getpwnam("prometheus"), grp.getgrnam("prometheus")
    except KeyError:
        pytest.skip("needs Debian's prometheus user (apt install prometheus)")
    readme = " ".join((FLEET.parents[1] / "README.md").read_text().split())
    line = re.search(r"as Debian's `prometheus` service.*?`(cd deploy/fleet && sudo cp [^`]*)`", readme)
    assert line, "README says how to install the fleet config for Debian's prometheus service"
    fleet = tmp_path / "deploy" / "fleet"
    shutil.copytree(FLEET, fleet)
    etc = Path(tempfile.mkdtemp(prefix="etc-prometheus-"))  # pytest's own folders are root's alone
    request.addfinalizer(lambda: shutil.rmtree(etc))
    etc.chmod(0o755)
    command = (line.group(1).split(" && sudo systemctl ")[0].replace("cd deploy/fleet", f"cd {fleet}")
               .replace("sudo ", "").replace("/etc/prometheus", str(etc)))
    command = f"(umask 077; echo \"$TOKEN\" > {fleet}/queue-mood.token) && {command}"  # as `To try it` makes it
    r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                       env={"TOKEN": METRICS_TOKEN, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    assert r.returncode == 0, r.stdout + r.stderr
    read = subprocess.run(["runuser", "-u", "prometheus", "--", "cat", str(etc / "queue-mood.token")],
                          capture_output=True, text=True, timeout=30)
    assert read.stdout.strip() == METRICS_TOKEN, read.stderr
    assert (etc / "queue-mood.token").stat().st_mode & 0o007 == 0  # still no one else's


@needs_promtool
def test_the_example_targets_file_is_not_scraped_but_a_copy_of_it_is_valid(tmp_path):
    """The shipped example's made-up store must not be scraped (QueueMonitorDown for it); the
    README names it, and copied to targets/<store>.yml it passes promtool's check of SD files."""
    glob = re.search(r'files: \["(targets/[^"]+)"\]', (FLEET / "prometheus.yml").read_text()).group(1)
    assert glob == "targets/*.yml" and not list(FLEET.glob(glob))
    example = FLEET / "targets" / "example-store.yml.example"
    assert "`targets/example-store.yml.example`" in (FLEET.parents[1] / "README.md").read_text()
    conf = tmp_path / "fleet"
    shutil.copytree(FLEET, conf)
    (conf / "queue-mood.token").write_text(TOKEN + "\n")
    shutil.copy(example, conf / "targets" / "berlin-mitte.yml")
    out = promtool("check", "config", "prometheus.yml", cwd=conf).stdout
    assert "SUCCESS" in out and "WARNING" not in out, out


def test_the_example_targets_file_asks_each_pi_for_the_fleets_metrics_token():
    """prometheus.yml sends the fleet's one token: set as each Pi's page `token` (as the example once
    said, "a token") it would open every page of the fleet, not /metrics only."""
    comments = " ".join(line.lstrip("# ") for line in (FLEET / "targets" / "example-store.yml.example").read_text()
                        .splitlines() if line.startswith("#"))
    assert "metrics_token" in comments and "and a token" not in comments, comments


def test_the_fleet_token_file_is_ignored_by_git():
    ignored = (FLEET.parents[1] / ".gitignore").read_text().split()
    assert "deploy/fleet/queue-mood.token" in ignored


def _series_the_monitor_exports() -> set[str]:
    from edge.service.exposition import render
    from edge.service.status import Stats

    stats = Stats("rt", "m", "video", device="d")
    snap = stats.snapshot()
    snap["health"] = {"cpu_temperature_c": 50.0, "throttled_flags": 0, "throttled_now": [],  # as on a Pi
                      "process_cpu_share": 0.3, "clock_synced": False,
                      "disks": {"spool": {"free_bytes": 2 * 10**9, "size_bytes": 32 * 10**9, "read_only": 0}}}  # under edge run
    snap["sink_failures"] = {"webhook": 1}
    snap["stage_ms"] = {"detect": 5.0}  # after the first frames
    snap["sinks"] = {"gpio": {**dict.fromkeys(("sent", "delivered", "queued", "spooled", "in_memory",
                                                  "dead_lettered", "dropped", "lost"), 0), "disabled": "no GPIO"}}
    body = render(lambda: snap)[0].decode()
    return {m for m in re.findall(r"^(queue_mood_\w+)", body, re.M)}


def test_the_readme_and_the_exposition_docstring_name_every_series():
    """The series lists HQ reads (README's fleet section, exposition.py's docstring) name each series
    /metrics has on a Pi; README may sum up the camera's and each sink's with a `*`."""
    pytest.importorskip("prometheus_client", reason="/metrics needs prometheus_client (edge extra)")
    from edge.service import exposition

    def listed(text: str) -> set[str]:
        names = set()
        for name in re.findall(r"queue_mood_[\w{},*]+", text):
            name = re.sub(r"\{[\w,]*\}$", "", name.rstrip(","))  # its labels, the list's comma
            head, _, rest = name.partition("{")  # queue_mood_sink_{sent,delivered}_total
            alts, _, tail = rest.partition("}")
            names |= {head + a + tail for a in alts.split(",")} if rest else {head}
        return names

    readme = " ".join((FLEET.parents[1] / "README.md").read_text().split())
    fleet = readme[readme.index("### Fleet view at HQ"):readme.index("### `edge doctor`")]
    for where, names in (("README", listed(fleet)), ("exposition.py", listed(exposition.__doc__))):
        wild = tuple(n.rstrip("*") for n in names if n.endswith("*"))
        missing = {n for n in _series_the_monitor_exports() if n not in names and not n.startswith(wild or ("-",))}
        assert not missing, f"{where} does not name {sorted(missing)}"


def _dashboard_queries() -> list[str]:
    dash = json.loads((FLEET / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_and_rules_use_only_series_that_exist():
    pytest.importorskip("prometheus_client", reason="/metrics needs prometheus_client (edge extra)")
    exported = _series_the_monitor_exports()
    rules = (FLEET / "rules.yml").read_text()
    recorded = set(re.findall(r"record: (\S+)", rules))
    # an expr on one line, or folded (`expr: >-`) over the more indented lines below it
    rule_exprs = [m.group(1) or m.group(2) for m in re.finditer(r"expr: (?:>-?\n((?:          .+\n)+)|(.+))", rules)]
    assert len(rule_exprs) == rules.count("expr:")
    for expr in _dashboard_queries() + rule_exprs:
        for name in re.findall(r"\b((?:queue_mood|store:queue_mood|checkout:queue_mood)[\w:]*)", expr):
            assert name in exported | recorded, f"{name} in {expr!r} is neither exported nor recorded"
    assert {"queue_mood_alert_raised", "queue_mood_alerts_raised_total", "queue_mood_negative_share",
            "queue_mood_faces", "queue_mood_faces_by_emotion", "queue_mood_fps",
            "queue_mood_cpu_temperature_celsius", "queue_mood_process_cpu_share", "queue_mood_camera_up",
            "queue_mood_sink_disabled", "queue_mood_clock_synced", "queue_mood_throttled", "queue_mood_under_voltage",
            "queue_mood_sink_lost_total", "queue_mood_sink_dead_lettered_total", "queue_mood_sink_spool_dropped_total",
            "queue_mood_sink_spool_in_memory", "queue_mood_disk_free_bytes", "queue_mood_disk_size_bytes"} <= exported


@needs_promtool
def test_the_alerts_raised_stat_is_a_whole_number_of_the_last_24_h(tmp_path):
    """Two alerts in the last hours read 2, not the 2.0008 that increase() extrapolates, under a
    title that says the 24 h it counts (at 9 am, "today" would include last night's)."""
    panel = next(p for p in json.loads((FLEET / "grafana-dashboard.json").read_text())["panels"]
                 if "queue_mood_alerts_raised_total" in p["targets"][0]["expr"])
    expr = panel["targets"][0]["expr"]
    assert "[24h]" in expr and "24 h" in panel["title"] and "today" not in panel["title"].lower()
    (tmp_path / "test.yml").write_text(json.dumps({  # YAML is a superset of JSON
        "rule_files": [], "evaluation_interval": "1m",
        "tests": [{"interval": "15s",
                   "input_series": [{"series": 'queue_mood_alerts_raised_total{store="s1", checkout="1"}',
                                     "values": "1x400 2x400 3x400"}],  # the monitor began with one raised
                   "promql_expr_test": [{"expr": expr.replace("$store", ".*"), "eval_time": "5h",
                                         "exp_samples": [{"labels": "{}", "value": 2}]}]}]}))
    promtool("test", "rules", "test.yml", cwd=tmp_path)


def _panels() -> list[dict]:
    return json.loads((FLEET / "grafana-dashboard.json").read_text())["panels"]


def test_table_panels_ask_for_one_table_of_the_current_values():
    """A table fed time series shows one series at a time behind a selector (one monitor of the
    fleet); an instant query in table format gives one row per monitor."""
    tables = [p for p in _panels() if p["type"] == "table"]
    assert tables
    for panel in tables:
        for target in panel["targets"]:
            assert target.get("format") == "table" and target.get("instant") is True, panel["title"]


def test_the_dashboard_lists_firing_alerts_by_store_and_checkout():
    """Which Pis need a person now (down, camera, clock, power, delivery): the firing alerts, each
    with its store and checkout, not only the top row's counts."""
    (panel,) = [p for p in _panels() if "ALERTS" in p["targets"][0]["expr"]]
    expr = panel["targets"][0]["expr"]
    assert panel["type"] == "table" and 'alertstate="firing"' in expr and 'store=~"$store"' in expr


@needs_promtool
def test_the_alerts_raised_per_checkout_in_the_last_24_h(tmp_path):
    """Which checkouts had alerts in the last 24 h and how many: whole numbers per store and
    checkout, a restart's counter reset not counted as alerts lost, checkouts without any left out."""
    (panel,) = [p for p in _panels() if "queue_mood_alerts_raised_total" in p["targets"][0]["expr"]
                and "checkout" in p["targets"][0]["expr"]]
    expr = panel["targets"][0]["expr"]
    assert "[24h]" in expr and "24 h" in panel["title"]
    (tmp_path / "test.yml").write_text(json.dumps({
        "rule_files": [], "evaluation_interval": "1m",
        "tests": [{"interval": "15s",
                   "input_series": [
                       {"series": 'queue_mood_alerts_raised_total{store="s1", checkout="1", instance="a"}',
                        "values": "0x400 1x400 0x10 1x400"},  # one, a restart, one more
                       {"series": 'queue_mood_alerts_raised_total{store="s1", checkout="2", instance="b"}',
                        "values": "0x1200"},
                       {"series": 'queue_mood_alerts_raised_total{store="s2", checkout="1", instance="c"}',
                        "values": "0x400 3x800"}],
                   "promql_expr_test": [{"expr": expr.replace("$store", ".*"), "eval_time": "5h",
                                         "exp_samples": [{"labels": '{store="s1", checkout="1"}', "value": 2},
                                                         {"labels": '{store="s2", checkout="1"}', "value": 3}]}]}]}))
    promtool("test", "rules", "test.yml", cwd=tmp_path)


@needs_promtool
def test_the_release_per_pi_table_lists_each_pis_commit_bundle_and_model_from_real_metric_text(tmp_path):
    """Which Pis run which release (an upgrade that reached some Pis and not others): one row per
    Pi with the labels /metrics really writes, a Pi that knows no commit among them."""
    pytest.importorskip("prometheus_client", reason="/metrics needs prometheus_client (edge extra)")
    from edge.service.exposition import render
    from edge.service.status import Stats

    (panel,) = [p for p in _panels() if p["title"] == "Release per Pi"]
    assert panel["type"] == "table"
    pis = {"1": {"version": "0.1.0", "commit": "0123456789ab-dirty", "bundle_created": "2026-12-02T17:41:47+00:00",
                 "model_sha256": "ab" * 32},
           "2": {"version": "0.1.0", "commit": None, "bundle_created": "2026-11-20T09:00:00+00:00",  # an older bundle
                 "model_sha256": "cd" * 32}}
    series, rows = [], []
    for checkout, release in pis.items():
        body = render(Stats("rt", "m", "video", device=f"till-{checkout}", release=release).snapshot)[0].decode()
        (line,) = [ln for ln in body.splitlines() if ln.startswith("queue_mood_info{")]
        scraped = line[:line.rindex("}")]  # the series as scraped, plus the scrape config's labels
        series.append({"series": f'{scraped},store="s1",checkout="{checkout}",instance="pi{checkout}"}}',
                       "values": "1x20"})
        shown = {"store": "s1", "checkout": checkout, "device": f"till-{checkout}", "version": "0.1.0",
                 "bundle_created": release["bundle_created"], "model_sha256": release["model_sha256"][:12],
                 **({"commit": release["commit"]} if release["commit"] else {})}  # an empty label is no label
        rows.append({"labels": "{" + ", ".join(f'{k}="{v}"' for k, v in shown.items()) + "}", "value": 1})
    (tmp_path / "test.yml").write_text(json.dumps({
        "rule_files": [], "evaluation_interval": "1m",
        "tests": [{"interval": "15s", "input_series": series,
                   "promql_expr_test": [{"expr": panel["targets"][0]["expr"].replace("$store", ".*"),
                                         "eval_time": "2m", "exp_samples": rows}]}]}))
    promtool("test", "rules", "test.yml", cwd=tmp_path)


def test_the_monitor_cpu_panel_says_what_its_percent_axis_means():
    """queue_mood_process_cpu_share is 1.0 with one core busy: 100% on the panel's percent axis."""
    (panel,) = [p for p in json.loads((FLEET / "grafana-dashboard.json").read_text())["panels"]
                if "queue_mood_process_cpu_share" in p["targets"][0]["expr"]]
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert "100% = one core busy" in panel["title"] and "1 =" not in panel["title"], panel["title"]


# --- the free space on the disks of the monitor's state (queue_mood_disk_*, QueueMonitorDiskLow) ---


def test_disk_space_is_what_this_user_may_write_once_per_disk_under_its_first_folders_name(tmp_path):
    """Two real disks (tmpfs): the spool's, with the history database beside it and the spool folder
    not made yet, and the JSON lines' stick; free is f_bavail (ext4 keeps blocks for root)."""
    from tests.test_reliability import tmpfs
    from edge.service.health import DiskSpace

    ext4 = os.statvfs_result((4096, 4096, 1000, 300, 250, 0, 0, 0, 0, 255))  # 50 blocks kept for root
    assert DiskSpace({"spool": tmp_path}, statvfs=lambda _: ext4).read() == {
        "spool": {"free_bytes": 250 * 4096, "size_bytes": 1000 * 4096, "read_only": 0}}
    with tmpfs(tmp_path / "card", "size=1m") as card, tmpfs(tmp_path / "stick", "size=512k") as stick:  # skips unless root
        (card / "history.sqlite").write_bytes(b"x" * 256 * 1024)
        disks = DiskSpace({"spool": card / "spool" / "webhook", "jsonl": stick, "history": card}).read()
        assert disks == {"spool": {"free_bytes": 768 * 1024, "size_bytes": 1024 * 1024, "read_only": 0},
                         "jsonl": {"free_bytes": 512 * 1024, "size_bytes": 512 * 1024, "read_only": 0}}


def test_a_disk_remounted_read_only_is_a_series_of_its_own(tmp_path):
    """ext4 remounts a failing SD card read-only and its free space reads as before: DiskLow never
    fires, so the flag is a series of its own for QueueMonitorDiskReadOnly (the page's health row:
    test_webpage)."""
    pytest.importorskip("prometheus_client", reason="/metrics needs prometheus_client (edge extra)")
    from edge.service.exposition import render
    from edge.service.health import DiskSpace
    from edge.service.status import Stats

    flags = {"now": os.ST_RDONLY | os.ST_NOSUID}

    def statvfs(_):
        return os.statvfs_result((4096, 4096, 8_000_000, 5_000_000, 4_800_000, 0, 0, 0, flags["now"], 255))

    stats = Stats("rt", "m", "video")
    stats._disks = DiskSpace({"spool": tmp_path}, statvfs=statvfs)
    for flag, expected in ((os.ST_RDONLY | os.ST_NOSUID, 1), (os.ST_NOSUID, 0)):
        flags["now"] = flag
        stats._health_t = float("-inf")  # read again at this snapshot
        body = render(stats.snapshot)[0].decode()
        values = {name: float(v) for name, v in re.findall(r'^queue_mood_(disk_\w+)\{disk="spool"\} (\S+)$', body, re.M)}
        assert values == {"disk_free_bytes": 4_800_000 * 4096, "disk_size_bytes": 8_000_000 * 4096,
                          "disk_read_only": expected}, values


def test_a_disk_that_cannot_be_read_is_left_out_and_said_once_not_per_scrape(tmp_path, caplog):
    from edge.service.health import DiskSpace

    closed = {"now": True}

    def statvfs(path):
        if closed["now"] and Path(path) == tmp_path / "history":
            raise PermissionError(13, "Permission denied")
        return os.statvfs(path)

    (tmp_path / "history").mkdir()
    # the spool on another disk than the history's, which this machine has to offer (a chroot may lack /dev/shm)
    other = next((d for d in ("/dev/shm", "/run", "/proc") if os.path.isdir(d)
                  and os.stat(d).st_dev != os.stat(tmp_path).st_dev), None)
    if other is None:
        pytest.skip("needs a second file system (/dev/shm, /run or /proc) beside the temp folder's")
    disks = DiskSpace({"spool": other, "history": tmp_path / "history"}, statvfs=statvfs)
    with caplog.at_level(logging.INFO, logger="edge.service.health"):
        for _ in range(3):
            assert set(disks.read()) == {"spool"}
        closed["now"] = False
        for _ in range(3):
            assert set(disks.read()) == {"spool", "history"}
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        ("WARNING", f"Free space on the disk of {tmp_path / 'history'} cannot be read (Permission denied); /metrics "
                    "leaves its queue_mood_disk_* series out until it can."),
        ("INFO", f"Free space on the disk of {tmp_path / 'history'} is readable again; /metrics has it.")]


def test_metrics_has_the_free_space_series_and_leaves_out_a_disk_it_cannot_read(tmp_path):
    pytest.importorskip("prometheus_client", reason="/metrics needs prometheus_client (edge extra)")
    from edge.service.exposition import render
    from edge.service.status import Stats

    fs = os.statvfs(tmp_path)
    stats = Stats("rt", "m", "video")
    assert "queue_mood_disk" not in render(stats.snapshot)[0].decode()  # no folders named: no series
    stats.set_disks({"spool": tmp_path})
    body = render(stats.snapshot)[0].decode()
    values = {name: float(v) for name, v in re.findall(r'^(queue_mood_disk_\w+)\{disk="spool"\} (\S+)$', body, re.M)}
    assert values["queue_mood_disk_size_bytes"] == fs.f_blocks * fs.f_frsize
    assert 0 < values["queue_mood_disk_free_bytes"] <= values["queue_mood_disk_size_bytes"]
    stats = Stats("rt", "m", "video")
    stats.set_disks({"spool": tmp_path / "bad\0name"})  # statvfs refuses it (ValueError), as it would a closed folder
    body = render(stats.snapshot)[0].decode()
    assert "queue_mood_uptime_seconds" in body and "queue_mood_disk" not in body


def test_edge_run_watches_the_disks_of_its_spool_jsonl_and_history_folders(tmp_path, monkeypatch):
    """The folders come from the config as the running monitor uses them (the JSON lines' default
    file too); one disk here, so one series, `spool`."""
    import cv2

    from edge.service.app import RunOptions, run, state_folders
    from edge.service.status import Stats
    from edge.sinks import build_sinks
    from edge.sinks.spool import STATE_DIR

    cfg = load_config(None, {"sinks.spool_dir": str(tmp_path / "spool"), "sinks.jsonl.path": "",
                             "status.history_db": str(tmp_path / "db" / "history.sqlite")})
    sinks = build_sinks(cfg.sinks, "d")
    try:
        assert state_folders(cfg, sinks) == {"spool": tmp_path / "spool", "jsonl": expand_path(STATE_DIR),
                                             "history": tmp_path / "db"}
    finally:
        sinks.close()
    assert set(state_folders(load_config(None), build_sinks(load_config(None).sinks, "d"))) == {"spool"}

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((120, 160, 3), 90, np.uint8))
    seen, made, named = [], [], Stats.set_disks

    def set_disks(stats, folders):  # the run's Stats, to read what its status page would
        made.append(stats)
        named(stats, folders)

    monkeypatch.setattr(Stats, "set_disks", set_disks)
    cfg = load_config(None, {"source.path": str(frames), "status.enabled": False,
                             "sinks.spool_dir": str(tmp_path / "spool"),
                             "status.history_db": str(tmp_path / "history.sqlite")})
    run(cfg, RunOptions(max_frames=2), on_result=lambda *_: seen.append(made[0].snapshot()["health"].get("disks")))
    fs = os.statvfs(tmp_path)
    assert seen and all(set(d) == {"spool"} and d["spool"]["size_bytes"] == fs.f_blocks * fs.f_frsize for d in seen)


def test_the_free_disk_panel_draws_the_disk_low_alerts_bound():
    """Each Pi's free bytes per disk, its red line where QueueMonitorDiskLow's absolute bound is, so
    a line that crosses it is a Pi about to alert (or alerting)."""
    (panel,) = [p for p in _panels() if "queue_mood_disk_free_bytes" in p["targets"][0]["expr"]]
    (rule,) = [r for g in _yaml(FLEET / "rules.yml")["groups"] for r in g["rules"] if r.get("alert") == "QueueMonitorDiskLow"]
    bound = re.search(r"queue_mood_disk_free_bytes < ([\d *]+?)\s*(?:and|$)", rule["expr"]).group(1)
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "bytes" and 'store=~"$store"' in panel["targets"][0]["expr"]
    assert defaults["thresholds"]["steps"][-1] == {"color": "red", "value": math.prod(map(int, bound.split("*")))}
    assert "{{disk}}" in panel["targets"][0]["legendFormat"]


def query(port: int, promql: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


needs_prometheus = pytest.mark.skipif(not PROMETHEUS, reason="needs Debian's prometheus (apt install prometheus)")


@contextmanager
def fleet_prometheus(tmp_path, stores: dict[str, list[int]]):
    """Debian's prometheus on the shipped config as HQ deploys it (a token file, one targets file
    per store: {store: [port of checkout 1, ...]} on this machine), scraping every second; yields
    `wait(promql, cond)`, the query's result once cond(result) holds (the last one after 90 s)."""
    conf = tmp_path / "prometheus"
    shutil.copytree(FLEET, conf)
    (conf / "queue-mood.token").write_text(METRICS_TOKEN + "\n")  # the fleet's, which opens /metrics only
    for f in (conf / "targets").glob("*.yml"):
        f.unlink()
    for store, ports in stores.items():
        (conf / "targets" / f"{store}.yml").write_text("".join(
            f'- targets: ["127.0.0.1:{port}"]\n  labels: {{store: "{store}", checkout: "{i + 1}"}}\n'
            for i, port in enumerate(ports)))
    yml = conf / "prometheus.yml"
    fast = yml.read_text().replace("interval: 15s", "interval: 1s").replace("timeout: 5s", "timeout: 1s")
    yml.write_text(fast)  # a test cannot wait 15 s per scrape
    promtool("check", "config", yml, cwd=conf)

    port = free_port()
    log_path = tmp_path / "prometheus.log"
    log = log_path.open("wb")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={yml}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)

    def wait(promql: str, cond) -> list:
        deadline, result = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            try:
                result = query(port, promql)["data"]["result"]
            except OSError:
                result = []
            if cond(result):
                break
            assert prom.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.5)
        return result

    wait.port, wait.log = port, log_path
    try:
        yield wait
    finally:
        prom.terminate()
        prom.wait(30)


@pytest.mark.slow
@needs_promtool
@needs_prometheus
def test_prometheus_scrapes_two_monitors_with_store_and_checkout_labels(edge_runs, receivers, tmp_path):
    rejecting = receivers()
    rejecting.status = 400  # till-2's webhook: its alert is rejected for good, dead-lettered at once
    runs = [edge_runs("till-1"), edge_runs("till-2", f'[sinks.webhook]\nurl = "{rejecting.url}"\n')]
    for r in runs:
        r.wait_until(lambda s: s["frames"] > 0)

    with fleet_prometheus(tmp_path, {"test-store": [r.port for r in runs]}) as wait:
        port = wait.port
        faces = wait("queue_mood_faces", lambda faces: len(faces) == 2 and query(
            port, "store:queue_mood_faces:sum")["data"]["result"])
        labels = sorted((s["metric"]["store"], s["metric"]["checkout"]) for s in faces)
        assert labels == [("test-store", "1"), ("test-store", "2")], wait.log.read_text()[-3000:]
        up = query(port, 'up{job="queue-mood"}')["data"]["result"]
        assert sorted(float(s["value"][1]) for s in up) == [1.0, 1.0]  # the token got both scrapes through
        assert {s["metric"]["device"] for s in query(port, "queue_mood_info")["data"]["result"]} == {"till-1", "till-2"}
        (release,) = [p["targets"][0]["expr"] for p in _panels() if p["title"] == "Release per Pi"]
        commits = {s["metric"].get("commit") for s in query(port, release.replace("$store", ".*"))["data"]["result"]}
        assert commits == {checkout_commit(FLEET.parents[1])}  # run from this checkout: its commit (None: not in git)
        for expr in _dashboard_queries():  # every panel's query runs on real data
            assert query(port, expr.replace("$store", ".*"))["status"] == "success", expr
        raised = query(port, "queue_mood_alert_raised")["data"]["result"]
        assert len(raised) == 2
        failures = query(port, 'queue_mood_sink_failures_total{sink="log"}')["data"]["result"]
        assert sorted((s["metric"]["checkout"], s["value"][1]) for s in failures) == [("1", "0"), ("2", "0")]
        free = query(port, "queue_mood_disk_free_bytes")["data"]["result"]  # the disk of each Pi's spool folder
        assert {("1", "spool"), ("2", "spool")} <= {(s["metric"]["checkout"], s["metric"]["disk"]) for s in free}
        # a total, also once the spool is empty again (it read 0 then: QueueMonitorAlertsLost never saw it)
        dead = wait('queue_mood_sink_dead_lettered_total{sink="webhook"}', lambda r: r and r[0]["value"][1] != "0")
        assert [(s["metric"]["checkout"], s["value"][1]) for s in dead] == [("2", "1")], runs[1].log.read_text()[-3000:]
        spooled = query(port, 'queue_mood_sink_spooled{sink="webhook"}')["data"]["result"]
        assert [s["value"][1] for s in spooled] == ["0"]


@pytest.mark.slow
@needs_promtool
@needs_prometheus
def test_the_store_selector_lists_a_store_whose_monitors_are_all_down(tmp_path):
    """The dashboard's `store` variable, asked of prometheus as Grafana's label_values(selector,
    label) does, through the shipped config: a store whose every monitor is unreachable (no
    queue_mood_* series at all) is still listed, when HQ most needs to pick it."""
    (var,) = [v for v in json.loads((FLEET / "grafana-dashboard.json").read_text())["templating"]["list"]
              if v["name"] == "store"]
    selector, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"]).groups()
    assert label == "store" and var["definition"] == var["query"]["query"]
    with fleet_prometheus(tmp_path, {"closed-store": [free_port(), free_port()]}) as wait:  # nothing listens
        assert len(wait('up{job="queue-mood"} == 0', lambda down: len(down) == 2)) == 2, wait.log.read_text()[-3000:]
        url = f"http://127.0.0.1:{wait.port}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": selector})
        with urllib.request.urlopen(url, timeout=10) as r:
            assert json.loads(r.read())["data"] == ["closed-store"], selector


# --- alertmanager.yml: who hears of the alerts, when, and in how many messages ---

AMTOOL, ALERTMANAGER = shutil.which("amtool"), shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
needs_amtool = pytest.mark.skipif(not AMTOOL, reason="needs amtool (apt install prometheus-alertmanager)")
PAGER, WARNINGS = "fleet-pager", "fleet-warnings"
# hours label on a store's targets -> the closed-* interval that mutes its alerts (None: never muted)
HOURS_MUTE = {"standard": "closed-standard", "late": "closed-late", "always": None, None: "closed-standard"}


def _yaml(path: Path):
    yaml = pytest.importorskip("yaml", reason="needs PyYAML (pip install -e '.[dev]')")
    return yaml.safe_load(path.read_text())


def _rule_alerts() -> dict[str, str]:
    """rules.yml's alerts: {alertname: severity}."""
    return {r["alert"]: r["labels"]["severity"] for g in _yaml(FLEET / "rules.yml")["groups"]
            for r in g["rules"] if "alert" in r}


def amtool_route(**labels) -> tuple[str, list[str]]:
    """The receiver amtool's routing of an alert with these labels reaches, and the route it takes
    (`{matcher}` per level under the root, as amtool --tree prints it)."""
    args = [f"{k}={v}" for k, v in labels.items() if v is not None]
    r = subprocess.run([AMTOOL, "config", "routes", "test", "--config.file=alertmanager.yml", "--tree", *args],
                       capture_output=True, text=True, cwd=FLEET, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [re.sub(r"^[\s│├└─.]*", "", line) for line in r.stdout.splitlines() if "default-route" in line or "{" in line]
    assert lines and lines[0] == "default-route" and "receiver: " in lines[-1], r.stdout
    (receivers,) = re.findall(r"receiver: (\S+)", r.stdout)  # one route, no `continue`
    return receivers, [line.split("  receiver:")[0] for line in lines[1:]]


def _config_route(path: list[str]) -> dict:
    """The route of alertmanager.yml that amtool's path names (a route without matchers prints as
    default-route)."""
    node = _yaml(FLEET / "alertmanager.yml")["route"]
    for step in path:
        (node,) = [r for r in node.get("routes", [])
                   if ("{" + ", ".join(r["matchers"]) + "}" if r.get("matchers") else "default-route") == step]
    return node


@needs_amtool
def test_alertmanager_config_passes_amtool_check():
    r = subprocess.run([AMTOOL, "check-config", "alertmanager.yml"], capture_output=True, text=True, cwd=FLEET, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


@needs_amtool
@pytest.mark.parametrize("hours", list(HOURS_MUTE))
def test_critical_alerts_page_a_person_and_warnings_go_to_the_mailbox(hours):
    """Every alert of rules.yml, from a store of each kind of hours (and one without the label):
    critical ones (QueueMonitorDown among them) reach the pager, warnings the mailbox."""
    alerts = _rule_alerts()
    assert alerts["QueueMonitorDown"] == "critical" and set(alerts.values()) == {"critical", "warning"}
    for alertname, severity in alerts.items():
        receiver, _ = amtool_route(alertname=alertname, severity=severity, store="berlin-mitte", checkout="1",
                                   instance="10.20.1.31:8765", job="queue-mood", hours=hours)
        assert receiver == (PAGER if severity == "critical" else WARNINGS), (alertname, hours)


@needs_amtool
@pytest.mark.parametrize("hours", list(HOURS_MUTE))
def test_the_opening_hours_mute_is_on_every_route_a_stores_alerts_take(hours):
    """amtool cannot tell the time: the route it picks for a store's alert (its `hours` label)
    carries that store's closed-* interval itself (mute_time_intervals is not inherited), and the
    interval, in local time, exists."""
    conf = _yaml(FLEET / "alertmanager.yml")
    intervals = {t["name"]: t["time_intervals"] for t in conf["time_intervals"]}
    for severity in ("critical", "warning"):
        _, path = amtool_route(alertname="QueueMonitorDown", severity=severity, store="s1", hours=hours)
        if hours in ("late", "always"):
            assert path[0] == f'{{hours="{hours}"}}', path
        route = _config_route(path)
        expected = HOURS_MUTE[hours]
        assert route.get("mute_time_intervals", []) == ([expected] if expected else []), (hours, severity, path)
        if expected:
            assert intervals[expected] and all(i.get("location") for i in intervals[expected]), expected
    assert "active_time_intervals" not in json.dumps(conf)


def test_notifications_are_grouped_per_store_and_alert_kind():
    """One message per store and alertname, not one per Pi: the root groups so and no route
    overrides it."""
    route = _yaml(FLEET / "alertmanager.yml")["route"]
    assert route["group_by"] == ["store", "alertname"]

    def routes(r):
        for child in r.get("routes", []):
            yield child
            yield from routes(child)
    assert all("group_by" not in r for r in routes(route))


def test_every_hours_label_in_the_example_targets_has_its_route_and_prometheus_sends_to_alertmanager():
    conf = _yaml(FLEET / "alertmanager.yml")
    routed = {m for r in conf["route"]["routes"] for m in r.get("matchers", [])}
    example = _yaml(FLEET / "targets" / "example-store.yml.example")
    hours = {t["labels"]["hours"] for t in example}
    assert hours <= set(HOURS_MUTE) and all(f'hours="{h}"' in routed for h in set(HOURS_MUTE) - {None, "standard"})
    prom = _yaml(FLEET / "prometheus.yml")
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["localhost:9093"]


def test_the_inhibitions_name_alerts_of_the_rules_and_labels_they_carry():
    """Each inhibit rule's alert names are rules.yml's, so a rename there cannot quietly end one."""
    alerts = set(_rule_alerts())
    rules = _yaml(FLEET / "alertmanager.yml")["inhibit_rules"]
    named = {n for r in rules for m in r["source_matchers"] + r["target_matchers"]
             for n in re.findall(r"\w+", m.split("=", 1)[1]) if m.startswith("alertname")}
    assert named and named <= alerts, named - alerts
    assert all("instance" in r["equal"] for r in rules)  # the same Pi


needs_alertmanager = pytest.mark.skipif(not ALERTMANAGER, reason="needs Debian's prometheus-alertmanager")


@pytest.mark.slow
@needs_alertmanager
def test_alertmanager_sends_one_message_per_store_and_kind_inhibits_and_mutes(tmp_path):
    """The real Alertmanager on the shipped config, its receivers pointed at a local webhook and a
    second's waits: two Pis down at an open store are one page, a down Pi's camera alert is
    inhibited, another Pi's camera alert is one warning, a camera's flapping alert is inhibited
    while its camera down alert fires and told for another Pi, and a closed store (its closed-*
    interval made the whole week) sends nothing."""
    import http.server
    import threading

    conf = _yaml(FLEET / "alertmanager.yml")
    received: list[tuple[str, dict]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.path.strip("/"), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_port}"
    conf["receivers"] = [{"name": r["name"], "webhook_configs": [{"url": f"{hook}/{r['name']}"}]} for r in conf["receivers"]]
    conf["route"].update(group_wait="1s", group_interval="1s")
    (late,) = [t for t in conf["time_intervals"] if t["name"] == "closed-late"]
    late["time_intervals"] = [{"times": [{"start_time": "00:00", "end_time": "24:00"}]}]  # closed now
    (tmp_path / "am.yml").write_text(json.dumps(conf))

    port = free_port()
    log = (tmp_path / "am.log").open("wb")
    am = subprocess.Popen([ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
                           f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], stdout=log, stderr=log)
    try:
        def pi(alertname, severity, store, checkout, hours, **extra):
            return {"labels": {"alertname": alertname, "severity": severity, "store": store, "checkout": checkout,
                               "instance": f"{store}-{checkout}:8765", "job": "queue-mood", "hours": hours, **extra}}
        alerts = [pi("QueueMonitorDown", "critical", "open", "1", "always"),
                  pi("QueueMonitorDown", "critical", "open", "2", "always"),
                  pi("QueueMonitorCameraDown", "warning", "open", "1", "always"),  # its Pi is down
                  pi("QueueMonitorCameraDown", "warning", "open", "3", "always"),
                  pi("QueueMonitorCameraFlapping", "warning", "open", "3", "always"),  # now down for good
                  pi("QueueMonitorCameraFlapping", "warning", "open", "4", "always"),
                  pi("QueueMonitorDown", "critical", "closed", "1", "late")]
        deadline = time.monotonic() + 30
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/alerts", json.dumps(alerts).encode(),
                                             {"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and am.poll() is None, (tmp_path / "am.log").read_text()[-3000:]
                time.sleep(0.2)
        deadline = time.monotonic() + 30
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(4)  # a few group intervals more: nothing else comes
    finally:
        am.terminate()
        am.wait(30)
        server.shutdown()
    got = sorted(((path, msg["groupLabels"], sorted(a["labels"]["checkout"] for a in msg["alerts"]))
                  for path, msg in received), key=lambda m: (m[0], sorted(m[1].items())))
    assert got == [(PAGER, {"alertname": "QueueMonitorDown", "store": "open"}, ["1", "2"]),
                   (WARNINGS, {"alertname": "QueueMonitorCameraDown", "store": "open"}, ["3"]),
                   (WARNINGS, {"alertname": "QueueMonitorCameraFlapping", "store": "open"}, ["4"])], (
        got, (tmp_path / "am.log").read_text()[-3000:])
