"""The ``usssl`` command: run, validate, synth, ingest, datacard, deidentify, doctor, predict, export, compare.

Errors a user can fix (a config typo, a missing path, unreadable data, a full disk) print one line and
exit with code 2 (config) or 1 (data), without a traceback; Ctrl-C says how to resume (exit 130). Paths,
output folders (and for ``run`` the machine and tracking server) are checked before any work. Heavy
libraries (torch, lightning, mlflow) are imported only by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

from usssl.cli.compare import add_compare_parser, cmd_compare  # noqa: F401 (part of the CLI's API)
from usssl.cli.doctor import cmd_doctor
from usssl.cli.export import add_export_parser
from usssl.cli.options import INGEST_DEFAULTS, add_common, finish
from usssl.cli.predict import add_predict_parser, cmd_predict  # noqa: F401 (part of the CLI's API)
from usssl.errors import ConfigError, UssslError

EPILOG = "Docs: README.md and docs/. Example: usssl run pipelines/demo.yaml --set pretrain.max_epochs=2"


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", handlers=[RichHandler(show_path=False, rich_tracebacks=False)])
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                  "lightning.fabric.utilities.rank_zero", "alembic", "mlflow", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_validate(args: argparse.Namespace) -> int:
    from usssl.config import absolute, load_config, reference_markdown

    if args.reference:
        print(reference_markdown(), end="")
        return 0
    if args.schema:
        import json

        from usssl import config

        print(json.dumps(config.PipelineConfig.model_json_schema(), indent=2))
        return 0
    if not args.pipeline:
        raise ConfigError("usssl validate: give a pipeline YAML (or --reference, --schema)")

    cfg = load_config(args.pipeline, args.set)
    if args.print:
        from usssl.config import to_yaml

        print(to_yaml(cfg), end="")  # every key, defaults filled in: loads back to the same config
        return 0
    stages = " → ".join(entry.kind for entry in cfg.stages)
    checked = "keys and values only (--schema-only)" if args.schema_only else preflight(cfg, args.pipeline, False)
    print(f"{args.pipeline}: valid — {cfg.name}: {stages}; output in {absolute(cfg.output_dir)}")
    print(f"  checked: {checked}")
    return 0


def preflight(cfg, source: str, running: bool) -> str:
    """Checks before a pipeline writes anything: paths, output folders, then the machine and tracking server
    (``running``) or each pretrain batch against an existing cache (validate). Returns them in words."""
    from usssl.config import check_machine, check_paths

    done = [check_paths(cfg, source)]
    pretrains = [(e.body, f"{source}: stages[{i}].pretrain") for i, e in enumerate(cfg.stages) if e.kind == "pretrain"]
    if running:
        done.append(check_machine(cfg.trainer, source))
        if cfg.tracking.enabled:
            from usssl.engine.tracking import check_tracking_server

            check_tracking_server(cfg.tracking_uri, source=source)
    elif pretrains:
        steps = [None]
        if cfg.cache_dir.is_dir():  # a cache, or part of one: only then is torch imported
            from usssl.stages.pretrain import check_pretrain_data

            steps = [check_pretrain_data(cfg, pcfg, key) for pcfg, key in pretrains]
        done.append("batch sizes: when pretraining starts (no cache yet)" if None in steps else
                    f"batch sizes against the cache ({', '.join(map(str, steps))} step(s) per epoch)")
    if not running and (cfg.cache_dir / "index.parquet").is_file():
        from usssl.stages.ingest import check_cache_classes

        done.append(check_cache_classes(cfg))
    return "; ".join(done)


def cmd_run(args: argparse.Namespace) -> int:
    from usssl.config import load_config

    cfg = load_config(args.pipeline, args.set)
    args.writes_to = cfg.output_dir  # named by a disk-full message
    logging.getLogger("usssl").info("checked: %s", preflight(cfg, args.pipeline, True))  # before any output
    from usssl.pipeline import run_pipeline

    result = run_pipeline(cfg, resume=args.resume)
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console()
    if result.get("report"):
        console.print(Markdown(result["report"]))
    uri = result["tracking_uri"]
    console.print(f"\n[bold]Finished in {result['seconds']:.0f} s.[/bold] Outputs: {result['output_dir']}")
    if not cfg.tracking.enabled:
        console.print("MLflow tracking is off (tracking.enabled: false).")
    elif uri.startswith("sqlite:"):
        from usssl.engine.tracking import ui_command

        console.print(f"MLflow store: {uri} (experiment '{result['experiment']}')")
        console.print(f"Open it with:  {ui_command(uri)}", soft_wrap=True)
        console.print(f"then:          {result['runs_url']}", soft_wrap=True)
    else:
        console.print(f"MLflow runs were sent to {uri} (experiment '{result['experiment']}')")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from usssl.data.synth import generate

    out = generate(Path(args.out), subjects=args.subjects, seed=args.seed, voice=args.voice,
                   duration_s=args.duration, progress=True)
    print(f"synthetic corpus written to {out} ({args.subjects} subjects, seed {args.seed})")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from usssl.config import IngestConfig, load_config

    if args.merge:
        if args.sources or args.out or args.shard:
            raise ConfigError("usssl ingest --merge CACHE takes no sources, --out or --shard: it joins the "
                              "parts that `usssl ingest SRC --out CACHE --shard K/N` wrote")  # fmt: skip
        from usssl.data.ingest import merge_parts

        return _ingest_done(merge_parts(Path(args.merge)), args.strict)
    if not args.sources or not args.out:
        raise ConfigError("usssl ingest: give SOURCES and --out CACHE (or --merge CACHE)")
    tables = {"allow_unmatched_labels": args.allow_unmatched_labels, "subject_per_recording": args.subject_per_recording}
    if args.config:
        cfg = load_config(args.config, args.set)
        icfg = cfg.stage("ingest") or IngestConfig()
        tables = {k: v or getattr(cfg.data, k) for k, v in tables.items()}
    else:
        icfg = IngestConfig()
    updates = {"workers": args.workers, "fps": args.fps, "overwrite": args.overwrite or None}
    if args.size:
        updates["size"] = tuple(args.size)
    if args.no_audio:
        updates["audio"] = False
    icfg = icfg.model_copy(update={k: v for k, v in updates.items() if v is not None})
    IngestConfig.model_validate(icfg.model_dump())
    from usssl.data.ingest import ingest, parse_part

    part = parse_part(args.shard) if args.shard else None
    summary = ingest([Path(s) for s in args.sources], Path(args.out), icfg, progress=True, part=part, **tables)
    if part is not None:
        print(f"part {part[0]}/{part[1]} done; once every part is, run: usssl ingest --merge {args.out}")
    return _ingest_done(summary, args.strict)


def _ingest_done(summary, strict: bool) -> int:
    """Print what an ingest (or merge) did; exit 1 under ``--strict`` when an input failed."""
    repeats = getattr(summary, "n_duplicates", 0)
    print(f"ingested {summary.n_ok} recording(s), {summary.n_failed} failed, "
          f"{summary.n_skipped - summary.n_failed - repeats} skipped (not recordings), {repeats} duplicate(s) "
          f"of another recording cached once; cache: {summary.cache_dir}")
    if summary.n_skipped:
        print(f"see {summary.report_path} for the reasons")
    if strict and summary.n_failed:
        print(f"error: --strict: {summary.n_failed} input(s) failed", file=sys.stderr)
        return 1
    return 0


def cmd_datacard(args: argparse.Namespace) -> int:
    from usssl.data.cache import Cache
    from usssl.data.datacard import data_card

    cache = Cache(args.cache)  # a DataError unless the ingest finished
    out = Path(args.out) if args.out else Path("data_cards") / f"{cache.root.resolve().name}.md"
    if out.suffix.lower() != ".md":
        raise ConfigError(f"usssl datacard: --out {out}: give a Markdown file name ending in .md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(data_card(cache.root))
    print(f"data card written to {out}; fill in its last section (docs: data_cards/TEMPLATE.md)")
    return 0


def cmd_deidentify(args: argparse.Namespace) -> int:
    from usssl.privacy.deid import deidentify_tree

    src, dst = Path(args.source), Path(args.out)
    if not src.is_dir():
        raise ConfigError(f"usssl deidentify: {src} is not a folder")
    report_path = Path(args.report) if args.report else dst.parent / f"{dst.name}.deid-report.csv"
    if dst.resolve() in report_path.resolve().parents:
        raise ConfigError("usssl deidentify: the report maps source paths to outputs; keep it outside --out")
    report = deidentify_tree(src, dst, date_shift_days=args.shift_dates, allow_burned_in=args.allow_burned_in,
                             keep_descriptors=args.keep_descriptors)
    report.write_csv(report_path)  # mode 0600: it maps source paths (which may name patients) to outputs
    print(f"applied: {report.summary}")
    print(f"de-identified {report.count('ok')} file(s) into {dst}; refused {report.count('refused')}, "
          f"failed {report.count('failed')}. Report (keep it with the source data): {report_path}")
    print("Header de-identification does not clean burned-in pixels: check the images before sharing "
          "(docs/privacy.md says exactly what is and is not removed).")
    return 0 if report.count("ok") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usssl", epilog=EPILOG,
                                     description="Self-supervised learning on ultrasound video.")
    add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_sets(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. pretrain.max_epochs=2 or stages[1].pretrain.batch_size=16 "
                            "(repeatable)")

    p = sub.add_parser("run", help="run a pipeline YAML end to end", epilog=EPILOG)
    p.add_argument("pipeline", help="pipeline YAML, e.g. pipelines/demo.yaml")
    with_sets(p)
    p.add_argument("--resume", action="store_true", help="skip finished stages, continue from the last checkpoint")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a pipeline YAML without running it; print its resolved config or "
                                        "the config's JSON schema")
    p.add_argument("pipeline", nargs="?", help="pipeline YAML (not needed with --reference or --schema)")
    p.add_argument("--reference", action="store_true", help="print every config key as Markdown")
    p.add_argument("--schema", action="store_true",
                   help="print the config's JSON schema (for editors: YAML language servers validate and complete with it)")
    p.add_argument("--print", action="store_true",
                   help="print the resolved config as YAML: every key, defaults filled in, --set applied")
    p.add_argument("--schema-only", action="store_true",
                   help="check keys and values only, not paths or data (a YAML meant for another machine)")
    with_sets(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("synth", help="write the built-in synthetic fetal-ultrasound corpus")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--subjects", type=int, default=12, help="number of synthetic subjects (one scan each)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw: the same seed, the same corpus")
    p.add_argument("--voice", choices=["builtin", "espeak"], default="builtin",
                   help="narration voice: builtin (formant synthesis, always available) or espeak (espeak-ng)")
    p.add_argument("--duration", type=float, default=40.0, help="seconds per scan")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="read recordings into a training cache",
                       epilog="Cluster array job: every task runs `usssl ingest SRC --out CACHE --shard K/N`\n"
                              "(same SRC, CACHE and settings), then one `usssl ingest --merge CACHE`.\n"
                              "Docs: docs/ingest.md")  # fmt: skip
    p.add_argument("sources", nargs="*", help="files or folders")
    p.add_argument("--out", help="cache folder")
    p.add_argument("--config", help="take ingest settings from this pipeline YAML (the options below override them)")
    with_sets(p)
    height, width = INGEST_DEFAULTS["size"]
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help=f"cached frame height and width in pixels (default: from --config, else {height} {width})")
    p.add_argument("--fps", type=float,
                   help=f"cached frame rate (default: from --config, else {INGEST_DEFAULTS['fps']:g})")
    p.add_argument("--workers", type=int,
                   help=f"parallel reader processes (default: from --config, else {INGEST_DEFAULTS['workers']})")
    p.add_argument("--no-audio", action="store_true", help="drop narration (it may contain names)")
    p.add_argument("--overwrite", action="store_true", help="replace a cache written with other settings")
    p.add_argument("--shard", metavar="K/N", help="ingest only part K of N of the sorted inputs (array job)")
    p.add_argument("--merge", metavar="CACHE", help="join the parts of a --shard ingest into the final cache")
    p.add_argument("--strict", action="store_true", help="exit 1 when any input failed")
    p.add_argument("--allow-unmatched-labels", action="store_true",
                   help="go on when label/gaze rows name no recording (a warning and unmatched_table_rows.csv)")
    p.add_argument("--subject-per-recording", action="store_true",
                   help="recordings without a subjects.csv row become their own subject (default: an error)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("datacard", help="write the Markdown data card of an ingested cache")
    p.add_argument("cache", help="cache folder")
    p.add_argument("--out", help="card file (default: data_cards/<cache folder name>.md)")
    p.set_defaults(func=cmd_datacard)

    p = sub.add_parser("deidentify", help="write de-identified copies of DICOMs for sharing (PS3.15 Table E.1-1)",
                       epilog="What each option keeps: docs/privacy.md")
    p.add_argument("source", help="folder of DICOM files")
    p.add_argument("--out", required=True, help="output folder (pseudonymous names)")
    p.add_argument("--shift-dates", type=int, metavar="DAYS",
                   help="keep dates shifted by DAYS (Retain Longitudinal Temporal Information with Modified Dates; "
                        "0 keeps the real dates) instead of removing them")
    p.add_argument("--keep-descriptors", action="store_true",
                   help="keep study/series descriptions and comments (Clean Descriptors column) unchanged: read "
                        "them before sharing, they are not cleaned")
    p.add_argument("--allow-burned-in", action="store_true",
                   help="also write files marked BurnedInAnnotation=YES without an imaging region")
    p.add_argument("--report", help="CSV report path (default: beside --out, never inside it)")
    p.set_defaults(func=cmd_deidentify)

    p = sub.add_parser("doctor", help="versions, codecs, GPU and tracking set-up")
    p.set_defaults(func=cmd_doctor)

    add_predict_parser(sub)
    add_export_parser(sub)
    add_compare_parser(sub, with_sets)
    return finish(parser, sub)


def resume_hint(args: argparse.Namespace) -> str:
    """How to continue an interrupted or failed command, as a clause ("" when there is nothing to resume)."""
    if args.command == "run":
        sets = [f"--set={item}" for item in args.set]
        return f"; rerun `{shlex.join(['usssl', 'run', args.pipeline, *sets, '--resume'])}` to continue"
    if args.command == "ingest":
        return "; rerun the same `usssl ingest` command to continue (finished recordings are kept)"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    from usssl.config import check_output_dir, os_error_message  # after --help: argparse has exited then
    try:
        if args.command in ("ingest", "predict", "synth", "deidentify", "export", "compare") and args.out:  # written
            check_output_dir(args.out, "--out")
        return args.func(args)
    except UssslError as exc:
        print("\n".join(f"error: {line}" for line in str(exc).splitlines()), file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, SystemExit) as exc:
        if isinstance(exc, SystemExit) and not isinstance(exc.__context__, KeyboardInterrupt):
            raise  # but Lightning turns Ctrl-C into sys.exit(1): that is an interrupt too
        print(f"interrupted{resume_hint(args)}", file=sys.stderr)
        return 130
    except Exception as exc:  # a full disk or an unwritable folder anywhere: one line, not a traceback
        folder = getattr(args, "writes_to", None) or getattr(args, "out", None)
        if (message := os_error_message(exc, folder, resume_hint(args))) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
