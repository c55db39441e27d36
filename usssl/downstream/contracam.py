"""ContraCAM: class-activation maps of a contrastive encoder, without labels (Mo et al., NeurIPS 2021).

Mo, Kang, Sohn, Shin. *Object-aware Contrastive Learning for Debiased Scene Representation.*
NeurIPS 2021, Sec. 3.1 (METHODS.md §6; behaviour of the official ``utils/gradcam.py``):

- **score** of frame i: InfoNCE with temperature 1 on L2-normalised projections,
  s_i = q_i·k_i − log Σ_{j≠i} Σ_{Q} exp(q_i·Q_j), with k the projections of the original frames
  (detached) and Q every queue of detached projections (the originals, then each refinement's
  masked frames). Per frame: the official code sums the numerator over the batch; here each frame
  is scored on its own, so no frame's map depends on another's positive.
- **channel weights** w_c = spatial mean of ∂s_i/∂A_c (A the last feature map), **clamped at 0**;
  **CAM** = ReLU(Σ_c w_c A_c), upsampled (bilinear) to the frame, min–max normalised per frame.
- **iterative refinement** (:func:`contracam`, ``iterations`` T: 10 for boxes, 1 for masks): after
  each iteration the found region is filled with the batch mean intensity, the CAM recomputed, and
  the mask is the running element-wise maximum (it never shrinks).
- **ultrasound**: ``region`` (the imaging region, bool (B or 1, H, W)) restricts the maps (zero
  outside, normalised inside) and the fill's mean, otherwise the CAM finds the fan edge.

The hooks are MONAI's (``monai.visualize.ModelWithHooks``, imported lazily). MONAI's ``GradCAM``
scores ``logits[:, class_idx]``: with a (B,) tensor of per-frame classes that is a (B, B) block and
every frame's gradient mixes every predicted class of the batch; :func:`per_frame_hooks` scores
``logits[i, class_idx[i]]`` instead (used here and by :func:`gradcam` for supervised maps).

    >>> scorer = ContrastiveScorer(encoder.image_encoder, projector)
    >>> masks = contracam(scorer, frames, region=fan, iterations=10)      # (B, 1, H, W) in [0, 1]
    >>> boxes = [mask_boxes(m[0].numpy()) for m in masks]                 # [(x0, y0, x1, y1), ...]
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FEATURE_LAYERS = ("features", "stages")  # the last-feature-map module of the usssl 2-D encoders


def feature_layer(image_encoder: nn.Module) -> str:
    """Name of ``image_encoder``'s module whose output is its last feature map."""
    names = dict(image_encoder.named_children())
    for name in FEATURE_LAYERS:
        if name in names:
            return name
    raise ValueError(f"{type(image_encoder).__name__}: no last-feature-map module ({' or '.join(FEATURE_LAYERS)}); "
                     "pass feature_layer= explicitly")


@lru_cache(maxsize=1)
def per_frame_hooks():
    """``monai.visualize.ModelWithHooks`` scoring each frame by its own class (module docstring)."""
    from monai.visualize import ModelWithHooks

    class PerFrameHooks(ModelWithHooks):
        def class_score(self, logits: torch.Tensor, class_idx) -> torch.Tensor:
            idx = torch.as_tensor(class_idx, device=logits.device).reshape(-1)
            idx = idx.expand(logits.shape[0]) if idx.numel() == 1 else idx
            return logits.gather(1, idx[:, None].long())[:, 0]  # (B,): frame i's own class

    return PerFrameHooks


@contextmanager
def hooked(model: nn.Module, layer: str):
    """MONAI hooks (per-frame scoring) on ``model``'s module ``layer``; removed again on exit, and the
    parameters' gradients cleared, so the model can be reused or trained afterwards."""
    target = dict(model.named_modules()).get(layer)
    if target is None:
        raise ValueError(f"{type(model).__name__} has no module {layer!r}")
    before = (set(target._forward_hooks), set(target._backward_hooks))
    try:
        yield per_frame_hooks()(model, layer, register_forward=True, register_backward=True)
    finally:
        for key in set(target._forward_hooks) - before[0]:
            del target._forward_hooks[key]
        for key in set(target._backward_hooks) - before[1]:
            del target._backward_hooks[key]
        model.zero_grad(set_to_none=True)


def reduce_last_stride(image_encoder: nn.Module, size: tuple[int, int] = (64, 64)) -> nn.Module:
    """A copy of ``image_encoder`` whose last downsampling convolutions have stride 1 (2× finer maps).

    The official code sets the strides of ``layer4[0]`` to 1; here the last stage is found by a probe
    forward pass: the strided ``Conv2d`` modules that see the smallest input are the last stage's.
    """
    net = copy.deepcopy(image_encoder).eval()
    seen: dict[nn.Conv2d, int] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.__setitem__(mod, inp[0].shape[-1] * inp[0].shape[-2]))
             for m in net.modules() if isinstance(m, nn.Conv2d) and max(m.stride) > 1]
    with torch.no_grad():
        in_ch = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels
        net(torch.zeros(1, in_ch, *size))
    for h in hooks:
        h.remove()
    if seen:
        smallest = min(seen.values())
        for conv, area in seen.items():
            if area == smallest:
                conv.stride = (1, 1)
    return net


class ContrastiveScorer(nn.Module):
    """``forward(x) -> (B, 1)``: each frame's ContraCAM score against the stored key and queues.

    Args:
        image_encoder: ``(B, C, H, W) -> (B, D)`` with a last-feature-map module (``feature_layer``).
        projector: ``(B, D) -> (B, P)``; None: the encoder's output is scored (e.g. a random encoder).
        normalise_input: apply the methods' input scaling (x − 0.5) / 0.25 to frames in [0, 1].
    """

    def __init__(self, image_encoder: nn.Module, projector: nn.Module | None = None,
                 normalise_input: bool = True) -> None:
        super().__init__()
        self.encoder, self.projector = image_encoder, projector if projector is not None else nn.Identity()
        self.normalise_input = normalise_input
        self.key: torch.Tensor | None = None
        self.queues: list[torch.Tensor] = []
        self.last_projection: torch.Tensor | None = None

    def reset(self) -> None:
        self.key, self.queues = None, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise_input:
            x = (x - 0.5) / 0.25
        q = F.normalize(self.projector(self.encoder(x)), dim=-1)  # (B, P)
        self.last_projection = q.detach()
        key = q.detach() if self.key is None else self.key
        queues = [*self.queues, q.detach()] if self.key is not None else [key]  # + this pass's frames
        b = q.shape[0]
        if b < 2:
            raise ValueError("ContraCAM scores a frame against the other frames of its batch: use >= 2 frames")
        eye = torch.eye(b, dtype=torch.bool, device=q.device)
        neg = torch.cat([(q @ queue.T).masked_fill(eye, float("-inf")) for queue in queues], dim=1)
        return ((q * key).sum(-1) - torch.logsumexp(neg, dim=1))[:, None]  # τ = 1


def weighted_cam(acti: torch.Tensor, grad: torch.Tensor, size: tuple[int, int], clamp: bool = True,
                 region: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM from a feature map and its gradient, upsampled and min–max normalised per frame.

    Args:
        acti, grad: (B, C, h, w) last feature map and ∂score/∂map.
        size: (H, W) of the frames.
        clamp: keep positive channel weights only (ContraCAM); False: plain Grad-CAM weights.
        region: optional bool (B or 1, H, W) imaging region: zero outside, normalised inside.

    Returns:
        (B, 1, H, W) in [0, 1] (an all-zero map stays zero).
    """
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    if clamp:
        weights = weights.clamp_min(0)
    cam = F.relu((weights * acti).sum(dim=1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return normalise_maps(cam, region)


def normalise_maps(cam: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, H, W) → min–max normalised per frame, inside ``region`` (zero outside) when given."""
    inside = torch.ones_like(cam, dtype=torch.bool) if region is None else region_like(region, cam)
    big = torch.finfo(cam.dtype).max
    lo = cam.masked_fill(~inside, big).amin(dim=(1, 2, 3), keepdim=True)
    hi = cam.masked_fill(~inside, -big).amax(dim=(1, 2, 3), keepdim=True)
    out = ((cam - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    return out * inside


def region_like(region: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """bool (B or 1, H, W) or (B, 1, H, W) region → bool (B, 1, H, W) broadcast to ``like``."""
    region = region.to(like.device).bool()
    if region.dim() == 3:
        region = region[:, None]
    return region.expand_as(like)


def contracam(scorer: ContrastiveScorer, frames: torch.Tensor, region: torch.Tensor | None = None,
              iterations: int = 1, clamp: bool = True, layer: str | None = None,
              every: bool = False) -> torch.Tensor | list[torch.Tensor]:
    """ContraCAM masks of a batch of frames, with iterative refinement (module docstring).

    Args:
        scorer: the encoder and projector to explain.
        frames: (B, C, H, W) in [0, 1], B >= 2 (the other frames are the negatives).
        region: optional imaging region, bool (B or 1, H, W).
        iterations: T; each fills the found region with the batch mean and adds a CAM (running max).
        clamp: clamp the channel weights at 0 (the paper); False for the unclamped ablation.
        layer: the hooked module's name inside ``scorer`` (default ``encoder.<feature_layer>``).
        every: return the running mask after every iteration (a list of T), not only the last.

    Returns:
        (B, 1, H, W) masks in [0, 1] (or the list of them).
    """
    name = layer or f"encoder.{feature_layer(scorer.encoder)}"
    size = tuple(frames.shape[-2:])
    inside = None if region is None else region_like(region, frames[:, :1])
    fill = frames.mean() if inside is None else frames[:, :1][inside].mean()  # the batch mean intensity
    scorer.reset()
    image, mask, masks = frames, None, []
    try:
        with hooked(scorer, name) as hooks:
            for _ in range(max(1, iterations)):
                with torch.enable_grad():
                    _, acti, grad = hooks(image.detach().requires_grad_(True), class_idx=0)
                projection = scorer.last_projection
                if scorer.key is None:
                    scorer.key, scorer.queues = projection, [projection]
                else:
                    scorer.queues.append(projection)
                cam = weighted_cam(acti[0].detach(), grad[0].detach(), size, clamp, inside)
                mask = cam if mask is None else torch.maximum(mask, cam)
                masks.append(mask)
                image = frames * (1 - mask) + fill * mask
    finally:
        scorer.reset()
    return masks if every else mask


def gradcam(classifier: nn.Module, frames: torch.Tensor, layer: str, class_idx: torch.Tensor | None = None,
            region: torch.Tensor | None = None) -> torch.Tensor:
    """Supervised Grad-CAM (MONAI hooks) of ``classifier`` (logits (B, K)), each frame for its own class.

    ``class_idx``: (B,) classes to explain; default each frame's predicted class. Returns (B, 1, H, W)
    in [0, 1] (weights not clamped: Selvaraju et al.'s Grad-CAM).
    """
    with hooked(classifier, layer) as hooks, torch.enable_grad():
        _, acti, grad = hooks(frames.detach().requires_grad_(True), class_idx=class_idx)
    inside = None if region is None else region_like(region, frames[:, :1])
    return weighted_cam(acti[0].detach(), grad[0].detach(), tuple(frames.shape[-2:]), False, inside)


def mask_boxes(mask: np.ndarray, threshold: float = 0.5, min_area: float = 0.01,
               margin: float = 0.2) -> list[tuple[int, int, int, int]]:
    """Boxes of a map (H, W): pixels above ``threshold``·max, 8-connected components whose bounding
    box covers more than ``min_area`` of the frame, each box widened by ``margin`` of its size on
    every side (clipped to the frame). End-exclusive ``(x0, y0, x1, y1)``, largest first."""
    import cv2

    h, w = mask.shape
    peak = float(mask.max())
    if peak <= 0:
        return []
    hard = (mask > threshold * peak).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(hard, connectivity=8)
    boxes = []
    for x, y, bw, bh, _ in stats[1:n]:
        if bw * bh <= min_area * h * w:
            continue
        x0, y0 = max(0, int(np.floor(x - margin * bw))), max(0, int(np.floor(y - margin * bh)))
        x1, y1 = min(w, int(np.ceil(x + bw + margin * bw))), min(h, int(np.ceil(y + bh + margin * bh)))
        boxes.append((x0, y0, x1, y1))
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


__all__ = ["FEATURE_LAYERS", "feature_layer", "per_frame_hooks", "hooked", "reduce_last_stride", "ContrastiveScorer",
           "weighted_cam", "normalise_maps", "region_like", "contracam", "gradcam", "mask_boxes"]
