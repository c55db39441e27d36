"""What ``usssl predict`` writes per input: planes.csv, saliency.csv, saliency PNGs and the summary.

    >>> summary = write_outputs(folder, model, prepared, result, every=10)
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from usssl.downstream.export import ExportedModel
    from usssl.downstream.predict import Prepared

OVERLAY_LONG_SIDE = 512  # pixels of the longer side of a saliency PNG (at most the crop's own)


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
