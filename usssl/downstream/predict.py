"""Run an exported plane classifier (and saliency model) on DICOMs and videos (``usssl predict``).

For each input the frames go through exactly the steps ``usssl ingest`` applies (the same
functions of ``usssl.data.frames``): decode (colour when
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
    cam.csv, cam/frame-000010.png   with ``cam``: the classifier's Grad-CAM of the same frames
                    (``usssl.downstream.predict_cam``)
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

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from usssl.downstream.predict_outputs import write_outputs
from usssl.engine.files import replace_atomic
from usssl.engine.progress import progress as progress_bar
from usssl.errors import ConfigError, DataError, UssslError

if TYPE_CHECKING:
    import numpy as np

    from usssl.downstream.export import ExportedModel

log = logging.getLogger(__name__)


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

    from usssl.data.frames import grey, imaging_geometry, resampled_blocks

    if not path.is_file():
        raise DataError(f"{path.name}: no such file")
    reader = reader_of(path)
    if reader is None:
        raise DataError(f"{path.name}: not a DICOM, video or NIfTI file usssl can read")
    rec = reader(path, path.parent, audio=False, audio_rate=None)
    crop = spec_input["crop"] if isinstance(spec_input["crop"], str) else tuple(spec_input["crop"])
    size = tuple(int(v) for v in spec_input["size"])
    geo = imaging_geometry(rec, path, crop, spec_input["fps"])  # the steps of ingest, the same function
    src_idx, box = geo.src_idx, geo.box

    out = np.empty((len(src_idx), *size), np.uint8)  # (P, H, W)
    pos = 0
    for small in resampled_blocks(geo, size):  # the frame path of ingest, block by block
        out[pos : pos + len(small)] = grey(small)
        pos += len(small)
    if pos == 0:
        raise DataError(f"{rec.source}: no frame could be decoded")
    fps = float(spec_input["fps"] or rec.fps)
    times = np.arange(pos) / fps if spec_input["fps"] else geo.timestamps[src_idx[:pos]]
    return Prepared(frames=out[:pos], times=np.asarray(times, np.float64), source_index=src_idx[:pos],
                    box=box, crop_method=geo.crop_method, fps=fps,
                    source={"n_frames": int(rec.n_frames), "fps": float(rec.fps), "height": int(rec.height),
                            "width": int(rec.width)})  # fmt: skip


def reader_of(path: Path):
    """The ingest reader of ``path`` (by extension, or DICOM by its magic), or None."""
    from usssl.io.registry import reader_for  # the readers import their decoders: only when reading

    found = reader_for(path) if path.is_file() else None
    return None if found is None else found[1]


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

    from usssl.data.clips import anchored_clip_indices

    n, spec = len(frames), model.spec
    plane_idx = anchored_clip_indices(n, spec["models"]["planes"]["clip_frames"], spec["input"]["clip_anchor"])
    probs = np.zeros((n, len(model.class_names)), np.float32)
    out: dict = {"probs": probs}
    if model.has_saliency:
        sal_idx = anchored_clip_indices(n, spec["models"]["saliency"]["clip_frames"],
                                        spec["input"]["clip_anchor"])
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
                      if p.is_file() and not p.name.startswith(".") and reader_of(p) is not None]  # fmt: skip
        else:
            files.append(item)  # a missing or unsupported file is reported when it is reached
    return files


def output_names(files: list[Path], keep_names: bool) -> list[str]:
    """``input-001``, … by position; with ``keep_names`` the file stem (made unique with -2, -3 …)."""
    if not keep_names:
        width = max(3, len(str(len(files))))
        return [f"input-{k:0{width}d}" for k in range(1, len(files) + 1)]
    from usssl.io.registry import recording_stem

    names, seen = [], {}
    for path in files:
        stem = recording_stem(path) or "input"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def _cams(folder: Path, model_dir, model: ExportedModel, prep: Prepared, frames: list[int], batch_size: int) -> dict:
    from usssl.data.clips import anchored_clip_indices
    from usssl.downstream.predict_cam import write_cams

    spec = model.spec
    index = anchored_clip_indices(len(prep.frames), spec["models"]["planes"]["clip_frames"], spec["input"]["clip_anchor"])
    return write_cams(folder, model_dir, model.class_names, prep, index, frames, batch_size)


def _scrub(message: str, path: Path, name: str) -> str:
    """``message`` with every form of ``path`` (which may name the patient) replaced by ``name``."""
    for form in sorted({str(path.resolve()), str(path), path.name, path.stem}, key=len, reverse=True):
        if len(form) >= 3:
            message = message.replace(form, name)
    return message


def predict_files(model_dir: str | Path, inputs: list[str | Path], out_dir: str | Path, *, every: int = 10,
                  batch_size: int = 32, keep_names: bool = False, progress: bool = False,
                  report: str | Path | None = None, cam: bool = False) -> PredictSummary:  # fmt: skip
    """Run an export on every input and write its outputs (``usssl predict``; module docstring).

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
        cam: also write the classifier's Grad-CAM of every ``every``-th frame (``cam.csv``,
            ``cam/*.png``: ``usssl.downstream.predict_cam``).

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
    with progress_bar("predict", len(files), progress, transient=True) as bar:
        for position, (path, name) in enumerate(zip(files, names), start=1):
            t0 = time.time()
            tmp = out / f".tmp-{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                bar.reset(f"{name}: reading")
                prep = prepare_frames(path, model.spec["input"])
                keep = set(range(0, len(prep.frames), every)) if every else set()
                bar.reset(f"{name}: predicting", len(prep.frames))
                result = run_models(model, prep.frames, batch_size, keep, on_batch=bar.advance)
                tmp.mkdir()
                summary = write_outputs(tmp, model, prep, result, every)
                if cam:
                    summary["cam"] = _cams(tmp, model_dir, model, prep, sorted(keep), batch_size)
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
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["input", "name", "status", "reason"])
                writer.writeheader()
                writer.writerows({"input": str(p), **{k: r[k] for k in ("name", "status", "reason")}}
                                 for p, r in zip(files, rows))  # fmt: skip

        replace_atomic(report, write, mode=0o600)  # it names the inputs
    return summary
