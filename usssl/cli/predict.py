"""``usssl predict``: its parser and command (the library is ``usssl.downstream.predict``)."""

from __future__ import annotations

import argparse

PREDICT_EPILOG = """example:
  usssl predict runs/demo/export scans/ clip.mp4 --out predictions --every 5

  writes predictions/input-001/planes.csv, saliency.csv, saliency/*.png and summary.json per
  input (input-001 is the first input; folders are expanded in sorted order); --cam adds the
  classifier's Grad-CAM of the same frames (cam.csv, cam/*.png).
  Research use only, not for clinical decisions.
"""


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        if int(text) < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {int(text)}")
        return int(text)
    return parse


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``usssl predict`` to the ``usssl`` sub-command parsers."""
    p = subparsers.add_parser(
        "predict", help="run an exported model on DICOMs or videos (research use only)",
        description="Per-frame standard-plane probabilities and saliency maps from an exported model "
                    "(folder with model.pt2 and preprocessing.json). Frames are cropped, resampled and "
                    "resized exactly as `usssl ingest` does. Research use only, not for clinical decisions.",
        epilog=PREDICT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("model_dir", metavar="MODEL_DIR", help="export folder (model.pt2, preprocessing.json)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM, video or NIfTI files, or folders of them")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--every", type=_int_at_least(0), default=10, metavar="N",
                   help="write a saliency PNG every N-th frame (0: none; default 10)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=32, metavar="B",
                   help="clips per forward pass (default 32)")
    p.add_argument("--cam", action="store_true",
                   help="also write the classifier's Grad-CAM of the same frames (cam.csv, cam/*.png)")
    p.add_argument("--keep-names", action="store_true",
                   help="name outputs after the input files (these may name patients) instead of input-001, …")
    p.add_argument("--report", metavar="CSV",
                   help="also write input path → output name and status here "
                        "(outside --out: paths may name patients)")
    p.set_defaults(func=cmd_predict)
    return p


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``usssl predict``; exit code 0 when at least one input succeeded, else 1."""
    from usssl.downstream.export import DISCLAIMER
    from usssl.downstream.predict import predict_files

    summary = predict_files(args.model_dir, args.inputs, args.out, every=args.every, batch_size=args.batch_size,
                            keep_names=args.keep_names, progress=True, report=args.report,
                            cam=args.cam)  # fmt: skip
    for row in summary.rows:
        detail = f"{row['n_frames']} frames" if row["status"] == "ok" else row["reason"]
        print(f"{row['name']}: {row['status']} ({detail})")
    print(f"predicted {summary.n_ok} input(s), failed {summary.n_failed}; outputs in {summary.out_dir}")
    print(DISCLAIMER)
    return 0 if summary.n_ok else 1
