"""``usssl compare ENCODERS.yaml TASKS.yaml``: every encoder × every end task, one table.

``ENCODERS.yaml`` holds ``encoders:`` (named entries: random, recipe, supervised or checkpoint);
``TASKS.yaml`` holds ``tasks:`` (each an ingested cache and a kind) and optionally the protocol
(``folds``, ``val_fraction``, ``bootstrap``, ``seeds``, ``trainer``, ``tracking``). The two are
joined into a one-stage pipeline (``stages: [compare: ...]``) written to ``OUT/compare.yaml`` and run
like ``usssl run`` (MLflow, ``--resume``). See ``usssl.stages.compare`` and docs/compare.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from usssl.errors import ConfigError

EPILOG = ("Example: usssl compare pipelines/compare/encoders.yaml pipelines/compare/tasks.yaml --out runs/compare. "
          "Docs: docs/compare.md")
PROTOCOL_KEYS = ("folds", "val_fraction", "bootstrap")
PIPELINE_KEYS = ("seed", "seeds", "trainer", "tracking")


def compare_pipeline(encoders: Path, tasks: Path, out: Path) -> dict:
    """The raw one-stage pipeline mapping of ``encoders`` and ``tasks`` (module docstring)."""
    from usssl.config import read_yaml_file

    enc, task = read_yaml_file(encoders), read_yaml_file(tasks)
    if not isinstance(enc, dict) or not isinstance(enc.get("encoders"), list):
        raise ConfigError(f"{encoders}: expected a mapping with an `encoders:` list (see pipelines/compare/)")
    if not isinstance(task, dict) or not isinstance(task.get("tasks"), list):
        raise ConfigError(f"{tasks}: expected a mapping with a `tasks:` list (see pipelines/compare/)")
    extra = sorted(set(enc) - {"encoders"}) + sorted(set(task) - {"tasks", *PROTOCOL_KEYS, *PIPELINE_KEYS})
    if extra:
        raise ConfigError(f"{encoders} / {tasks}: unknown top-level key(s) {extra}; ENCODERS.yaml holds encoders:, "
                          f"TASKS.yaml holds tasks: and {', '.join(PROTOCOL_KEYS + PIPELINE_KEYS)}")
    body = {"encoders": enc["encoders"], "tasks": task["tasks"], **{k: task[k] for k in PROTOCOL_KEYS if k in task}}
    return {"name": "compare", "output_dir": str(out), **{k: task[k] for k in PIPELINE_KEYS if k in task},
            "stages": [{"compare": body}]}


def cmd_compare(args: argparse.Namespace) -> int:
    import yaml

    from usssl.config import load_config

    out = Path(args.out)
    raw = compare_pipeline(Path(args.encoders), Path(args.tasks), out)
    out.mkdir(parents=True, exist_ok=True)
    joined = out / "compare.yaml"  # what ran, in one file (paths as the user wrote them)
    joined.write_text(f"# joined by `usssl compare {args.encoders} {args.tasks}`\n" + yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(joined, args.set)
    args.writes_to = cfg.output_dir
    from usssl.cli import preflight

    preflight(cfg, str(joined), True)
    from usssl.pipeline import run_pipeline

    result = run_pipeline(cfg, resume=args.resume)
    print(result.get("compare", {}).get("report", ""))
    print(f"Table: {out / 'compare' / 'report.md'} (heat map: {out / 'compare' / 'heatmap.png'})")
    return 0


def add_compare_parser(subparsers, with_sets) -> argparse.ArgumentParser:
    """Add ``usssl compare`` to the ``usssl`` sub-command parsers."""
    p = subparsers.add_parser("compare", help="every encoder × every end task: one table (ViRB for ultrasound)",
                              epilog=EPILOG)
    p.add_argument("encoders", metavar="ENCODERS.yaml", help="the encoders: random, recipe, supervised, checkpoint")
    p.add_argument("tasks", metavar="TASKS.yaml", help="the end tasks (an ingested cache each) and the protocol")
    p.add_argument("--out", default="runs/compare", help="output folder (default: runs/compare)")
    p.add_argument("--resume", action="store_true", help="keep finished cells (a killed grid loses at most one)")
    with_sets(p)
    p.set_defaults(func=cmd_compare)
    return p
