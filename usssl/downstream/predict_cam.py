"""Grad-CAM of an exported plane classifier (``usssl predict --cam``): where the fine-tuned model
looked for the class it predicts — a supervised reference for ContraCAM's label-free maps.

Hooks cannot attach to a ``torch.export`` program, and the export holds no eager model. The program's
graph is plain ATen, so it is run node by node (``torch.fx.Interpreter``) and the value of its last
feature map is kept: the last node whose output is a 4-D (N, C, h, w) or 5-D (N, C, t, h, w) tensor
with more than one spatial cell, i.e. the encoder's output before its global pooling
(:func:`feature_node`). Autograd then gives the gradient of each clip's predicted-class logit with
respect to that map (eval mode: no clip's logit depends on another clip of the batch, so summing
the scores gives each clip its own gradient):

    w_c = spatial mean of ∂logit/∂A_c,  CAM = ReLU(Σ_c w_c A_c)   (plain Grad-CAM: no clamp)

averaged over time (5-D) or over a clip's frames (a 2-D encoder sees B·T frames), upsampled
bilinearly to the model input and min–max normalised per frame (``usssl.downstream.contracam``).

    >>> cams = exported_gradcam("runs/demo/export", clips)   # (B, H, W) in [0, 1], (B,) classes
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from usssl.errors import DataError


def _spatial(val) -> int | None:
    """Number of spatial cells (h · w) of a 4-D / 5-D tensor's meta value, None for anything else."""
    shape = getattr(val, "shape", None)
    if shape is None or len(shape) not in (4, 5):
        return None
    try:
        return int(shape[-1]) * int(shape[-2])
    except TypeError:  # a symbolic spatial size: not a fixed feature map
        return None


def feature_node(graph_module: torch.fx.GraphModule) -> str:
    """Name of the graph's last feature map (module docstring)."""
    best = None
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and (_spatial(node.meta.get("val")) or 0) > 1:
            best = node.name
    if best is None:
        raise DataError("the exported classifier has no 4-D or 5-D feature map to explain (Grad-CAM)")
    return best


class _Capture(torch.fx.Interpreter):
    """Runs the graph and keeps the output of the node named ``keep``."""

    def __init__(self, graph_module: torch.fx.GraphModule, keep: str) -> None:
        super().__init__(graph_module)
        self.keep, self.value = keep, None

    def run_node(self, n):
        out = super().run_node(n)
        if n.name == self.keep:
            self.value = out
        return out


def load_program(model_dir: str | Path) -> torch.fx.GraphModule:
    """The plane classifier of an export folder as a graph module (``model.pt2``)."""
    from usssl.downstream.export import MODEL_FILE

    path = Path(model_dir) / MODEL_FILE
    try:
        return torch.export.load(path).module()
    except Exception as exc:
        raise DataError(f"{path}: not a loadable torch.export program ({type(exc).__name__}: {exc})") from None


def gradcam_program(program: torch.fx.GraphModule, video: torch.Tensor,
                    layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Grad-CAM of ``program`` (video (B, 1, T, H, W) in [0, 1] -> logits (B, C)).

    Returns:
        (maps (B, H, W) float in [0, 1], predicted classes (B,) long).
    """
    layer = layer or feature_node(program)
    run = _Capture(program, layer)
    b, h, w = video.shape[0], video.shape[-2], video.shape[-1]
    with torch.enable_grad():
        x = video.detach().float().requires_grad_(True)  # the graph is tracked whatever the weights' flags
        out = run.run(x)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        classes = logits.argmax(dim=1)
        score = logits.gather(1, classes[:, None]).sum()
        acti = run.value
        grad = torch.autograd.grad(score, acti)[0]
    acti, grad = acti.detach(), grad.detach()
    if acti.ndim == 5:  # (N, C, t, h, w): weights over time and space, map averaged over time
        weights = grad.mean(dim=(2, 3, 4), keepdim=True)
        cam = F.relu((weights * acti).sum(dim=1)).mean(dim=1, keepdim=True)  # (N, 1, h, w)
    else:
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * acti).sum(dim=1, keepdim=True))  # (N, 1, h', w')
    if cam.shape[0] != b:  # a 2-D encoder saw the B·T frames of the clips: average each clip's
        cam = cam.reshape(b, cam.shape[0] // b, *cam.shape[1:]).mean(dim=1)
    from usssl.downstream.contracam import normalise_maps

    cam = normalise_maps(F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False))
    return cam[:, 0], classes


def write_cams(folder: Path, model_dir: str | Path, class_names: list[str], prep, clip_index: np.ndarray,
               frames: list[int], batch_size: int = 32) -> dict:  # fmt: skip
    """Write ``cam.csv`` (frame, time_s, class, peak_x, peak_y in source pixels, png) and
    ``cam/frame-NNNNNN.png`` (the frame | its Grad-CAM) for ``frames`` of a prepared recording.

    ``clip_index``: (P, T) the clip of each frame (as ``usssl.downstream.predict.run_models``).
    Returns the summary's ``cam`` entry.
    """
    import cv2

    from usssl.downstream.localise import overlay
    from usssl.downstream.predict_outputs import map_to_source

    program = load_program(model_dir)
    layer = feature_node(program)
    (folder / "cam").mkdir()
    rows = []
    for lo in range(0, len(frames), batch_size):
        chunk = frames[lo : lo + batch_size]
        video = torch.from_numpy(prep.frames[clip_index[chunk]]).float().div_(255.0).unsqueeze(1)
        maps, classes = gradcam_program(program, video, layer)
        for k, cam, cls in zip(chunk, maps.numpy(), classes.tolist()):
            png = f"cam/frame-{k:06d}.png"
            cv2.imwrite(str(folder / png), overlay(prep.frames[k], cam, []))
            y, x = np.unravel_index(int(cam.argmax()), cam.shape)
            sx, sy = map_to_source(np.array([x, y]), cam.shape, prep.box)
            rows.append([k, f"{prep.times[k]:.4f}", class_names[cls], f"{sx:.1f}", f"{sy:.1f}", png])
    with open(folder / "cam.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "time_s", "class", "peak_x", "peak_y", "png"])
        writer.writerows(rows)
    return {"method": "Grad-CAM of the predicted class (plain weights)", "layer": layer, "n_png": len(rows)}


__all__ = ["feature_node", "load_program", "gradcam_program", "write_cams"]
