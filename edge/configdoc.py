"""The config reference and the commented example file, generated from the config dataclasses.

Walks the `Config` dataclass tree generically (dataclasses.fields, type hints, defaults), so a
section added anywhere (a plugin module's config class included) appears without a change
here. A key's help text is its field's `metadata["help"]`, else the comment on the field's
line (and comment lines directly above it) in the class source. A help text may end with
"e.g. `VALUE`" (a TOML value): the example file uses it where the default would not work,
such as a webhook's URL.

    edge config --docs      > docs/config.md
    edge config --example   > deploy/config.example.toml   (also: edge run --print-config --example)
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import tomllib
import types
import typing
from dataclasses import dataclass

from edge.config import Config, toml_value
from edge.paths import FROM_CONFIG_FOLDER

EXAMPLE_RE = re.compile(r"\s*\(?e\.g\. `([^`]+)`\)?\.?\s*$")
DOCS_CMD = "edge config --docs > docs/config.md"
EXAMPLE_CMD = "edge config --example > deploy/config.example.toml"


@dataclass
class Key:
    name: str
    type: str  # for people: "integer", "list of strings", ...
    default: object  # None: unset
    help: str  # without the "e.g." part
    example: object  # the value the example file shows
    required: bool = False  # the default fails the section's validation: the file must set it


@dataclass
class Section:
    path: str  # dotted TOML table name; "" for the top level
    doc: str
    optional: bool  # absent from the file = off (the sinks)
    keys: list[Key]
    variant: str = ""  # an alternative form of the table above, e.g. 'kind = "haar"'


def _help_texts(cls) -> dict[str, str]:
    """_source_help of the class and of the dataclasses it inherits from (a plugin's config
    subclass, or a table class made at run time, keeps its bases' help)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            out.update({k: v for k, v in _source_help(klass).items() if v})
    return out


def _source_help(cls) -> dict[str, str]:
    """{field name: comment text} from the class source: a trailing comment, after any
    comment lines directly above the field. {} when the source is not available."""
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    line: list[tokenize.TokenInfo] = []
    body_col = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and not line:
            above.append(tok.string.lstrip("#").strip())
            continue
        if tok.type == tokenize.NL and not line:
            if tok.line.strip() == "":
                above = []  # a blank line ends a comment block
            continue
        if tok.type in (tokenize.INDENT, tokenize.DEDENT):
            continue
        if tok.type != tokenize.NEWLINE:
            line.append(tok)
            continue
        code = [t for t in line if t.type != tokenize.COMMENT]
        if len(code) >= 2 and code[0].type == tokenize.NAME and code[1].string == ":":
            body_col = code[0].start[1] if body_col is None else body_col
            name = code[0].string
            if name in names and code[0].start[1] == body_col and name not in out:
                trailing = [t.string.lstrip("#").strip() for t in line if t.type == tokenize.COMMENT]
                out[name] = " ".join(above + trailing).strip()
        above, line = [], []
    return out


def _describe(tp) -> str:
    options = [a for a in typing.get_args(tp) if a is not type(None)] if isinstance(tp, types.UnionType) else [tp]
    optional = len(options) < len(typing.get_args(tp)) if isinstance(tp, types.UnionType) else False
    names = {int: "integer", float: "number", str: "string", bool: "true/false", dict: "table"}
    t = options[0]
    if typing.get_origin(t) is list:
        (inner,) = typing.get_args(t)
        text = f"list of {names.get(inner, getattr(inner, '__name__', str(inner)))}s"
    elif typing.get_origin(t) is dict:
        text = "table"
    else:
        text = names.get(t, getattr(t, "__name__", str(t)))
    return f"{text} or unset" if optional else text


def _class_doc(cls) -> str:
    """The first real docstring along the class's bases (not dataclass's generated one)."""
    for klass in cls.__mro__:
        doc = klass.__dict__.get("__doc__") or ""
        if doc and not doc.startswith(klass.__name__ + "("):
            return " ".join(doc.split())
    return ""


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _required(cls, examples: dict) -> set[str]:
    """Keys whose default the section's own validate() rejects, found by validating the
    defaults and putting in the example of each key an error names, one at a time."""
    from edge.config import ConfigError

    if not hasattr(cls, "validate"):
        return set()
    obj, found = cls(), set()
    for _ in range(len(examples) + 1):
        try:
            obj.validate("s")
            return found
        except ConfigError as exc:
            m = re.search(r"'s\.(\w+)", str(exc))
            if not m or m.group(1) not in examples or m.group(1) in found:
                return found
            found.add(m.group(1))
            setattr(obj, m.group(1), examples[m.group(1)])
    return found


def _dataclass_of(tp):
    options = typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)
    found = [a for a in options if dataclasses.is_dataclass(a)]
    return (found[0], type(None) in options) if found else (None, False)


def _keys(cls) -> tuple[list[Key], list[tuple[type, str, bool]]]:
    """(scalar keys, [(child dataclass, field name, optional)]) of a dataclass."""
    hints = typing.get_type_hints(cls)
    helps = _help_texts(cls)
    keys, children = [], []
    for f in dataclasses.fields(cls):
        child, child_optional = _dataclass_of(hints[f.name])
        if child is not None:
            children.append((child, f.name, child_optional))
            continue
        text = f.metadata.get("help") or helps.get(f.name, "")
        example = _default(f)
        m = EXAMPLE_RE.search(text)
        if m:
            example = tomllib.loads(f"v = {m.group(1)}")["v"]
            text = text[: m.start()].rstrip(" ,;(")
        if f.metadata.get("file"):
            text += f"; {FROM_CONFIG_FOLDER}"
        keys.append(Key(f.name, _describe(hints[f.name]), _default(f), text, example))
    for name in _required(cls, {k.name: k.example for k in keys}):
        next(k for k in keys if k.name == name).required = True
    return keys, children


def _is_current(cls, alt, data: dict, path: str) -> bool:
    """Whether the registry still picks `alt` for a table with these values (a plugin class
    that was registered and removed again, as tests do, stays a subclass)."""
    from edge.errors import UserError

    try:
        return cls.table_class(data, path) is alt
    except UserError:
        return False


def _subclasses(cls) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def sections(cls=Config, path: str = "", optional: bool = False) -> list[Section]:
    """Every table of the config, depth first, each with its scalar keys. A table whose keys
    depend on a plugin registry (a class with `table_class`) is documented as its default
    class, followed by each registered alternative that differs from it in a key's default
    (the `kind` that picks the plugin), with the keys it adds."""
    concrete = cls.table_class({}, path) if hasattr(cls, "table_class") else cls
    keys, children = _keys(concrete)
    out = [Section(path, _class_doc(concrete) if path else "", optional, keys)] if keys or not children else []
    if concrete is not cls:
        common = {f.name for f in dataclasses.fields(cls)}
        for k in keys:
            if k.name not in common:
                k.help += " (only this kind)"
        base = {k.name: k for k in keys}
        for alt in _subclasses(cls):
            if alt is concrete or not dataclasses.is_dataclass(alt):
                continue
            alt_keys, _ = _keys(alt)
            picks = [k for k in alt_keys if k.name in base and k.default != base[k.name].default]
            if picks and _is_current(cls, alt, {k.name: k.default for k in picks}, path):
                # the one key that picks this plugin (`kind`), if one does; its other defaults in the text
                chosen = next(([k] for k in picks if _is_current(cls, alt, {k.name: k.default}, path)), picks)
                added = [k for k in alt_keys if k.name not in common]
                when = ", ".join(f"{k.name} = {toml_value(k.default)}" for k in chosen)
                shared = ", ".join(f"`{k.name}`" for k in alt_keys if k.name in common)
                own = ", ".join(f"`{k.name} = {toml_value(k.default)}`" for k in picks if k not in chosen)
                doc = f"{_class_doc(alt)} Keys as above: {shared}" + (f"; its defaults differ: {own}" if own else "")
                doc += "; its own keys:" if added else "."
                out.append(Section(path, doc, optional, added, variant=when))
    # optional tables (the sinks) by name: their fields follow the registry's import order
    children = [c for c in children if not c[2]] + sorted((c for c in children if c[2]), key=lambda c: c[1])
    for child, name, child_optional in children:
        out += sections(child, f"{path}.{name}" if path else name, child_optional)
    return out


def _sentence(text: str) -> str:
    """Capitalised (unless it starts with a name such as model_int8.tflite) and ending in a full stop."""
    first = text.split(" ", 1)[0]
    if first.isalpha():
        text = text[:1].upper() + text[1:]
    return text if not text or text.endswith((".", "!", "?")) else text + "."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """docs/config.md: every key of every section, its type, default and meaning."""
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the config dataclasses by `{DOCS_CMD}`; do not edit it by hand",
        "(a test checks that it matches). `edge run --config FILE.toml` reads a TOML file; every key",
        "has the default shown, unknown keys and bad values stop the program with the key path, the",
        "value and what is allowed, and command-line flags override the file (`--camera` or `--source`",
        "replaces both `camera` and `path` of the file's `[source]`). A commented example",
        "with every key: [deploy/config.example.toml](../deploy/config.example.toml)",
        "(`edge run --print-config --example`); the effective config: `edge run --print-config`",
        "(secrets hidden; `--show-secrets` prints them).",
        "",
        "Sections marked *optional* are off unless the file has them: each alert sink is turned on",
        "by its table (an empty `[sinks.jsonl]` is enough for the JSON-lines file). The log sink",
        "(the journal) is always on.",
    ]
    for sec in sections():
        title = f"`[{sec.path}]`" if sec.path else "Top level"
        title += f" with `{sec.variant}`" if sec.variant else ""
        lines += ["", f"## {title}" + (" (optional)" if sec.optional else ""), ""]
        if sec.doc:
            lines += [sec.doc, ""]
        if sec.variant and not sec.keys:
            lines.pop()  # the blank line after the doc
            continue
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for k in sec.keys:
            default = "unset" if k.default is None else f"`{toml_value(k.default)}`"
            default = "required" if k.required else default
            meaning = _sentence(k.help) + (f" Example: `{toml_value(k.example)}`." if k.example != k.default else "")
            lines.append(f"| `{k.name}` | {k.type} | {default} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def _key_lines(sec: Section, commented: bool, use_examples: bool) -> list[str]:
    """`key = value  # help` lines; an unset key is shown commented out with its example."""
    out = []
    for k in sec.keys:
        value = k.example if use_examples or k.default is None else k.default
        mark = "# " if commented or k.default is None else ""
        line = f"{mark}{k.name} = {toml_value(value)}" if value is not None else f"# {k.name} is unset"
        if not k.help:
            out.append(line)
        elif len(line) + len(k.help) + 4 <= 100:
            out.append(f"{line}  # {k.help}")
        else:
            out += [f"# {part}" for part in textwrap.wrap(k.help, 96)] + [line]
    return out


def commented_section(sec: Section) -> list[str]:
    """An optional section as comments, with example values: uncommented, it loads."""
    head = [f"# {line}" for line in textwrap.wrap(sec.doc, 96)] if sec.doc else []
    return head + [f"# [{sec.path}]"] + _key_lines(sec, commented=True, use_examples=True)


def example_toml() -> str:
    """deploy/config.example.toml: every section with its defaults, optional ones commented out."""
    lines = [
        "# queue-mood: a commented example config with every key. Values are the defaults, except",
        "# in the commented-out sections, which show examples.",
        f"# Generated from the config dataclasses by `{EXAMPLE_CMD}`.",
        "# Use: edge run --config FILE.toml; check it: edge doctor --config FILE.toml.",
        "# Reference: docs/config.md. Optional sections (the alert sinks) are commented out:",
        "# remove the leading '# ' of a section's lines to turn it on; the log sink is always on.",
    ]
    for sec in sections():
        if sec.variant:  # another plugin for the table above: its doc and its own keys, commented
            lines += [f"# {line}" for line in textwrap.wrap(sec.doc or sec.variant, 96)]
            lines += _key_lines(sec, commented=True, use_examples=True)
            continue
        lines.append("")
        if sec.optional:
            lines += commented_section(sec)
            continue
        if sec.path:
            lines += [f"# {line}" for line in textwrap.wrap(sec.doc, 96)] + [f"[{sec.path}]"]
        lines += _key_lines(sec, commented=False, use_examples=False)
    return "\n".join(lines) + "\n"


def effective_toml(cfg, show_secrets: bool = False) -> str:
    """The effective config (what --print-config shows) followed by the alert sinks it leaves
    off as commented-out examples, so it is a starting file that shows every way out. Secrets
    are hidden unless `show_secrets` (a bundle's config file must keep them)."""
    from edge.config import hide_secrets, to_dict, to_toml

    unused = [sec for sec in sections() if sec.optional and not sec.variant and sec.path.startswith("sinks.")
              and getattr(cfg.sinks, sec.path.split(".", 1)[1], None) is None]
    values, hidden = (to_dict(cfg), []) if show_secrets else hide_secrets(to_dict(cfg))
    lines = textwrap.wrap(f"Secrets hidden: {', '.join(hidden)}. --show-secrets prints them (keep that output "
                          "private).", 96, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False) if hidden else []
    lines += [to_toml(values).rstrip()]
    if unused:
        lines += ["", "# Alert sinks not turned on (the log sink always is). To turn one on, remove the '# ' of",
                  "# its lines and fill in its values; every key: edge run --print-config --example."]
        for sec in unused:
            lines += [""] + commented_section(sec)
    return "\n".join(lines) + "\n"


def uncomment(text: str) -> str:
    """The example with its optional sections turned on (what tests load)."""
    out = []
    for line in text.splitlines():
        body = line[2:] if line.startswith("# ") else None
        if body is not None and re.match(r"^(\[[\w.]+\]\s*$|\w+ = )", body):
            out.append(body)
        else:
            out.append(line)
    return "\n".join(out) + "\n"
