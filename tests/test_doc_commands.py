"""What README.md, benchmarks/README.md and docs/*.md (and deploy/config.example.toml's comments) tell
users to type is what the programs accept: every command line's subcommand, script and options (against
the programs' own parsers), every config key and stated default (against the config schema) and every
/metrics series named. Users copy these lines; a renamed flag or key must fail here, not at a store."""
import re

import click
import pytest

from edge.config import RENAMED, toml_value
from tests.doc_commands import (DOCS, ROOT, code_spans, command_lines, config_keys, config_references, edge_commands,
                                every_flag, key_values, metric_names, problems, stated_defaults, toml_block_keys)

IDS = {"ids": lambda p: str(p.relative_to(ROOT))}
# Options of other programs the docs name in passing (venv, apt-get, journalctl).
OTHER_PROGRAMS = {"--system-site-packages", "--no-install-recommends", "--since"}


@pytest.mark.parametrize("doc", [*DOCS, ROOT / "deploy" / "config.example.toml"], **IDS)
def test_command_lines_use_only_what_their_program_accepts(doc):
    bad = [f"line {n}: {cmd!r}: {', '.join(p)}" for n, cmd in command_lines(doc) if (p := problems(cmd))]
    assert not bad, f"{doc.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_the_check_finds_a_misspelt_option_command_or_script():
    assert problems("edge run --camera 0 --realtime") == []
    assert problems("edge run --camra 0") == ["unknown option --camra"]
    assert problems("edge run -vq") == [] and problems("edge run -x") == ["unknown option -x"]
    assert problems("edge stop") == ["no command edge stop"]
    assert problems("edge --version") == [] and problems("edge --verison") == ["unknown option --verison"]
    assert problems("edge bench latency --repeats 3") == []
    assert problems("edge bench latency --repeat 3") == ["unknown option --repeat"]
    assert problems("edge bench queue_sim") == ["edge bench has no benchmark queue_sim"]
    assert problems("edge eval --degrade 40") == []  # a build-stage command, from its entry point
    assert problems("python benchmarks/at_commit.py REV --isa avx2 -- benchmarks/latency.py --thread 1") == \
        ["unknown option --thread"]
    assert problems("python -m train.torch_teacher combine --pack P --out O") == []
    assert problems("python -m train.torch_teacher combine --minutes 3") == ["unknown option --minutes"]
    assert problems("python benchmarks/latencies.py") == ["no file benchmarks/latencies.py"]
    assert problems("bash .ci/pi_env_lane.sh [BUILD_VENV]") == []
    assert problems("bash .ci/pi_lane.sh") == ["no file .ci/pi_lane.sh"]


def test_the_extractor_reads_fenced_and_inline_commands(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("Run `edge demo --fast` or\n`edge run\n--camera 0`.\n\n```bash\n$ edge doctor --json  # checks\n"
                   "sudo bash deploy/install.sh && PYTHONPATH=. python benchmarks/latency.py M \\\n  --repeats 3\n```\n")
    assert command_lines(doc) == [(1, "edge demo --fast"), (2, "edge run --camera 0"), (6, "edge doctor --json"),
                                  (7, "bash deploy/install.sh"), (7, "python benchmarks/latency.py M --repeats 3")]


@pytest.mark.parametrize("doc", DOCS, **IDS)
def test_options_named_in_the_text_exist(doc):
    """An option in a code span of its own (`--fast`) is one some program of the project accepts."""
    known = every_flag() | OTHER_PROGRAMS
    bad = [f"line {n}: {span}" for n, span in code_spans(doc.read_text())
           if span.startswith("--") and span.split()[0].split("=")[0] not in known]
    assert not bad, f"{doc.relative_to(ROOT)} names options no program has:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", DOCS, **IDS)
def test_config_keys_named_exist(doc):
    """`section.key`, `[section] key`, a ```toml block's keys and `key = value` name keys of the schema
    (or a retired key, which the upgrade notes name)."""
    keys = config_keys()
    names = {k.rsplit(".", 1)[-1] for k in keys}
    text = doc.read_text()
    sections = {k.split(".")[0] for k in keys if "." in k}
    bad = [f"line {n}: {key}" for n, key in config_references(text, sections) + toml_block_keys(text)
           if key not in keys and key not in RENAMED]
    bad += [f"line {n}: {key} = ..." for n, key in key_values(text) if key not in names]
    assert not bad, f"{doc.relative_to(ROOT)} names config keys the schema lacks:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", DOCS, **IDS)
def test_stated_defaults_are_the_schemas(doc):
    keys = config_keys()
    bad = []
    for n, key, value in stated_defaults(doc.read_text()):
        paths = [k for k in keys if k == key or k.endswith(f".{key}")] if "." not in key else [key]
        if len(paths) != 1:
            bad.append(f"line {n}: {key} is {'ambiguous' if paths else 'no key'}: name it as section.key")
        elif toml_value(keys[paths[0]]) != value and not _same_number(keys[paths[0]], value):
            bad.append(f"line {n}: {paths[0]} says default {value}, the schema {toml_value(keys[paths[0]])}")
    assert not bad, f"{doc.relative_to(ROOT)}:\n" + "\n".join(bad)


def _same_number(default, text: str) -> bool:
    return isinstance(default, (int, float)) and not isinstance(default, bool) and re.fullmatch(r"[\d.]+", text) \
        and float(text) == default


@pytest.mark.parametrize("doc", DOCS, **IDS)
def test_metrics_named_are_exported(doc):
    pytest.importorskip("prometheus_client", reason="/metrics needs prometheus_client (edge extra)")
    from tests.test_fleet import _series_the_monitor_exports

    exported = _series_the_monitor_exports()
    bad = [f"line {n}: {name}" for n, name in metric_names(doc.read_text())
           if not (any(s.startswith(name[:-1]) for s in exported) if name.endswith("*") else name in exported)]
    assert not bad, f"{doc.relative_to(ROOT)} names series /metrics does not have:\n" + "\n".join(bad)


def test_every_option_of_every_command_says_what_it_does():
    # `edge X --help` is where a newcomer looks first; an option with neither help nor a shown
    # default is listed there as a bare name.
    bare = [f"edge {name} {p.opts[0]}" for name, cmd in edge_commands().items() for p in cmd.params
            if isinstance(p, click.Option) and not p.hidden and not (p.help or p.show_default)]
    assert not bare, f"options with no help text: {bare}"
