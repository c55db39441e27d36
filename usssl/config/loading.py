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
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from usssl.config import pipeline as schema
from usssl.errors import ConfigError


def load_config(path: str | Path, overrides: list[str] | None = None):
    """Read a pipeline YAML, apply ``key.path=value`` overrides and validate.

    Raises:
        ConfigError: the file is missing or not YAML, an override is malformed, or validation
            fails; the message names the file, the key path and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    for item in overrides or []:
        apply_override(raw, item, source=str(path))
    try:
        return schema.PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


def apply_override(raw: dict, item: str, source: str = "--set") -> None:
    """Set ``a.b[1].c=value`` (value parsed as YAML) in a raw config mapping, in place.

    A first part that names a stage (``pretrain.max_epochs=2``) addresses the first stage of
    that kind.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, text = item.split("=", 1)
    value = yaml.safe_load(text) if text.strip() else None
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
                raise ConfigError(f"--set {key}: no item [{part}] at {_join(parts[:depth])}")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {_join(parts[:depth])} is not a mapping")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"--set {key}: no item [{last}]")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {_join(parts[:-1])} is not a mapping")
        node[last] = value


def _split_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for token in key.replace("[", ".").replace("]", "").split("."):
        if token == "":
            continue
        parts.append(int(token) if token.isdigit() else token)
    return parts


def _join(loc: tuple | list) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


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
        where = _join(loc)
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
            message = f"got {err.get('input')!r}; expected {err['ctx']['expected']}"
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = f"{err['msg']} (got {err.get('input')!r})"
        line = f"{source}: {where}: {message}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


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


REDACTED = "<redacted path>"


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
    lines = ["# Pipeline YAML reference", "",
             "Generated from `usssl/config/` by `usssl validate --reference`; every key below is checked, and",
             "an unknown key is an error that names it and suggests the closest valid one.", ""]

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
