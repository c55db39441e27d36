"""Pipeline YAML → validated pydantic models, with errors a clinician can act on.

A pipeline file has a few global sections (``name``, ``output_dir``, ``seed``, ``data``,
``tracking``, ``trainer``) and a list of ``stages``, each a one-key mapping
(``- ingest: {...}``, ``- pretrain: {...}``, ``- finetune: {...}``, ``- evaluate: {...}``).
Every model forbids unknown keys, so a typo is an error that names its key path and suggests the
closest valid key::

    pipelines/demo.yaml: stages[1].pretrain.optimiser: unknown key (did you mean 'optimizer'?)

Overrides from the command line (``--set pretrain.max_epochs=2``) are applied to the raw YAML
before validation, so they are checked exactly like the file. The schema is read from
``usssl.config.pipeline`` at call time, so a method registered later is validated too.

The file itself is read by ``strict_yaml`` (repeated keys, alias bombs, binary files and syntax
errors are one-line errors); an empty file or one without stages is an error too, because it would
otherwise "run" and write an empty MLflow store. Checks that need the file system or the machine
(input paths, output folders, accelerators) are in ``preflight`` and ``machine``.
"""

from __future__ import annotations

import difflib
import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from usssl.config import pipeline as schema
from usssl.config.base import REDACTED
from usssl.config.strict_yaml import key_path, parse_yaml, read_yaml_file
from usssl.errors import ConfigError


def load_config(path: str | Path, overrides: list[str] | None = None):
    """Read a pipeline YAML, apply ``key.path=value`` overrides and validate.

    Raises:
        ConfigError: the file is missing, empty, not YAML (``strict_yaml``), an override is malformed,
            validation fails, or there are no stages; the message names the file, the key path and
            what was expected.
    """
    path = Path(path)
    raw = read_yaml_file(path)
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; a pipeline needs at least a list of stages (start from "
                          "a copy of pipelines/demo.yaml)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (name: ..., stages: ...), "
                          f"got {type(raw).__name__}")
    for item in overrides or []:
        apply_override(raw, item, source=str(path))
    try:
        cfg = schema.PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
    if not cfg.stages:
        raise ConfigError(f"{path}: stages: no stages, so there is nothing to run; list them, e.g. "
                          "stages: [ingest, pretrain, finetune, evaluate] (see pipelines/demo.yaml)")
    return cfg


def apply_override(raw: dict, item: str, source: str = "--set") -> None:
    """Set ``a.b[1].c=value`` (value parsed as YAML) in a raw config mapping, in place.

    A first part that names a stage (``pretrain.max_epochs=2``) addresses the first stage of
    that kind.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, text = item.split("=", 1)
    try:
        value = parse_yaml(text, f"--set {item}", positions=False) if text.strip() else None
    except ConfigError as exc:
        raise ConfigError(f"{exc}; the value after '=' is read as YAML (a number, true/false, a word, [a, b] "
                          f"or {{k: v}}): quote text that holds [ ] {{ }} : or #") from None
    parts = _split_key(key)
    if not parts:
        raise ConfigError(f"--set {item!r}: empty key")
    stages = raw.get("stages")
    if isinstance(stages, list):  # normalise "- ingest" and "- ingest:" to {"ingest": {}}
        for i, entry in enumerate(stages):
            if isinstance(entry, str) and entry in schema.STAGE_NAMES:
                stages[i] = {entry: {}}
            elif isinstance(entry, dict) and len(entry) == 1 and next(iter(entry.values())) is None:
                stages[i] = {next(iter(entry)): {}}
    if parts[0] in schema.STAGE_NAMES:
        stages = raw.get("stages") or []
        for i, entry in enumerate(stages):
            if isinstance(entry, dict) and parts[0] in entry:
                parts = ["stages", i, *parts]
                break
        else:
            raise ConfigError(f"--set {key}: the pipeline {source} has no '{parts[0]}' stage")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"--set {key}: no item [{part}] at {key_path(parts[:depth])}")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {key_path(parts[:depth])} is not a mapping")
            if node.get(part) is None:  # "tracking:" with nothing after it is null in YAML
                node[part] = {}
            node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"--set {key}: no item [{last}]")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {key_path(parts[:-1])} is not a mapping")
        node[last] = value


def _split_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for token in key.replace("[", ".").replace("]", "").split("."):
        if token == "":
            continue
        parts.append(int(token) if token.isdigit() else token)
    return parts


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The config model class that owns the key at ``loc`` (ints are list positions)."""
    model: type[BaseModel] | None = schema.PipelineConfig
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _first_model(field.annotation)
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``file: key.path: what was wrong (did you mean ...)``."""
    lines = []
    seen = set()
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        where = key_path(loc)
        got = _short(err.get("input"))
        if err["type"] == "extra_forbidden":
            model = _model_at(loc)
            hint = ""
            if model is not None:
                close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
                if close:
                    hint = f" (did you mean '{close[0]}'?)"
                else:
                    hint = f" (valid keys: {', '.join(model.model_fields)})"
            message = f"unknown key{hint}"
        elif err["type"] == "literal_error":
            message = f"got {got}; expected {err['ctx']['expected']}"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif err["type"] == "finite_number":
            message = f"must be a finite number, got {got} (.inf and .nan mean nothing here)"
        elif err["type"] == "value_error":  # our validators' messages say what they got
            message = str(err["msg"]).removeprefix("Value error, ")
        elif err["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            message = f"{_allowed_range(loc) or err['msg'].replace('Input should be', 'must be')} (got {got})"
        else:
            message = str(err["msg"]).replace("Input should be", "must be") + (f" (got {got})" if got else "")
        line = f"{source}: {where}: {message}" if loc else f"{source}: {message}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


def _allowed_range(loc: tuple) -> str | None:
    """``must be 0 … 4294967295`` from the bounds of the field at ``loc`` (None when it is not found)."""
    model = _model_at(loc)
    names = [p for p in loc if isinstance(p, str)]
    field = model.model_fields.get(names[-1]) if model is not None and names else None
    if field is None:
        return None
    bounds = {k: getattr(m, k) for m in field.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}
    if "ge" in bounds and "le" in bounds:
        return f"must be {bounds['ge']} … {bounds['le']}"
    ops = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    return "must be " + " and ".join(f"{ops[k]} {v}" for k, v in bounds.items()) if bounds else None


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 60, 60


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters; empty for a whole mapping (a model-level error)."""
    if isinstance(value, dict):
        return ""
    text = _REPR.repr(value)  # bounded: never walks a huge list whole
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dump(cfg: BaseModel, redact: bool = False) -> dict:
    """``cfg.model_dump(mode="json")``; with ``redact`` every path field (``json_schema_extra=PATH``,
    at any depth) that is set is replaced by ``"<redacted path>"`` (a list: one per entry, so the
    count stays visible and the YAML still loads)."""
    dumped = cfg.model_dump(mode="json", exclude_none=False)
    if redact:
        _redact(cfg, dumped)
    return dumped


def _redact(model: BaseModel, dumped: dict) -> None:
    for name, field in type(model).model_fields.items():
        value, extra = getattr(model, name), field.json_schema_extra
        if isinstance(extra, dict) and extra.get("path") and value not in (None, "", []):
            dumped[name] = [REDACTED] * len(value) if isinstance(value, list) else REDACTED
        elif isinstance(value, BaseModel):
            _redact(value, dumped[name])
        elif isinstance(value, list):
            for item, item_dump in zip(value, dumped[name]):
                if isinstance(item, BaseModel):
                    _redact(item, item_dump)



def to_yaml(cfg, redact: bool = False) -> str:
    """The resolved config as YAML; ``redact``: paths replaced (what MLflow stores as ``config.yaml``)."""
    raw = dump(cfg, redact)
    raw["stages"] = [{kind: body for kind, body in stage.items() if body is not None} for stage in raw["stages"]]
    return yaml.safe_dump(raw, sort_keys=False)  # loads back: load_config(file) gives the same config


def flatten(cfg, redact: bool = False) -> dict[str, str]:
    """Flattened ``key.path -> value`` params for MLflow; stages keyed by their kind; ``redact``: a set
    path becomes ``<n path(s), redacted>``."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif redact and (value == REDACTED or (isinstance(value, list) and value and set(value) == {REDACTED})):
            out[prefix] = f"<{len(value) if isinstance(value, list) else 1} path(s), redacted>"
        else:
            out[prefix] = str(value)

    dumped = dump(cfg, redact)
    stages = dumped.pop("stages")
    walk("", dumped)
    for i, entry in enumerate(stages):
        kind = next(k for k, v in entry.items() if v is not None)
        walk(f"stages.{i}.{kind}", entry[kind])
    return out


def reference_markdown() -> str:
    """Every config key with its type, default and description, as Markdown (docs/configuration.md)."""
    from usssl.config.base import MAX_BATCH, MAX_EPOCHS, MAX_PER_EPOCH, MAX_PIXELS, MAX_STEPS, SEED_MAX
    from usssl.config.preflight import MIN_FREE_BYTES
    from usssl.config.strict_yaml import MAX_VALUES

    lines = ["# Pipeline YAML reference", "",
             "Generated from `usssl/config/` by `usssl validate --reference`; every key below is checked, and",
             "an unknown key is an error that names it and suggests the closest valid one.", "",
             "## Paths", "",
             "A relative path (`output_dir`, `data.sources`, `data.labels_csv`, `data.cache_dir`, "
             "`speech.pretrained_path`, …)",
             "is read from the **working directory** — the folder you run `usssl` in — not from the YAML's folder:",
             "the shipped pipelines are run from the repository root (`usssl run pipelines/demo.yaml`). "
             "`usssl validate`",
             "and `usssl run` resolve every input path before anything is written, and an error names the absolute",
             "path looked for (and says so when the path exists relative to the YAML's folder instead). Output",
             "folders are checked too: one that cannot be created or written, under /proc or /sys, or on a disk",
             f"with less than {MIN_FREE_BYTES // 2**20} MB free is refused before any work.", "",
             "## What is refused", "",
             "Settings that would run but mean nothing are errors when the YAML is loaded (exit code 2):", "",
             "- an empty file, a file without `stages`, a binary or non-UTF-8 file, a key given twice in one",
             f"  mapping (YAML would keep the last silently), anchors/aliases that expand to more than "
             f"{MAX_VALUES:,} values;",
             "- `.inf` or `.nan` for any number;",
             "- two stages of one kind, except `pretrain` (each with its own `name`);",
             f"- seeds outside 0 … {SEED_MAX} (2**32 − 1);",
             f"- epoch counts above {MAX_EPOCHS:,}, `pretrain.max_steps` of 0 or above {MAX_STEPS:,}, batches above "
             f"{MAX_BATCH:,},",
             f"  more than {MAX_PER_EPOCH:,} items per epoch; frame sizes outside 4 … {MAX_PIXELS} px, synthetic frames",
             "  outside 48 … 2048 px (even), spectrograms outside 8 … 4096, crop boxes that are empty;",
             "- `trainer.devices` that is not a count, -1, `auto` or a list of indices.", "",
             "`usssl run` also checks, before any work, that the machine has the accelerator and devices of",
             "`trainer:` (`usssl validate` does not: a GPU YAML is valid on a laptop; `--schema-only` skips paths",
             "too) and that a remote tracking server answers within 3 s. A pretrain batch larger than the items of",
             "one epoch (0 steps) is an error when pretraining starts, or from `usssl validate` once the cache",
             "exists (exit code 1). Every run logs its thread counts (MLflow params `threads.*`) and library",
             "versions (tags `version.*`); results can differ with the thread count.", ""]

    def section(title: str, model: type[BaseModel]) -> None:
        lines.extend([f"## `{title or '(top level)'}`", "", ((model.__doc__ or "").strip().splitlines() or [""])[0], "",
                      "| key | type | default | meaning |", "|---|---|---|---|"])
        nested = []
        for name, field in model.model_fields.items():
            sub = _first_model(field.annotation)
            ann = field.annotation
            kind = sub.__name__ if sub else getattr(ann, "__name__", None) if isinstance(ann, type) else None
            kind = kind or str(ann).replace("typing.", "")
            if name == "stages":
                kind, sub = "list of stages", None
            default = field.get_default(call_default_factory=True)
            shown = "see below" if isinstance(default, BaseModel) else repr(default)
            lines.append(f"| `{name}` | {kind.replace('|', 'or')} | {shown.replace('|', 'or')} | "
                         f"{(field.description or '').replace('|', 'or')} |")
            if sub is not None and sub is not schema.StageEntry:
                nested.append((f"{title}.{name}" if title else name, sub))
        lines.append("")
        for child_title, child in nested:
            section(child_title, child)

    section("", schema.PipelineConfig)
    for kind in schema.STAGE_NAMES:
        section(f"stages[].{kind}", _first_model(schema.StageEntry.model_fields[kind].annotation))
    return "\n".join(lines) + "\n"
