"""Export a fine-tuned plane classifier (and a saliency model) for use without training code.

An export folder holds::

    model.pt2            the plane classifier, ``torch.export`` program: video (B, 1, T, H, W) in
                         [0, 1] -> logits (B, n_classes); B is dynamic
    saliency.pt2         optional: video (B, 1, T', H, W) in [0, 1] -> map (B, h, w) summing to 1
    preprocessing.json   how a recording becomes the model's input, class names, output shapes,
                         versions, training provenance and the research-use disclaimer

``torch.export`` is used because TorchScript is deprecated in torch 2.14; the program is traced
in eval mode (batch norm uses its running statistics) with the batch dimension symbolic
(``torch.export.Dim``), checked against the eager model on the example input, then saved with
``torch.export.save``. :func:`load_exported` needs only torch, numpy and this module.

    >>> spec = PreprocessingSpec(class_names=cache.classes, size=(64, 64), fps=15.0)
    >>> export_model(classifier, "runs/demo/export", spec, saliency=saliency_model)
    >>> model = load_exported("runs/demo/export")
    >>> probs = model.planes(torch.rand(8, 1, 1, 64, 64))   # (8, n_classes), rows sum to 1
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from usssl.engine.files import replace_atomic, write_text_atomic
from usssl.errors import DataError

FORMAT = "usssl-export"
FORMAT_VERSION = 1
MODEL_FILE, SALIENCY_FILE, SPEC_FILE = "model.pt2", "saliency.pt2", "preprocessing.json"
DISCLAIMER = ("Research use only, not for clinical decisions: this model has not been validated "
              "for diagnosis or patient care.")  # fmt: skip
CROP_DESCRIPTION = {
    "auto": ("DICOM: the largest 2-D Sequence of Ultrasound Regions item when the file has one; "
             "otherwise the bounding box of the largest region whose pixels vary over time "
             "(usssl.privacy.region.imaging_mask, on up to 60 frames spread over the recording), "
             "pixels outside that region set to 0; constant overlays inside it (calipers, text) "
             "set to 0 (usssl.privacy.region.static_mask)"),
    "none": "the full frame; constant overlays set to 0 (usssl.privacy.region.static_mask)",
    "box": "the fixed box [x0, y0, x1, y1] (source pixels, end-exclusive); constant overlays set to 0",
}  # fmt: skip


@dataclass
class PreprocessingSpec:
    """What the exported models expect, and where they came from.

    Args:
        class_names: (n_classes,) names, in the order of the logits.
        size: model input (height, width) in pixels, as cached by ingest.
        fps: frame rate the recording is resampled to (nearest source frame to each time k / fps);
            None keeps every source frame.
        clip_frames: T, frames per input clip of the plane classifier (1: single frames).
        clip_anchor: "end": the clip of frame k is frames k-T+1 … k; "centre": k-T//2 … k+(T-1)//2.
            Indices before the first / after the last frame repeat that frame.
        crop: ingest's crop: "auto", "none" or a box (x0, y0, x1, y1) in source pixels.
        saliency_clip_frames: T' of the saliency model (None: ``clip_frames``).
        pipeline, init, protocol, label_fraction: training provenance (pipeline name, the
            encoder's initialisation, the protocol "linear"/"finetune", the fraction of labels).
        provenance: any further facts worth keeping (e.g. seed, number of training frames).
    """

    class_names: list[str]
    size: tuple[int, int]
    fps: float | None
    clip_frames: int = 1
    clip_anchor: Literal["end", "centre"] = "end"
    crop: str | tuple[int, int, int, int] = "auto"
    saliency_clip_frames: int | None = None
    pipeline: str | None = None
    init: str | None = None
    protocol: str | None = None
    label_fraction: float | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError("class_names must not be empty")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (height, width) >= 1, got {self.size}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive or None, got {self.fps}")
        if self.clip_frames < 1 or (self.saliency_clip_frames or 1) < 1:
            raise ValueError("clip_frames and saliency_clip_frames must be >= 1")
        if self.clip_anchor not in ("end", "centre"):
            raise ValueError(f"clip_anchor must be 'end' or 'centre', got {self.clip_anchor!r}")
        if not (self.crop in ("auto", "none") or (not isinstance(self.crop, str) and len(self.crop) == 4)):
            raise ValueError(f"crop must be 'auto', 'none' or [x0, y0, x1, y1], got {self.crop!r}")

    @classmethod
    def from_training(cls, cache_settings: dict, entry: dict, pipeline: str | None = None,
                      clip_frames: int = 1) -> PreprocessingSpec:  # fmt: skip
        """The spec of a model fine-tuned by the pipeline.

        Args:
            cache_settings: ``Cache.settings`` (cache.json: size, fps, crop, classes).
            entry: the model's row of ``finetune/manifest.json`` (init, protocol, label_fraction, …).
            pipeline: the pipeline name.
            clip_frames: frames per training clip (1 for ``FrameDataset``).
        """
        crop = cache_settings.get("crop", "auto")
        return cls(class_names=list(cache_settings["classes"]), size=tuple(cache_settings["size"]),
                   fps=cache_settings.get("fps"), clip_frames=clip_frames,
                   crop=crop if isinstance(crop, str) else tuple(crop), pipeline=pipeline,
                   init=entry.get("init"), protocol=entry.get("protocol"),
                   label_fraction=entry.get("label_fraction"),
                   provenance={k: entry[k] for k in ("tag", "n_train", "source") if k in entry})  # fmt: skip

    def to_json(self, planes_shape: list, saliency_shape: list | None) -> dict:
        """The preprocessing.json mapping (schema: docs/predict.md)."""
        h, w = (int(v) for v in self.size)
        crop = self.crop if isinstance(self.crop, str) else [int(v) for v in self.crop]
        models = {"planes": {"file": MODEL_FILE, "input": ["B", 1, self.clip_frames, h, w],
                             "output": planes_shape, "output_kind": "logits; softmax over dim 1 gives "
                             "class probabilities", "clip_frames": self.clip_frames}}  # fmt: skip
        if saliency_shape is not None:
            t_sal = self.saliency_clip_frames or self.clip_frames
            models["saliency"] = {"file": SALIENCY_FILE, "input": ["B", 1, t_sal, h, w],
                                  "output": saliency_shape, "output_kind": "saliency map, each "
                                  "(h, w) map sums to 1", "clip_frames": t_sal}  # fmt: skip
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "disclaimer": DISCLAIMER,
            "task": "standard_plane",
            "class_names": list(self.class_names),
            "input": {
                "size": [h, w],
                "channels": 1,
                "grayscale": "colour frames become BT.601 luma (OpenCV RGB2GRAY) after cropping and resizing",
                "intensity": "uint8 grey levels / 255, giving float32 in [0, 1]; no other normalisation",
                "fps": self.fps,
                "resample": "nearest source frame to each output time k / fps (k = 0, 1, …); "
                            "fps null keeps every source frame",
                "clip_frames": self.clip_frames,
                "clip_anchor": self.clip_anchor,
                "clip_edges": "indices outside the recording repeat its first / last frame",
                "crop": crop,
                "crop_method": CROP_DESCRIPTION["box" if not isinstance(self.crop, str) else self.crop],
                "resize": "OpenCV INTER_AREA from the crop to (height, width)",
                "reference_implementation": "usssl.downstream.predict.prepare_frames (same functions as usssl ingest)",
            },
            "models": models,
            "provenance": {"pipeline": self.pipeline, "init": self.init, "protocol": self.protocol,
                           "label_fraction": self.label_fraction, **self.provenance},
            "usssl_version": _version("usssl"),
            "torch_version": torch.__version__,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def export_model(classifier: nn.Module, out_dir: str | Path, spec: PreprocessingSpec,
                 saliency: nn.Module | None = None, atol: float = 1e-4) -> Path:  # fmt: skip
    """Write ``model.pt2`` (+ ``saliency.pt2``) and ``preprocessing.json`` to ``out_dir``.

    Args:
        classifier: ``video (B, 1, T, H, W) in [0, 1] -> logits (B, n_classes)``, e.g. a
            ``PlaneClassifier``; n_classes must equal ``len(spec.class_names)``.
        out_dir: the export folder (created; files of the same names are replaced).
        spec: the preprocessing and provenance.
        saliency: optional ``video (B, 1, T', H, W) in [0, 1] -> (B, h, w)`` map summing to 1.
        atol: largest difference allowed between the exported and the eager output.

    Returns:
        ``out_dir``.
    """
    out = Path(out_dir)
    h, w = (int(v) for v in spec.size)
    t_sal = spec.saliency_clip_frames or spec.clip_frames
    with _eval_mode(classifier, saliency):
        plane_example = _example((2, 1, spec.clip_frames, h, w))
        logits_shape = list(classifier(plane_example).shape)  # checked before the (slower) export
        if len(logits_shape) != 2 or logits_shape[1] != len(spec.class_names):
            raise ValueError(f"the classifier gives logits of shape {tuple(logits_shape)} (B, n_classes) "
                             f"but the spec names {len(spec.class_names)} classes")  # fmt: skip
        if saliency is not None:
            saliency_example = _example((2, 1, t_sal, h, w))
            map_shape = list(saliency(saliency_example).shape)
            if len(map_shape) != 3:
                raise ValueError(f"the saliency model must return (B, h, w), got shape {tuple(map_shape)}")
        out.mkdir(parents=True, exist_ok=True)
        _export_one(classifier, plane_example, out / MODEL_FILE, atol)
        saliency_shape = None
        if saliency is not None:
            _export_one(saliency, saliency_example, out / SALIENCY_FILE, atol)
            saliency_shape = ["B", *map_shape[1:]]
        elif (out / SALIENCY_FILE).exists():
            (out / SALIENCY_FILE).unlink()  # a stale map model from an earlier export must not be picked up
    write_text_atomic(out / SPEC_FILE, json.dumps(spec.to_json(["B", logits_shape[1]], saliency_shape), indent=2))
    return out


def _example(shape: tuple) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


def example_input(spec: PreprocessingSpec, model: Literal["planes", "saliency"] = "planes") -> torch.Tensor:
    """The fixed input the export checks ``model`` with: (2, 1, T, H, W) in [0, 1] (seed 0; T: the
    model's clip frames). Two clips, so that a tracer sees the batch dimension as free."""
    t = spec.clip_frames if model == "planes" else (spec.saliency_clip_frames or spec.clip_frames)
    return _example((2, 1, t, *(int(v) for v in spec.size)))


@contextmanager
def _eval_mode(*modules: nn.Module | None):
    """Eval mode and no autograd inside; each module's own train/eval mode restored after."""
    modes = [(m, m.training) for m in modules if m is not None]
    try:
        for m, _ in modes:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.train(training)


def _export_one(module: nn.Module, example: torch.Tensor, path: Path, atol: float) -> None:
    """Export ``module`` (in eval mode) with a dynamic batch; check it against the eager output."""
    batch = torch.export.Dim("batch", min=1)
    expected = module(example)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=False)
    got = program.module()(example)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=0):
        raise RuntimeError(f"{path.name}: the exported program differs from the eager model "
                           f"(max |diff| {(got - expected).abs().max().item():.3g})")  # fmt: skip
    replace_atomic(path, lambda tmp: torch.export.save(program, tmp))  # the temporary name keeps .pt2


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


class ExportedModel:
    """A loaded export folder: ``planes`` (and ``saliency``) on prepared clips, plus its spec.

    Attributes:
        spec: the preprocessing.json mapping.
        class_names: (n_classes,) names.
        has_saliency: whether the folder holds a saliency model.
    """

    def __init__(self, spec: dict, planes: nn.Module, saliency: nn.Module | None) -> None:
        self.spec = spec
        self.class_names: list[str] = list(spec["class_names"])
        self._planes, self._saliency = planes, saliency

    @property
    def has_saliency(self) -> bool:
        return self._saliency is not None

    @property
    def size(self) -> tuple[int, int]:
        """Model input (height, width)."""
        return tuple(self.spec["input"]["size"])

    @torch.no_grad()
    def planes(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 1, T, H, W) in [0, 1] -> class probabilities (B, n_classes), rows summing to 1."""
        return torch.softmax(self._planes(video.float()), dim=1)

    @torch.no_grad()
    def saliency(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 1, T', H, W) in [0, 1] -> saliency maps (B, h, w), each summing to 1."""
        if self._saliency is None:
            raise DataError("this export has no saliency model (no saliency.pt2)")
        return self._saliency(video.float())


def load_exported(model_dir: str | Path) -> ExportedModel:
    """Load an export folder written by :func:`export_model`.

    Raises:
        DataError: the folder, its preprocessing.json or model.pt2 is missing or of another format.
    """
    root = Path(model_dir)
    spec_path = root / SPEC_FILE
    if not spec_path.is_file():
        raise DataError(f"{root}: no {SPEC_FILE}; give the folder written by usssl's model export")
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{spec_path}: not readable JSON ({exc})") from None
    if spec.get("format") != FORMAT or int(spec.get("format_version", 0)) > FORMAT_VERSION:
        raise DataError(f"{spec_path}: format {spec.get('format')!r} version {spec.get('format_version')} "
                        f"is not {FORMAT!r} <= {FORMAT_VERSION}; update usssl")  # fmt: skip
    modules = {}
    for key, info in spec["models"].items():
        path = root / info["file"]
        if not path.is_file():
            raise DataError(f"{root}: {info['file']} is missing; export the model again")
        try:
            modules[key] = torch.export.load(path).module()
        except Exception as exc:  # a truncated or foreign file: say which one
            raise DataError(f"{path}: not a loadable torch.export program ({type(exc).__name__}: {exc})") from None
    return ExportedModel(spec, modules["planes"], modules.get("saliency"))

