"""``usssl predict``: run an exported plane classifier (and saliency model) on DICOMs and videos.

For each input the frames go through exactly the steps ``usssl ingest`` applies (the same
functions of ``usssl.data.ingest_recording`` and ``usssl.privacy.region``): decode (colour when
the source holds colour), find the imaging region as the export's ``crop`` says (DICOM ultrasound
region, motion, none or a box), blank pixels outside it and constant overlays inside it,
resample to the export's frame rate (nearest source frame), crop, resize (INTER_AREA) and convert
to grey. Each resampled frame k is then classified from the clip of T frames ending at (or
centred on) k, in batches. Outputs, in ``OUT/<name>/``::

    planes.csv      frame, time_s, source_frame, p_<class> for every class, predicted, probability
    saliency.csv    frame, time_s, peak_x, peak_y (source-frame pixels), peak_value, entropy_bits,
                    png (only with a saliency model)
    saliency/frame-000010.png   every N-th frame: the map over the frame the model saw, shown at
                    the crop's aspect ratio
    summary.json    counts, frame rates, crop box, model provenance and the disclaimer

``<name>`` is ``input-001``, ``input-002``, … in the order of the inputs (folders expanded, sorted)
unless ``keep_names``: DICOM files are often named after the patient, and nothing read from a
DICOM header is written. A file that cannot be read is reported and skipped; ``OUT/summary.json``
lists every input's status without its path (``report`` writes the path → name mapping elsewhere).

    >>> summary = predict_files("runs/demo/export", ["scan.dcm", "clip.mp4"], "predictions")
    >>> summary.n_ok
    2
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from usssl.errors import ConfigError, DataError, UssslError

if TYPE_CHECKING:
    import numpy as np

    from usssl.downstream.export import ExportedModel

log = logging.getLogger(__name__)

EPILOG = """example:
  usssl predict runs/demo/export scans/ clip.mp4 --out predictions --every 5

  writes predictions/input-001/planes.csv, saliency.csv, saliency/*.png and summary.json per
  input (input-001 is the first input; folders are expanded in sorted order).
  Research use only, not for clinical decisions.
"""
OVERLAY_LONG_SIDE = 512  # pixels of the longer side of a saliency PNG (at most the crop's own)


@dataclass
class Prepared:
    """A recording turned into model input, plus what maps model pixels back to the source.

    Attributes:
        frames: (P, H, W) uint8 grey, cropped, blanked and resized frames at the export's rate.
        times: (P,) seconds of each frame from the first source frame.
        source_index: (P,) the source frame each one was taken from.
        box: (x0, y0, x1, y1) crop box in source pixels, end-exclusive.
        crop_method: "ultrasound_region", "motion", "full_frame" or "box".
        fps: frame rate of ``frames``.
        source: n_frames, fps, height, width of the source recording.
    """

    frames: np.ndarray
    times: np.ndarray
    source_index: np.ndarray
    box: tuple[int, int, int, int]
    crop_method: str
    fps: float
    source: dict = field(default_factory=dict)


def prepare_frames(path: Path, spec_input: dict) -> Prepared:
    """Read ``path`` and turn it into model input as ``usssl ingest`` would (module docstring).

    Args:
        path: a DICOM, video or NIfTI file.
        spec_input: the ``input`` block of preprocessing.json (size, fps, crop).

    Raises:
        DataError: the file is of an unknown type, unreadable, or refused (burned-in annotation
            without an ultrasound region).
    """
    import numpy as np

    from usssl.data.ingest_recording import _grey, imaging_geometry
    from usssl.privacy.region import crop_resize

    if not path.is_file():
        raise DataError(f"{path.name}: no such file")
    reader = _reader(path)
    if reader is None:
        raise DataError(f"{path.name}: not a DICOM, video or NIfTI file usssl can read")
    rec = reader(path, path.parent, audio=False, audio_rate=None)
    crop = spec_input["crop"] if isinstance(spec_input["crop"], str) else tuple(spec_input["crop"])
    size = tuple(int(v) for v in spec_input["size"])
    geo = imaging_geometry(rec, path, crop, spec_input["fps"])  # the steps of ingest, the same function
    src, src_idx, decoded, box, keep = geo.src, geo.src_idx, geo.frames, geo.box, geo.keep

    out = np.empty((len(src_idx), *size), np.uint8)  # (P, H, W)
    start = pos = 0
    for block in [decoded] if decoded is not None else src.iter_frames(64):
        stop = int(np.searchsorted(src_idx, start + len(block)))
        if stop > pos:
            out[pos:stop] = _grey(crop_resize(block[src_idx[pos:stop] - start], box, size, keep))
            pos = stop
        start += len(block)
        if pos >= len(src_idx):
            break
    if pos == 0:
        raise DataError(f"{rec.source}: no frame could be decoded")
    fps = float(spec_input["fps"] or rec.fps)
    times = np.arange(pos) / fps if spec_input["fps"] else geo.timestamps[src_idx[:pos]]
    return Prepared(frames=out[:pos], times=np.asarray(times, np.float64), source_index=src_idx[:pos],
                    box=box, crop_method=geo.crop_method, fps=fps,
                    source={"n_frames": int(rec.n_frames), "fps": float(rec.fps), "height": int(rec.height),
                            "width": int(rec.width)})  # fmt: skip


def _reader(path: Path):
    """The ingest reader of ``path`` (by extension, or DICOM by its magic), or None."""
    from usssl.data.ingest_recording import reader_for

    found = reader_for(path) if path.is_file() else None
    return None if found is None else found[1]


def clip_indices(n: int, clip_frames: int, anchor: str = "end") -> np.ndarray:
    """(n, T) frame indices of the clip of every frame, edges repeating the first / last frame.

    "end": frame k's clip is k-T+1 … k; "centre": k-T//2 … k+(T-1)//2.
    """
    import numpy as np

    first = -(clip_frames - 1) if anchor == "end" else -(clip_frames // 2)
    offsets = np.arange(first, first + clip_frames)  # (T,)
    return np.clip(np.arange(n)[:, None] + offsets[None, :], 0, n - 1)


def _clips(frames: np.ndarray, index: np.ndarray):
    """(b, T) indices into (P, H, W) uint8 frames -> video (b, 1, T, H, W) float32 in [0, 1]."""
    import torch

    return torch.from_numpy(frames[index]).float().div_(255.0).unsqueeze(1)


def run_models(model: ExportedModel, frames: np.ndarray, batch_size: int = 32,
               keep_maps: set[int] | None = None, on_batch=None) -> dict:  # fmt: skip
    """Class probabilities of every frame and, with a saliency model, its map's peak and entropy.

    Args:
        model: a loaded export.
        frames: (P, H, W) uint8 prepared frames.
        batch_size: clips per forward pass.
        keep_maps: frames whose full saliency map is returned (for the PNGs).
        on_batch: called with the number of frames done after every batch (progress).

    Returns:
        {"probs": (P, C), "peak": (P, 2) x, y in map pixels, "peak_value": (P,), "entropy": (P,)
        in bits, "maps": {frame: (h, w)}, "map_size": (h, w)}; the saliency keys only with a
        saliency model.
    """
    import numpy as np

    n, spec = len(frames), model.spec
    plane_idx = clip_indices(n, spec["models"]["planes"]["clip_frames"], spec["input"]["clip_anchor"])
    probs = np.zeros((n, len(model.class_names)), np.float32)
    out: dict = {"probs": probs}
    if model.has_saliency:
        sal_idx = clip_indices(n, spec["models"]["saliency"]["clip_frames"], spec["input"]["clip_anchor"])
        out |= {"peak": np.zeros((n, 2), np.float64), "peak_value": np.zeros(n), "entropy": np.zeros(n), "maps": {}}
    keep_maps = keep_maps or set()
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        probs[lo:hi] = model.planes(_clips(frames, plane_idx[lo:hi])).numpy()
        if model.has_saliency:
            maps = model.saliency(_clips(frames, sal_idx[lo:hi])).double().numpy()  # (b, h, w)
            maps = maps / np.clip(maps.sum(axis=(1, 2), keepdims=True), 1e-12, None)
            flat = maps.reshape(len(maps), -1)
            best = flat.argmax(axis=1)  # (b,)
            out["peak"][lo:hi] = np.stack([best % maps.shape[2], best // maps.shape[2]], axis=1)
            out["peak_value"][lo:hi] = flat[np.arange(len(flat)), best]
            out["entropy"][lo:hi] = -(flat * np.log2(np.clip(flat, 1e-30, None))).sum(axis=1)
            out["map_size"] = maps.shape[1:]
            for k in range(lo, hi):
                if k in keep_maps:
                    out["maps"][k] = maps[k - lo].astype(np.float32)
        if on_batch is not None:
            on_batch(hi - lo)
    return out


def map_to_source(xy: np.ndarray, map_size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """(..., 2) x, y pixel centres of a (h, w) map over the crop -> source-frame pixels.

    The inverse of ``usssl.privacy.region.map_points``: x_src = x0 + (x + 0.5)·(x1 − x0)/w − 0.5.
    """
    import numpy as np

    x0, y0, x1, y1 = box
    scale = np.array([(x1 - x0) / map_size[1], (y1 - y0) / map_size[0]])
    return (np.asarray(xy, np.float64) + 0.5) * scale - 0.5 + np.array([x0, y0])


def overlay_png(frame: np.ndarray, saliency: np.ndarray, box: tuple[int, int, int, int]) -> bytes:
    """PNG bytes: the (H, W) uint8 frame with a (h, w) saliency map blended over it, at the crop's
    aspect ratio (longer side ``OVERLAY_LONG_SIDE`` at most), the peak circled."""
    import cv2
    import numpy as np

    crop_w, crop_h = box[2] - box[0], box[3] - box[1]
    scale = min(1.0, OVERLAY_LONG_SIDE / max(crop_w, crop_h))
    w, h = max(1, round(crop_w * scale)), max(1, round(crop_h * scale))
    grey = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
    heat = cv2.resize(saliency.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)  # (h, w) in [0, 1]
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (0.6 * heat)[..., None]
    blended = (cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR) * (1 - alpha) + colour * alpha).astype(np.uint8)
    py, px = np.unravel_index(int(saliency.argmax()), saliency.shape)
    centre = (int((px + 0.5) * w / saliency.shape[1]), int((py + 0.5) * h / saliency.shape[0]))
    cv2.circle(blended, centre, max(3, min(w, h) // 40), (255, 255, 255), 1)
    ok, data = cv2.imencode(".png", blended)
    assert ok, "PNG encoding failed"
    return data.tobytes()


def write_outputs(folder: Path, model: ExportedModel, prep: Prepared, result: dict, every: int) -> dict:
    """Write planes.csv, saliency.csv, the PNGs and summary.json into ``folder``; returns the summary."""
    import numpy as np

    names = model.class_names
    probs = result["probs"]
    pred = probs.argmax(axis=1)
    with open(folder / "planes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "time_s", "source_frame", *[f"p_{c}" for c in names], "predicted", "probability"])
        for k in range(len(probs)):
            writer.writerow([k, f"{prep.times[k]:.4f}", int(prep.source_index[k]),
                             *[f"{p:.6f}" for p in probs[k]], names[pred[k]], f"{probs[k, pred[k]]:.6f}"])  # fmt: skip
    saliency = None
    if model.has_saliency:
        (folder / "saliency").mkdir()
        peaks = map_to_source(result["peak"], result["map_size"], prep.box)  # (P, 2)
        with open(folder / "saliency.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["frame", "time_s", "peak_x", "peak_y", "peak_value", "entropy_bits", "png"])
            for k in range(len(probs)):
                png = ""
                if k in result["maps"]:
                    png = f"saliency/frame-{k:06d}.png"
                    (folder / png).write_bytes(overlay_png(prep.frames[k], result["maps"][k], prep.box))
                writer.writerow([k, f"{prep.times[k]:.4f}", f"{peaks[k, 0]:.1f}", f"{peaks[k, 1]:.1f}",
                                 f"{result['peak_value'][k]:.6g}", f"{result['entropy'][k]:.4f}", png])  # fmt: skip
        saliency = {"every": every, "n_png": len(result["maps"]), "map_size": list(result["map_size"])}
    counts = np.bincount(pred, minlength=len(names))
    return {
        "disclaimer": model.spec["disclaimer"],
        "n_frames": len(probs),
        "fps": prep.fps,
        "duration_s": round(len(probs) / prep.fps, 4),
        "source": prep.source,
        "crop_box": list(prep.box),
        "crop_method": prep.crop_method,
        "predicted_frames": {c: int(n) for c, n in zip(names, counts)},
        "mean_probability": {c: round(float(p), 6) for c, p in zip(names, probs.mean(axis=0))},
        "saliency": saliency,
        "model": {"provenance": model.spec.get("provenance", {}), "usssl_version": model.spec.get("usssl_version"),
                  "clip_frames": model.spec["models"]["planes"]["clip_frames"]},
    }


@dataclass
class PredictSummary:
    """What ``predict_files`` did: one row per input (name, status, reason, n_frames)."""

    out_dir: Path
    rows: list[dict]

    @property
    def n_ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.rows)

    @property
    def n_failed(self) -> int:
        return len(self.rows) - self.n_ok


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively (sorted) for files ingest can read."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += [p for p in sorted(item.rglob("*"))
                      if p.is_file() and not p.name.startswith(".") and _reader(p) is not None]  # fmt: skip
        else:
            files.append(item)  # a missing or unsupported file is reported when it is reached
    return files


def output_names(files: list[Path], keep_names: bool) -> list[str]:
    """``input-001``, … by position; with ``keep_names`` the file stem (made unique with -2, -3 …)."""
    if not keep_names:
        width = max(3, len(str(len(files))))
        return [f"input-{k:0{width}d}" for k in range(1, len(files) + 1)]
    from usssl.data.ingest_recording import recording_stem

    names, seen = [], {}
    for path in files:
        stem = recording_stem(path) or "input"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def _scrub(message: str, path: Path, name: str) -> str:
    """``message`` with every form of ``path`` (which may name the patient) replaced by ``name``."""
    for form in sorted({str(path.resolve()), str(path), path.name, path.stem}, key=len, reverse=True):
        if len(form) >= 3:
            message = message.replace(form, name)
    return message


def predict_files(model_dir: str | Path, inputs: list[str | Path], out_dir: str | Path, *, every: int = 10,
                  batch_size: int = 32, keep_names: bool = False, progress: bool = False,
                  report: str | Path | None = None) -> PredictSummary:  # fmt: skip
    """Run an export on every input and write its outputs (module docstring).

    Args:
        model_dir: folder written by ``usssl.downstream.export.export_model``.
        inputs: DICOM / video / NIfTI files, or folders of them.
        out_dir: output folder; ``<out_dir>/<name>/`` per input is replaced when it exists.
        every: a saliency PNG every ``every``-th resampled frame (0: none).
        batch_size: clips per forward pass.
        keep_names: name outputs by the input's file stem instead of its position.
        progress: show a rich progress bar.
        report: optional CSV path mapping each input path to its output name and status; it names
            the inputs, so it must lie outside ``out_dir``.

    Raises:
        DataError: ``model_dir`` is not a readable export; ConfigError: bad arguments.
    """
    from usssl.downstream.export import DISCLAIMER, load_exported

    if every < 0 or batch_size < 1:
        raise ConfigError(f"usssl predict: --every must be >= 0 and --batch-size >= 1 (got {every}, {batch_size})")
    out = Path(out_dir)
    if report is not None and out.resolve() in [Path(report).resolve(), *Path(report).resolve().parents]:
        raise ConfigError("usssl predict: --report maps input paths (which may name patients) to outputs; "
                          "keep it outside --out")  # fmt: skip
    log.warning(DISCLAIMER)
    model = load_exported(model_dir)
    files = expand_inputs(inputs)
    names = output_names(files, keep_names)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with _Progress(progress) as bar:
        for position, (path, name) in enumerate(zip(files, names), start=1):
            t0 = time.time()
            tmp = out / f".tmp-{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                bar.start(name)
                prep = prepare_frames(path, model.spec["input"])
                keep = set(range(0, len(prep.frames), every)) if every else set()
                bar.total(name, len(prep.frames))
                result = run_models(model, prep.frames, batch_size, keep, on_batch=bar.advance)
                tmp.mkdir()
                summary = write_outputs(tmp, model, prep, result, every)
                summary = {"name": name, "position": position, "status": "ok", **summary,
                           "seconds": round(time.time() - t0, 3)}  # fmt: skip
                (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
                shutil.rmtree(out / name, ignore_errors=True)
                os.replace(tmp, out / name)
                rows.append({"name": name, "status": "ok", "reason": "", "n_frames": summary["n_frames"]})
                log.info("%s: %d frames at %g fps", name, summary["n_frames"], prep.fps)
            except Exception as exc:  # bad input is data: reported, the other inputs go on
                shutil.rmtree(tmp, ignore_errors=True)
                reason = str(exc) if isinstance(exc, UssslError) else f"{type(exc).__name__}: {exc}"
                reason = _scrub(reason, path, name)
                rows.append({"name": name, "status": "failed", "reason": reason, "n_frames": 0})
                log.error("%s: skipped: %s", name, reason)
    summary = PredictSummary(out, rows)
    run = {"disclaimer": DISCLAIMER, "n_ok": summary.n_ok, "n_failed": summary.n_failed,
           "model": model.spec.get("provenance", {}), "inputs": rows}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(run, indent=2))
    if report is not None:
        with open(report, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["input", "name", "status", "reason"])
            writer.writeheader()
            writer.writerows({"input": str(p), **{k: r[k] for k in ("name", "status", "reason")}}
                             for p, r in zip(files, rows))  # fmt: skip
    return summary


class _Progress:
    """A rich progress bar over the frames of the current input, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.bar, self.task = None, None
        if enabled:
            from rich.progress import Progress

            self.bar = Progress(transient=True)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, name: str) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(f"{name}: reading", total=None)

    def total(self, name: str, n: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=f"{name}: predicting", total=n, completed=0)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)


# ----------------------------------------------------------------------------- CLI
def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``usssl predict`` to the ``usssl`` sub-command parsers."""
    p = subparsers.add_parser(
        "predict", help="run an exported model on DICOMs or videos (research use only)",
        description="Per-frame standard-plane probabilities and saliency maps from an exported model "
                    "(folder with model.pt2 and preprocessing.json). Frames are cropped, resampled and "
                    "resized exactly as `usssl ingest` does. Research use only, not for clinical decisions.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("model_dir", metavar="MODEL_DIR", help="export folder (model.pt2, preprocessing.json)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM, video or NIfTI files, or folders of them")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--every", type=_non_negative, default=10, metavar="N",
                   help="write a saliency PNG every N-th frame (0: none; default 10)")
    p.add_argument("--batch-size", type=_positive, default=32, metavar="B", help="clips per forward pass (default 32)")
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

    summary = predict_files(args.model_dir, args.inputs, args.out, every=args.every, batch_size=args.batch_size,
                            keep_names=args.keep_names, progress=True, report=args.report)  # fmt: skip
    for row in summary.rows:
        detail = f"{row['n_frames']} frames" if row["status"] == "ok" else row["reason"]
        print(f"{row['name']}: {row['status']} ({detail})")
    print(f"predicted {summary.n_ok} input(s), failed {summary.n_failed}; outputs in {summary.out_dir}")
    print(DISCLAIMER)
    return 0 if summary.n_ok else 1
