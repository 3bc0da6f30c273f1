"""A printed config (`edge config`, `edge run --print-config`) hides tokens, passwords, header
values and URLs with credentials, since such output is pasted into tickets; the printed file is
refused if loaded back with the placeholders; --show-secrets and a bundle's config keep them."""

from __future__ import annotations

import itertools
import tomllib

import pytest

from edge.config import HIDDEN_SECRET, ConfigError, load_config, to_dict
from edge.configdoc import effective_toml
from edge.ops.bundle import config_text
from tests.conftest import run_cli

SECRETS = ["admin:pw", "XYZSECRET", "Bearer abc", "k3y-value", "brokerpw", "tok=abc", "abcdefghijklmnop1234",
           "s3cret-pass", "argpw", "argkey", "envtok"]
GIVEN = '''
[source]
path = "rtsp://admin:pw@cam.local/stream1/live"
[status]
host = "0.0.0.0"
token = "abcdefghijklmnop1234"
password = "s3cret-pass"
[sinks.webhook]
url = "https://hooks.example.com/services/T0/B0/XYZSECRET"
headers = {"Authorization" = "Bearer abc", "X.Api-Key" = "k3y-value"}
[sinks.mqtt]
host = "broker.local"
username = "till3"
password = "brokerpw"
[sinks.command]
argv = ["/usr/bin/notify", "--till", "3", "https://h.example/hook?tok=abc", "--password", "argpw", "--api-key=argkey",
        "TOKEN=envtok", "--author", "me"]
'''
HIDDEN_KEYS = ["source.path", "sinks.command.argv", "sinks.webhook.url", "sinks.webhook.headers.Authorization",
               "sinks.webhook.headers.X.Api-Key", "sinks.mqtt.password", "status.token", "status.password"]


def given(tmp_path):
    path = tmp_path / "given.toml"
    path.write_text(GIVEN, encoding="utf-8")
    return path


def test_printed_config_hides_every_secret_and_keeps_the_rest(tmp_path):
    path = given(tmp_path)
    for args in (["config", "--config", path], ["run", "--config", path, "--print-config"]):
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        assert not [s for s in SECRETS if s in r.stdout], args
        head = " ".join(line[2:] for line in itertools.takewhile(lambda x: x.startswith("# "), r.stdout.splitlines()))
        assert head.startswith("Secrets hidden:")
        assert all(key in head for key in HIDDEN_KEYS), head
        printed = tomllib.loads(r.stdout)
        assert printed["status"]["token"] == printed["sinks"]["mqtt"]["password"] == HIDDEN_SECRET
        # where a URL pointed stays readable; what is not secret is untouched
        assert printed["sinks"]["webhook"]["url"] == f"{HIDDEN_SECRET} https://hooks.example.com/services/***"
        assert printed["source"]["path"] == f"{HIDDEN_SECRET} rtsp://***@cam.local/stream1/***"
        argv = printed["sinks"]["command"]["argv"]  # secrets passed as arguments are told by their flag
        assert argv[:3] == ["/usr/bin/notify", "--till", "3"] and argv[5] == HIDDEN_SECRET
        assert argv[6:] == [f"--api-key={HIDDEN_SECRET}", f"TOKEN={HIDDEN_SECRET}", "--author", "me"]
        assert printed["sinks"]["mqtt"]["username"] == "till3" and printed["status"]["host"] == "0.0.0.0"


def test_a_printed_config_loaded_back_is_refused_naming_every_placeholder(tmp_path):
    printed = tmp_path / "printed.toml"
    printed.write_text(run_cli("config", "--config", given(tmp_path)).stdout, encoding="utf-8")
    r = run_cli("run", "--config", printed, "--max-frames", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--show-secrets" in r.stderr
    assert all(key in r.stderr for key in HIDDEN_KEYS), r.stderr


def test_show_secrets_and_a_bundle_keep_them_and_load_back_the_same(tmp_path):
    cfg = load_config(given(tmp_path))
    r = run_cli("config", "--config", given(tmp_path), "--show-secrets")
    assert r.returncode == 0 and "Secrets hidden" not in r.stdout
    for i, text in enumerate([r.stdout, config_text(cfg, "given.toml")]):
        (tmp_path / f"{i}.toml").write_text(text, encoding="utf-8")
        assert to_dict(load_config(tmp_path / f"{i}.toml")) == to_dict(cfg)


def test_a_config_without_secrets_prints_unchanged(tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text('[source]\npath = "https://cam.example/live.mjpg"\n[sinks.webhook]\nurl = "http://hub.local/x"\n')
    cfg = load_config(path)
    assert effective_toml(cfg) == effective_toml(cfg, show_secrets=True)
    assert HIDDEN_SECRET not in effective_toml(cfg)


def test_show_secrets_where_it_prints_nothing_is_refused():
    for args, says in ((["run", "--show-secrets"], "--show-secrets goes with --print-config"),
                       (["config", "--example", "--show-secrets"], "drop --show-secrets")):
        r = run_cli(*args)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("text, key", [
    ('[[sinks.webhook]]\nurl = "https://a.example/x"\nheaders = {"Authorization" = "Bearer SECRET"}\n', "'sinks.webhook'"),
    ('[[status]]\ntoken = "SECRETSECRETSECRETSECRET"\n', "'status'"),  # a second [status] made an array
    ('sinks.mqtt = "mqtt://till3:SECRET@broker.local"\n', "'sinks.mqtt'"),
    ('[sinks.webhook]\nurl = "https://a.example/x"\nheaders = "Bearer SECRET"\n', "'sinks.webhook.headers'"),
    ('[sinks.webhook]\nurl = ["https://hooks.example/services/T0/SECRET"]\n', "'sinks.webhook.url'"),
    ('[source]\npath = ["rtsp://admin:SECRET@cam.local/s1"]\n', "'source.path'"),
    ('[sinks.command]\nargv = "notify --password SECRET"\n', "'sinks.command.argv'"),
    ('[sinks.command]\nargv = ["notify", "--token", 8675309]\n', "'sinks.command.argv'"),
    # the right shape with a bad value: the argv its program left out of, a header with a line
    # break, a short password (argv printed whole; the others as '(hidden)', a string of that text)
    ('[sinks.command]\nargv = ["", "--password", "SECRET"]\n', "'sinks.command.argv'"),
    ('[sinks.command]\nargv = ["", "https://till3:SECRET@hooks.example/x"]\n', "'sinks.command.argv'"),
    ('[sinks.webhook]\nurl = "https://a.example/x"\nheaders = {"X-Key" = "SECRET\\nX: y"}\n', "'sinks.webhook.headers.X-Key'"),
    ('[status]\npassword = "SECRET"\n', "'status.password'"),
])
def test_a_secret_in_a_value_of_the_wrong_shape_is_not_shown_in_the_config_error(tmp_path, text, key):
    """Typed by hand as a list, a table array or one string, the value was printed whole (the journal, a ticket)."""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    said = str(err.value)
    assert key in said and ("has the bad value (hidden)" in said or "got (hidden)" in said), said
    assert "SECRET" not in said and "8675309" not in said


def test_an_argv_without_its_program_and_no_secret_is_shown_as_it_is():
    with pytest.raises(ConfigError, match=r"'sinks\.command\.argv' has the bad value \['', 'notify'\]; allowed: a "
                                          r"non-empty list"):
        load_config(None, {"sinks.command.argv": ["", "notify"]})


def test_an_array_of_tables_says_to_write_one_table():
    with pytest.raises(ConfigError, match=r"'sinks\.webhook' must be a table, got \[\{'url': 'https://a\.example/x'\}, "
                                          r"\{'url': 'https://b\.example/y'\}\]; write \[sinks\.webhook\] with single "
                                          r"brackets, once\."):
        load_config(None, {"sinks.webhook": [{"url": "https://a.example/x"}, {"url": "https://b.example/y"}]})
