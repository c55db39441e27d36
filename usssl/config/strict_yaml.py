"""Reading YAML strictly: every problem is one line that names the file (or ``--set``) and says what to do.

Plain ``yaml.safe_load`` keeps the last of two equal keys without a word, expands an alias bomb
(a few hundred bytes of ``&a``/``*a`` anchors that stand for a billion values) and raises
multi-line errors; here:

- a file that is missing, a folder, unreadable, larger than ``MAX_FILE_BYTES``, binary or not
  UTF-8 is refused before parsing;
- a syntax error is ``file: line L, column C: not valid YAML: <problem>``;
- a key given twice in one mapping is an error naming its key path and both lines;
- a document that expands to more than ``MAX_VALUES`` values through anchors and aliases, an alias
  that refers to itself, or nesting deeper than ``MAX_DEPTH`` is refused.

    >>> parse_yaml("a: 1\\nb: [2, 3]\\n", "p.yaml")
    {'a': 1, 'b': [2, 3]}
    >>> parse_yaml("a: 1\\na: 2\\n", "p.yaml")
    Traceback (most recent call last):
    ConfigError: p.yaml: a: the key 'a' is given twice (lines 1 and 2); YAML would silently keep the last one: delete one
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from usssl.errors import ConfigError

MAX_FILE_BYTES = 10_000_000
"""A pipeline YAML is a few kB; anything above 10 MB is the wrong file."""
MAX_VALUES = 100_000
"""The most values (mappings, lists, scalars) a document may stand for once its aliases are expanded."""
MAX_DEPTH = 64
"""The deepest nesting of mappings and lists (a pipeline YAML uses about 6)."""

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


def read_yaml_file(path: str | Path) -> Any:
    """The parsed content of a YAML file (None when it holds no document).

    Raises:
        ConfigError: the file is missing, a folder, unreadable, too large, binary or not UTF-8, or its
            YAML is invalid, repeats a key, or expands too far (module docstring); one line each.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give the pipeline YAML file inside it (e.g. pipelines/demo.yaml)")
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found (looked for {path.resolve()})")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {size / 1e6:.0f} MB is far too large for a pipeline YAML (a few kB); "
                              "is it the right file?")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    if b"\x00" in data[:65536]:
        raise ConfigError(f"{path}: is not a text file (it holds binary data); give a pipeline YAML such as "
                          "pipelines/demo.yaml")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as "
                          "UTF-8 plain text") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str, positions: bool = True) -> Any:
    """Parse one YAML document strictly (module docstring); ``source`` starts every error message, which
    gives the line and column of a syntax error when ``positions``."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node(node, [], source, {}, set(), 0)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        tabs = "; YAML indents with spaces, not tabs" if "\t" in text and "token" in str(exc) else ""
        raise ConfigError(f"{source}: {yaml_problem(exc, positions)}{tabs}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a pipeline YAML") from None
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError, positions: bool = True) -> str:
    """A YAML error on one line: ``line L, column C: not valid YAML: <problem> (<context>)``."""
    mark = getattr(exc, "problem_mark", None) if positions else None
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        on = f" on line {context_mark.line + 1}" if context_mark is not None and positions else ""
        problem += f" ({context}{on})"
    return f"{where}not valid YAML: {problem}"


def key_path(path: list | tuple) -> str:
    """``["stages", 1, "pretrain", "lr"]`` → ``stages[1].pretrain.lr`` (``<top level>`` when empty)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _check_node(node: yaml.Node, path: list, source: str, sizes: dict[int, int], open_: set[int], depth: int) -> int:
    """The number of values ``node`` stands for; raises on repeated keys, self-reference, too deep or too big."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConfigError(f"{source}: {key_path(path)}: an alias (*name) refers to the value that contains it; "
                          "write the value out instead")
    if depth > MAX_DEPTH:
        raise ConfigError(f"{source}: {key_path(path[:6])}…: nested more than {MAX_DEPTH} levels deep; a pipeline "
                          "YAML needs about 6")
    open_.add(key)
    total = 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}  # (tag, key) -> line of its first occurrence
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if name is not None and key_node.tag != _MERGE_TAG:
                line = key_node.start_mark.line + 1
                if (key_node.tag, name) in seen:
                    first = seen[(key_node.tag, name)]
                    lines = f"lines {first} and {line}" if first != line else f"both on line {line}"
                    raise ConfigError(f"{source}: {key_path(path + [name])}: the key '{name}' is given twice "
                                      f"({lines}); YAML would silently keep the last one: delete one")
                seen[(key_node.tag, name)] = line
            total += _check_node(key_node, path, source, sizes, open_, depth + 1)
            total += _check_node(value_node, path + [name if name is not None else "?"], source, sizes, open_,
                                 depth + 1)
            if total > MAX_VALUES:
                break
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            total += _check_node(item, path + [i], source, sizes, open_, depth + 1)
            if total > MAX_VALUES:
                break
    open_.discard(key)
    if total > MAX_VALUES:
        raise ConfigError(f"{source}: {key_path(path)}: stands for more than {MAX_VALUES:,} values once its "
                          "anchors and aliases (&name, *name) are expanded; write the values out")
    sizes[key] = total
    return total

