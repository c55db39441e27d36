"""``usssl export RUN_DIR``: export again a model that a finished run trained (no training), optionally
as a MONAI bundle as well (the library: ``usssl.stages.export.reexport``, ``usssl.downstream.monai_bundle``)."""

from __future__ import annotations

import argparse

EXPORT_EPILOG = """targets (docs/predict.md):
  export folder   model.pt2 (+ saliency.pt2) and preprocessing.json: for `usssl predict`, or any
                  Python with torch (torch.export.load); always written
  MONAI bundle    --monai-bundle DIR: configs/metadata.json, configs/inference.json, models/,
                  for MONAI's bundle tooling (monai.bundle.verify_net_in_out, model zoos)
  MLflow model    logged by the pipeline's export stage (Models page of the run), not by this command

examples:
  usssl export runs/demo                                  # the run's own choice, again
  usssl export runs/demo --model video_speech-linear-1    # a fitted model, to runs/demo/export-video_speech-linear-1
"""


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``usssl export`` to the ``usssl`` sub-command parsers."""
    p = subparsers.add_parser(
        "export", help="export again a model a finished run trained (no training); optionally as a MONAI bundle",
        description="Write the export folder of a model that a finished `usssl run` already trained: the run's "
                    "own choice (its refit model, when its export stage refit one) or a fitted model by tag. "
                    "Nothing is trained. Research use only, not for clinical decisions.",
        epilog=EXPORT_EPILOG)  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="output_dir of the finished run (holds config.yaml)")
    p.add_argument("--model", metavar="NAME",
                   help="a fitted model's tag from RUN_DIR/finetune/manifest.json, e.g. video_speech-linear-1 "
                        "(default: the run's own choice)")
    p.add_argument("--out", metavar="DIR",
                   help="export folder (default: RUN_DIR/export, or RUN_DIR/export-NAME with --model)")
    p.add_argument("--monai-bundle", metavar="DIR", help="also write a MONAI bundle of the classifier to DIR")
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``usssl export``."""
    from usssl.downstream.export import DISCLAIMER
    from usssl.stages.export import reexport

    summary = reexport(args.run_dir, args.model, args.out)
    print(f"exported {summary['model']} ({'-'.join(str(v) for v in summary['recipe'].values())}"
          f"{', with its saliency model' if summary['saliency'] else ''}) to {summary['export_dir']}")
    if args.monai_bundle:
        from usssl.downstream.monai_bundle import CHECK, write_bundle

        bundle = write_bundle(summary["export_dir"], args.monai_bundle)
        print(f"MONAI bundle written to {bundle}; check it from that folder with: {CHECK}")
    print(f"use it with: usssl predict {summary['export_dir']} INPUT...")
    print(DISCLAIMER)
    return 0
