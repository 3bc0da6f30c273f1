"""What the project's markdown tells users to type, read back out of it: command lines (`edge ...`,
`python benchmarks/NAME.py ...`, `bash .ci/...`), config keys and their defaults, and /metrics series;
and the flags each program really accepts, from its own parser (click for `edge`, argparse for the
scripts), so tests/test_doc_commands.py can hold one against the other."""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A command line starts with one of these programs (after `sudo`, `$ ` or VAR=value); edge may be a path to it.
PROGRAM = re.compile(r"^(?:\S*/)?edge [a-z]|^python3? (?:benchmarks/|-m )|^bash (?:\.ci|deploy)/")
FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```", re.S | re.M)


def prose(text: str) -> str:
    """The text with its fenced blocks blanked out (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def code_spans(text: str) -> list[tuple[int, str]]:
    """(line, content) of each `inline code` span outside fenced blocks, its line breaks made spaces."""
    text = prose(text)
    return [(text.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split()))
            for m in re.finditer(r"`([^`]+)`", text)]


def _commands_in(line: str) -> list[str]:
    """The command lines in one shell line: split at &&, ; and |, leading sudo / $ / VAR=value dropped."""
    found = []
    for part in re.split(r"&&|;|\|", line):
        words = part.split()
        while words and (words[0] in ("sudo", "$") or re.fullmatch(r"[A-Z_]+=\S*", words[0])):
            words.pop(0)
        part = " ".join(words)
        if PROGRAM.match(part):
            found.append(part)
    return found


def command_lines(path: Path) -> list[tuple[int, str]]:
    """(line, command) for every command line in a fenced block (continuation lines joined, comments
    dropped) or an inline code span of the file."""
    text = path.read_text()
    found = []
    for block in FENCE.finditer(text):
        first = text.count("\n", 0, block.start()) + 1
        lines = block.group(0).split("\n")[1:-1]
        i = 0
        while i < len(lines):
            start, line = i, lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i]
            line = re.sub(r"(^|\s)#.*", "", line)
            found += [(first + 1 + start, c) for c in _commands_in(line)]
            i += 1
    for n, span in code_spans(text):
        found += [(n, c) for c in _commands_in(span)]
    return sorted(found)


# -- the programs' parsers -----------------------------------------------------------------------


class _Parsed(Exception):
    pass


@functools.cache
def script_parser(module: str) -> argparse.ArgumentParser:
    """The argparse parser a script's main() builds, caught at its first parse (the scripts build
    it inside main(), and nothing there runs before that parse)."""
    def catch(self, *args, **kwargs):
        raise _Parsed(self)

    cls = argparse.ArgumentParser
    saved = cls.parse_args, cls.parse_known_args
    cls.parse_args = cls.parse_known_args = catch
    try:
        importlib.import_module(module).main([])
    except _Parsed as parsed:
        return parsed.args[0]
    finally:
        cls.parse_args, cls.parse_known_args = saved
    raise AssertionError(f"{module}.main() parsed no arguments")


def argparse_flags(parser: argparse.ArgumentParser, words: list[str]) -> set[str]:
    """Option strings of the parser and of the subcommands named in words."""
    flags = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in words:
                if word in action.choices:
                    flags |= set(action.choices[word]._option_string_actions)
    return flags


def click_flags(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


@functools.cache
def edge_commands() -> dict[str, click.Command]:
    from edge.cli import cli

    ctx = click.Context(cli)
    return {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}


def _module_of(script: str) -> str:
    return script.removesuffix(".py").replace("/", ".")


def _unknown(words: list[str], flags: set[str]) -> list[str]:
    """The words that look like options (--name, --name=value, -v, -vv, [--name) and are not in flags;
    -vv is -v twice."""
    bad = []
    for word in words:
        word = word.strip("[]").split("=")[0]
        if word.startswith("--"):
            ok = word in flags
        elif re.fullmatch(r"-[a-zA-Z]+", word):
            ok = all(f"-{c}" in flags for c in word[1:])
        else:
            continue
        if not ok:
            bad.append(word)
    return bad


def _script_problems(module: str, words: list[str]) -> list[str]:
    if "--" in words:  # at_commit.py REV -- benchmarks/latency.py ARGS: each part to its own parser
        cut = words.index("--")
        rest = words[cut + 1:]
        return _script_problems(module, words[:cut]) + (_script_problems(_module_of(rest[0]), rest[1:]) if rest else [])
    if importlib.util.find_spec(module) is None:
        return [f"no module {module}"]
    return [f"unknown option {w}" for w in _unknown(words, argparse_flags(script_parser(module), words))]


def problems(command: str) -> list[str]:
    """What in one documented command line its program does not accept: an unknown subcommand,
    script or option. Placeholders (NAME, FILE, ...) stand for values and are not checked."""
    words = shlex.split(command.replace("...", " "))
    program = words[0]
    if program.endswith("edge"):
        from benchmarks.cli import BENCHMARKS

        if len(words) == 1 or words[1].startswith("-"):
            from edge.cli import cli

            return [f"unknown option {w}" for w in _unknown(words[1:], click_flags(cli))]  # the group's: --version, --help
        commands = edge_commands()
        if words[1] not in commands:
            return [f"no command edge {words[1]}"]
        if words[1] == "bench" and len(words) > 2 and not words[2].isupper():
            if words[2] not in BENCHMARKS:
                return [f"edge bench has no benchmark {words[2]}"]
            return _script_problems(f"benchmarks.{words[2]}", words[3:])
        return [f"unknown option {w}" for w in _unknown(words[2:], click_flags(commands[words[1]]))]
    if program.startswith("python"):
        if words[1] == "-m":
            return _script_problems(words[2], words[3:])
        if "NAME" in words[1]:  # python benchmarks/NAME.py: the general form
            return []
        if not (ROOT / words[1]).is_file():
            return [f"no file {words[1]}"]
        return _script_problems(_module_of(words[1]), words[2:])
    return [] if (ROOT / words[1]).is_file() else [f"no file {words[1]}"]  # bash .ci/x.sh ARGS


@functools.cache
def every_flag() -> set[str]:
    """Every option of every edge command and of every benchmark and training script."""
    flags = set()
    for cmd in edge_commands().values():
        flags |= click_flags(cmd)
    for path in sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "train").glob("*.py")]):
        if "def main(" not in path.read_text():  # read, not imported: train/ imports TensorFlow
            continue
        parser = script_parser(_module_of(str(path.relative_to(ROOT))))
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        flags |= argparse_flags(parser, [name for s in subs for name in s.choices])
    return flags


# -- config keys and metrics ---------------------------------------------------------------------


@functools.cache
def config_keys() -> dict[str, object]:
    """{dotted key path: default} for every key of the config schema, and each table's path."""
    from edge import configdoc

    keys: dict[str, object] = {}
    for sec in configdoc.sections():
        if sec.path:
            keys.setdefault(sec.path, None)
        for key in sec.keys:
            keys.setdefault(f"{sec.path}.{key.name}" if sec.path else key.name, key.default)
    return keys


FILES = ("json", "keras")  # `model.json`, `model.keras` are files, not keys of [model]


def config_references(text: str, sections: set[str]) -> list[tuple[int, str]]:
    """(line, dotted key) for each key a code span names: `section.key` (also in --set section.key=V),
    `[section] key` and `[section]` alone."""
    dotted = re.compile(rf"(?<![\w/.-])((?:{'|'.join(sorted(sections))})(?:\.\w+)+)")
    found = []
    for n, span in code_spans(text):
        for m in dotted.finditer(span):
            if m.group(1).rsplit(".", 1)[1] not in FILES:
                found.append((n, m.group(1)))
        if m := re.match(r"\[([\w.]+)\](?: (\w+))?", span):
            found.append((n, f"{m.group(1)}.{m.group(2)}" if m.group(2) else m.group(1)))
    return found


def toml_block_keys(text: str) -> list[tuple[int, str]]:
    """(line, dotted key) for each key set in a ```toml block, commented-out ones too."""
    found = []
    for block in re.finditer(r"^```toml\n(.*?)^```", text, re.S | re.M):
        first = text.count("\n", 0, block.start()) + 2
        table = ""
        for i, line in enumerate(block.group(1).split("\n")):
            line = line.lstrip("# ")
            if m := re.match(r"\[([\w.]+)\]", line):
                table = m.group(1)
            elif m := re.match(r"(\w+)\s*=", line):
                found.append((first + i, f"{table}.{m.group(1)}" if table else m.group(1)))
    return found


def key_values(text: str) -> list[tuple[int, str]]:
    """(line, key) for each code span `key = value` (a setting shown without its table)."""
    return [(n, m.group(1)) for n, span in code_spans(text) if (m := re.match(r"(\w+) = ", span))]


def stated_defaults(text: str) -> list[tuple[int, str, str]]:
    """(line, key, value) where the prose states a key's default: a `| key | default |` table's rows,
    and a span `section.key` followed by "(default VALUE"."""
    found = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if re.match(r"\| key \| default \|", line):
            for n in range(i + 2, len(lines)):
                if not (row := re.match(r"\| `(\w+)` \| ([^|]+?) \|", lines[n])):
                    break
                found.append((n + 1, row.group(1), row.group(2)))
    text = prose(text)
    for m in re.finditer(r"`([\w.]+)` \(default ([\d.]+|true|false)", text):
        found.append((text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)))
    return found


def metric_names(text: str) -> list[tuple[int, str]]:
    """(line, name) for each queue_mood_* series the text names; a trailing * stands for several."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(0)) for m in re.finditer(r"queue_mood_\w+\*?", text)]
