"""B-mode image formation of the synthetic fetal corpus: fan, probe pose, speckle, attenuation.

A frame is ``255 · (E · S · G)^γ`` inside the sector fan and 0 outside, where E is the
echogenicity map (maternal tissue, amniotic fluid and the warped anatomy template), S is
multiplicative Rayleigh speckle drawn from a per-subject bank (shifted with the probe, not redrawn
per frame, which keeps rendering fast and the texture coherent in time) and G the depth
attenuation × lateral fall-off of a convex probe. A cartoon of ultrasound physics, not a simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from usssl.data.synth.anatomy import CANVAS, UNIT, Template


@dataclass(frozen=True)
class FanGeometry:
    """Sector fan of a convex probe, apex at the top centre (pixel coordinates of the full frame).

    ``bbox`` is (x0, y0, x1, y1), end-exclusive like every usssl box: the imaging region is
    ``frame[y0:y1, x0:x1]`` (the DICOM region's inclusive RegionLocationMaxX1 is ``x1 - 1``).
    """

    height: int
    width: int
    apex: tuple[float, float]
    r_inner: float
    r_outer: float
    half_angle_deg: float
    bbox: tuple[int, int, int, int]

    def polar(self) -> tuple[np.ndarray, np.ndarray]:
        """Radius (H, W) in px from the apex and angle (H, W) in degrees from the vertical."""
        yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        dx, dy = xx - self.apex[0], yy - self.apex[1]
        return np.hypot(dx, dy), np.degrees(np.arctan2(dx, dy))

    def mask(self) -> np.ndarray:
        """bool (H, W), True inside the fan."""
        r, theta = self.polar()
        return (r >= self.r_inner) & (r <= self.r_outer) & (np.abs(theta) <= self.half_angle_deg)

    def as_dict(self) -> dict:
        return {"apex": list(self.apex), "r_inner": self.r_inner, "r_outer": self.r_outer,
                "half_angle_deg": self.half_angle_deg, "bbox": list(self.bbox)}


def fan_geometry(size: tuple[int, int]) -> FanGeometry:
    """The fan used for frames of ``size`` = (height, width); the same for every subject."""
    h, w = size
    apex = (w / 2.0, round(0.06 * h, 3))
    r_outer = round(0.9 * h, 3)
    half = round(min(30.0, math.degrees(math.asin(min(1.0, (w / 2.0 - 2) / r_outer)))), 3)
    geo = FanGeometry(h, w, apex, round(0.1 * h, 3), r_outer, half, (0, 0, 0, 0))
    ys, xs = np.nonzero(geo.mask())
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return FanGeometry(h, w, apex, geo.r_inner, r_outer, half, bbox)


@dataclass
class SubjectLook:
    """Per-subject appearance: speckle bank (K, H+2P, W+2P), tissue map (H+2P, W+2P), gain (H, W).

    P = ``margin`` px on each side lets the speckle and tissue shift with the probe.
    """

    speckle: np.ndarray
    tissue: np.ndarray
    gain: np.ndarray
    gamma: float
    margin: int


def make_look(fan: FanGeometry, rng: np.random.Generator, n_speckle: int = 4) -> SubjectLook:
    """Draw a subject's speckle bank, maternal tissue texture and depth-attenuation map."""
    h, w = fan.height, fan.width
    p = max(8, h // 4)
    shape = (n_speckle, h + 2 * p, w + 2 * p)
    iq = rng.standard_normal((2, *shape)).astype(np.float32)
    speckle = np.empty(shape, np.float32)
    for k in range(n_speckle):  # lateral correlation longer than axial, like a real PSF
        i, q = (cv2.GaussianBlur(c, (0, 0), sigmaX=1.5, sigmaY=0.8) for c in iq[:, k])
        amp = np.hypot(i, q)
        speckle[k] = 0.35 + 0.65 * amp / amp.mean()  # partly developed speckle, mean 1
    s = h / 160.0
    tex = cv2.GaussianBlur(rng.standard_normal(shape[1:]).astype(np.float32), (0, 0), 6 * s)
    tissue = rng.uniform(0.3, 0.45) * (1 + 0.25 * tex / (tex.std() + 1e-6))
    rows = np.arange(shape[1], dtype=np.float32)[:, None]
    for _ in range(rng.integers(2, 4)):  # maternal abdominal wall layers
        y0 = p + rng.uniform(0.12, 0.3) * h
        tissue = tissue + rng.uniform(0.2, 0.5) * np.exp(-0.5 * ((rows - y0) / (1.5 * s)) ** 2)
    r, theta = fan.polar()
    depth = np.clip((r - fan.r_inner) / (fan.r_outer - fan.r_inner), 0, 1)
    gain = np.exp(-rng.uniform(0.6, 1.4) * depth) * (1 - 0.3 * (theta / fan.half_angle_deg) ** 4)
    gain = (gain * fan.mask() * rng.uniform(0.9, 1.25)).astype(np.float32)
    return SubjectLook(speckle, tissue.astype(np.float32), gain, float(rng.uniform(0.6, 0.8)), p)


@dataclass
class Pose:
    """Probe pose of one segment: anatomy centre (px), scale, rotation, mirror, slow motion."""

    cx: float
    cy: float
    scale: float
    angle: float
    flip: float
    drift: np.ndarray  # (4,) per second: dx px, dy px, dangle deg, dlog-scale
    jitter: np.ndarray  # (4, 3) amplitude, frequency Hz, phase for x, y, angle, log-scale

    @classmethod
    def draw(cls, template: Template, fan: FanGeometry, size_scale: float,
             rng: np.random.Generator) -> "Pose":
        h, w = fan.height, fan.width
        amp = np.array([0.015 * h, 0.015 * h, 3.0, 0.03]) * rng.uniform(0.5, 1.5, 4)
        jitter = np.stack([amp, rng.uniform(0.1, 0.5, 4), rng.uniform(0, 2 * np.pi, 4)], axis=1)
        drift = rng.uniform(-1, 1, 4) * np.array([0.01 * h, 0.01 * h, 1.5, 0.015])
        radius = 0.23 * h * size_scale * rng.uniform(0.85, 1.1)
        return cls(w * rng.uniform(0.44, 0.56), h * rng.uniform(0.5, 0.62), radius / UNIT,
                   rng.uniform(-1, 1) * template.rotation_deg, float(rng.choice([-1.0, 1.0])),
                   drift, jitter)

    def params(self, t: np.ndarray) -> np.ndarray:
        """(n, 4) x, y, angle, scale at times ``t`` (n,) seconds since the segment start."""
        a, f, ph = self.jitter.T
        wobble = a * np.sin(2 * np.pi * f * t[:, None] + ph)
        x, y, ang, logs = (np.array([self.cx, self.cy, self.angle, 0.0]) + self.drift * t[:, None]
                           + wobble).T
        return np.stack([x, y, ang, self.scale * np.exp(logs)], axis=1)

    def affines(self, t: np.ndarray) -> np.ndarray:
        """(n, 2, 3) canvas → frame affine maps at times ``t`` (n,)."""
        x, y, ang, s = self.params(t).T
        c, sn = np.cos(np.radians(ang)) * s, np.sin(np.radians(ang)) * s
        a = np.stack([np.stack([c * self.flip, -sn], 1), np.stack([sn * self.flip, c], 1)], 1)
        centre = np.full((len(t), 2), CANVAS / 2.0)
        offset = np.stack([x, y], 1) - np.einsum("nij,nj->ni", a, centre)
        return np.concatenate([a, offset[:, :, None]], axis=2)


@dataclass
class Segment:
    """Frames [start, stop) showing one plane; the first ``n_transition`` fade in from the last."""

    plane: int
    start: int
    stop: int
    n_transition: int
    template: Template
    pose: Pose
    speckle_index: int
    offset: tuple[int, int]


def render_segments(segments: list[Segment], fan: FanGeometry, look: SubjectLook, fps: int,
                    n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a scan.

    Returns:
        frames: uint8 (T, H, W) B-mode frames, 0 outside the fan.
        masks: uint8 (T, H, W) anatomy mask of labelled plane frames (0 on transition frames,
            background segments and outside the fan).
        affines: float64 (T, 2, 3) canvas → frame map of the segment each frame belongs to.
    """
    h, w, p = fan.height, fan.width, look.margin
    frames = np.zeros((n_frames, h, w), np.uint8)
    masks = np.zeros((n_frames, h, w), np.uint8)
    affines = np.zeros((n_frames, 2, 3))
    fan_mask = fan.mask().astype(np.uint8)
    lut = np.rint(255 * np.linspace(0, 1, 4096) ** look.gamma).astype(np.uint8)
    prev: Segment | None = None
    for seg in segments:
        n = seg.stop - seg.start
        t = np.arange(n) / fps
        aff = seg.pose.affines(t)
        affines[seg.start : seg.stop] = aff
        shift = np.rint(seg.pose.params(t)[:, :2] - seg.pose.params(t[:1])[:, :2]).astype(int)
        echo = np.empty((n, h, w), np.float32)
        spk = np.empty((n, h, w), np.float32)
        n_tr = min(seg.n_transition, n) if prev is not None else 0
        prev_aff, prev_tissue = None, None
        if n_tr:  # the previous segment's pose continues through the cross-fade
            prev_aff = prev.pose.affines((prev.stop - prev.start + np.arange(n_tr)) / fps)
            px, py = prev.offset
            prev_tissue = look.tissue[py : py + h, px : px + w]
        for j in range(n):
            ox = int(np.clip(seg.offset[0] - shift[j, 0], 0, 2 * p))
            oy = int(np.clip(seg.offset[1] - shift[j, 1], 0, 2 * p))
            echo[j] = _compose(seg.template, aff[j], look.tissue[oy : oy + h, ox : ox + w], w, h)
            if j < n_tr:  # cross-fade from the previous segment, which keeps moving
                wgt = (j + 1) / (n_tr + 1)
                old = _compose(prev.template, prev_aff[j], prev_tissue, w, h)
                echo[j] = wgt * echo[j] + (1 - wgt) * old
            spk[j] = look.speckle[seg.speckle_index, oy : oy + h, ox : ox + w]
            if seg.plane != 0 and j >= n_tr:
                masks[seg.start + j] = cv2.warpAffine(seg.template.mask, aff[j], (w, h),
                                                      flags=cv2.INTER_NEAREST) & fan_mask
        echo *= spk
        echo *= look.gain
        np.clip(echo, 0, 1, out=echo)  # then compress: 255 · x^γ through a 4096-entry table
        frames[seg.start : seg.stop] = lut[(echo * (len(lut) - 1)).astype(np.int32)]
        prev = seg
    return frames, masks, affines


def _compose(template: Template, affine: np.ndarray, tissue: np.ndarray, w: int,
             h: int) -> np.ndarray:
    """Echogenicity (H, W): the warped template over the maternal tissue."""
    lay = cv2.warpAffine(template.layers, affine, (w, h), flags=cv2.INTER_LINEAR)
    return tissue * (1 - lay[..., 1]) + lay[..., 0]
