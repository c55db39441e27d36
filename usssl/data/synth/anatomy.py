"""Anatomy templates of the synthetic fetal corpus: one drawing per standard plane.

Each plane is drawn once per segment on a canonical square canvas (``CANVAS`` px, anatomy radius
``UNIT`` px around the centre) and later warped into the frame by the probe pose
(:mod:`usssl.data.synth.render`). The shapes are cartoons of the planes of the Droste et al.
(IPMI 2019) protocol, METHODS.md §3 — not anatomy: several planes share a body outline (chest /
abdomen circle, head ellipse) and differ only by their inner structures, so that the classes are
learnable but not trivial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

PLANES: tuple[str, ...] = (
    "background", "3vt", "4ch", "abdomen", "femur", "brain_tv", "brain_cb", "kidneys", "lips",
    "spine_sag",
)
"""Class names, index 0 = background (METHODS.md §3 names in snake case)."""

CANVAS = 176
UNIT = 40.0
_C = CANVAS / 2.0


@dataclass
class Template:
    """One anatomy drawing on the canonical canvas.

    Attributes:
        layers: float32 (CANVAS, CANVAS, 2): premultiplied echogenicity and coverage (alpha).
        mask: uint8 (CANVAS, CANVAS), 1 inside the anatomy shape (all 0 for background).
        keypoints: float32 (K, 2) x, y canvas points inside the anatomy that gaze fixates.
        rotation_deg: half-range of the in-plane rotation the pose may draw for this plane.
    """

    layers: np.ndarray
    mask: np.ndarray
    keypoints: np.ndarray
    rotation_deg: float = 45.0


class _Canvas:
    """Paints echogenicity (0 = anechoic, 1 = bright bone) with coverage on the canvas."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.echo = np.zeros((CANVAS, CANVAS), np.float32)
        self.alpha = np.zeros((CANVAS, CANVAS), np.float32)
        self.mask = np.zeros((CANVAS, CANVAS), np.uint8)
        self.keypoints: list[tuple[float, float]] = []
        u = rng.uniform
        self.fluid, self.tissue = u(0.02, 0.08), u(0.32, 0.5)
        self.dark, self.bright = u(0.03, 0.12), u(0.75, 1.0)
        # amniotic fluid around the fetus, soft edged
        fluid = np.zeros_like(self.alpha)
        cv2.ellipse(fluid, (int(_C), int(_C)), (int(UNIT * u(1.5, 1.9)), int(UNIT * u(1.3, 1.7))),
                    u(0, 180), 0, 360, 1.0, -1)
        self.fluid_alpha = cv2.GaussianBlur(fluid, (0, 0), 5.0) * u(0.8, 1.0)

    def _targets(self, value: float, mask: bool) -> list[tuple[np.ndarray, float]]:
        """Arrays a shape is painted on: echo and coverage, and the anatomy mask if ``mask``."""
        return [(self.echo, value), (self.alpha, 1.0)] + ([(self.mask, 1)] if mask else [])

    @staticmethod
    def _pt(x: float, y: float) -> tuple[int, int]:
        return int(round(_C + x * UNIT)), int(round(_C + y * UNIT))

    def ellipse(self, x: float, y: float, ax: float, ay: float, value: float, angle: float = 0.0,
                thickness: int = -1, mask: bool = False,
                arc: tuple[float, float] = (0, 360)) -> None:
        """Ellipse centred at (x, y) with half-axes (ax, ay), all in units of ``UNIT``."""
        axes = (max(1, int(round(ax * UNIT))), max(1, int(round(ay * UNIT))))
        for img, val in self._targets(value, mask):
            cv2.ellipse(img, self._pt(x, y), axes, angle, arc[0], arc[1], val, thickness)

    def line(self, pts: list[tuple[float, float]], value: float, thickness: int,
             mask: bool = False) -> None:
        """Polyline through ``pts`` (units of ``UNIT``)."""
        poly = np.array([self._pt(x, y) for x, y in pts], np.int32)[:, None]
        for img, val in self._targets(value, mask):
            cv2.polylines(img, [poly], False, val, thickness)

    def keypoint(self, x: float, y: float) -> None:
        self.keypoints.append((_C + x * UNIT, _C + y * UNIT))

    def body(self, ax: float, ay: float, angle: float = 0.0) -> None:
        """Filled body outline (soft tissue, bright skin/skull rim); it is the anatomy mask."""
        self.ellipse(0, 0, ax, ay, self.tissue, angle, mask=True)
        self.ellipse(0, 0, ax, ay, self.bright * 0.85, angle, thickness=3)
        self.keypoint(0, 0)

    def spine_dot(self, y: float) -> None:
        self.ellipse(0, y, 0.1, 0.1, self.bright)
        for s in (-1, 1):
            self.ellipse(s * 0.14, y + 0.1, 0.05, 0.05, self.bright * 0.9)

    def finish(self, rotation_deg: float = 45.0) -> Template:
        a = cv2.GaussianBlur(self.alpha, (0, 0), 1.0)
        e = cv2.GaussianBlur(self.echo * self.alpha, (0, 0), 1.0)
        fa = self.fluid_alpha * (1.0 - a)
        layers = np.stack([e + fa * self.fluid, a + fa], axis=-1).astype(np.float32)
        kp = np.array(self.keypoints or [(_C, _C)], np.float32)
        return Template(layers, self.mask, kp, rotation_deg)


def _three_vessel(cv: _Canvas) -> None:
    cv.body(1.0, 1.0)
    cv.spine_dot(0.7)
    t = cv.rng.uniform(-0.1, 0.1)
    for x, y, r in ((-0.42, -0.18 + t, 0.2), (0, -0.32, 0.17), (0.38, -0.42 - t, 0.13)):
        cv.ellipse(x, y, r, r, cv.dark)
        cv.keypoint(x, y)
    cv.ellipse(0.12, 0.02, 0.09, 0.09, cv.dark)
    cv.ellipse(0.12, 0.02, 0.09, 0.09, cv.bright * 0.7, thickness=2)


def _four_chamber(cv: _Canvas) -> None:
    cv.body(1.0, 1.0)
    cv.spine_dot(0.72)
    hx, hy, r = cv.rng.uniform(-0.2, 0.05), cv.rng.uniform(-0.25, -0.05), cv.rng.uniform(0.5, 0.6)
    cv.ellipse(hx, hy, r + 0.08, r, cv.tissue * 1.3)
    cv.ellipse(hx, hy, r - 0.04, r - 0.06, cv.dark)
    phi = np.deg2rad(cv.rng.uniform(15, 45))
    for a in (phi, phi + np.pi / 2):
        d = (np.cos(a) * r, np.sin(a) * r)
        cv.line([(hx - d[0], hy - d[1]), (hx + d[0], hy + d[1])], cv.bright * 0.8, 3)
    cv.keypoint(hx, hy)
    for k in range(4):
        a = phi + np.pi / 4 + k * np.pi / 2
        cv.keypoint(hx + 0.5 * r * np.cos(a), hy + 0.5 * r * np.sin(a))


def _abdomen(cv: _Canvas) -> None:
    cv.body(1.05, 1.0)
    cv.spine_dot(0.68)
    sx, sy = cv.rng.uniform(-0.45, -0.25), cv.rng.uniform(-0.2, 0.05)
    cv.ellipse(sx, sy, 0.38, 0.3, cv.dark, cv.rng.uniform(0, 180))
    cv.line([(0.05, -0.5), (0.2, -0.32), (0.25, -0.1)], cv.dark, 4)
    cv.keypoint(sx, sy)
    cv.keypoint(0.2, -0.3)


def _kidneys(cv: _Canvas) -> None:
    cv.body(1.0, 0.95)
    cv.spine_dot(0.45)
    tilt = cv.rng.uniform(40, 70)
    for s in (-1, 1):
        x, y = s * 0.42, 0.35
        cv.ellipse(x, y, 0.32, 0.2, cv.dark, s * tilt)
        cv.ellipse(x, y, 0.32, 0.2, cv.bright * 0.85, s * tilt, thickness=3)
        cv.ellipse(x, y, 0.08, 0.03, cv.bright * 0.6, s * tilt)
        cv.keypoint(x, y)


def _femur(cv: _Canvas) -> None:
    length = cv.rng.uniform(0.7, 0.95)
    cv.ellipse(0, 0, length + 0.15, 0.38, cv.tissue * 0.9)
    bend = cv.rng.uniform(-0.06, 0.06)
    pts = [(x, bend * (1 - (x / length) ** 2)) for x in np.linspace(-length, length, 7)]
    cv.line(pts, cv.bright, 7, mask=True)
    for x in (-length, length):
        cv.ellipse(x, 0, 0.11, 0.11, cv.bright, mask=True)
    for x, y in pts[1:-1]:
        cv.keypoint(x, y)


def _head(cv: _Canvas) -> tuple[float, float]:
    a, b = cv.rng.uniform(1.05, 1.2), cv.rng.uniform(0.82, 0.92)
    cv.body(a, b)
    cv.ellipse(0, 0, a - 0.1, b - 0.1, cv.tissue * 0.8, thickness=-1)
    return a, b


def _brain_tv(cv: _Canvas) -> None:
    a, b = _head(cv)
    cv.line([(-0.92 * a, 0), (0.92 * a, 0)], cv.bright * 0.7, 2)
    cv.ellipse(0.35 * a, 0, 0.12, 0.07, cv.dark)  # cavum septi pellucidi
    side = cv.rng.choice([-1, 1])
    cv.ellipse(-0.45 * a, side * 0.3 * b, 0.38, 0.17, cv.dark, side * 10)  # posterior horn
    cv.ellipse(-0.45 * a, side * 0.3 * b, 0.2, 0.07, cv.bright * 0.9, side * 10)  # choroid
    cv.keypoint(0.35 * a, 0)
    cv.keypoint(-0.45 * a, side * 0.3 * b)


def _brain_cb(cv: _Canvas) -> None:
    a, b = _head(cv)
    cv.line([(0.1 * a, 0), (0.92 * a, 0)], cv.bright * 0.7, 2)
    cv.ellipse(0.4 * a, 0, 0.12, 0.07, cv.dark)
    x = -0.55 * a
    cv.ellipse(x - 0.2, 0, 0.25, 0.55, cv.dark)  # cisterna magna
    for s in (-1, 1):
        cv.ellipse(x, s * 0.26, 0.25, 0.25, cv.tissue * 1.4)
        cv.ellipse(x, s * 0.26, 0.25, 0.25, cv.bright * 0.9, thickness=3)
    cv.ellipse(x, 0, 0.13, 0.08, cv.bright * 0.9)  # vermis
    cv.keypoint(x, 0)
    cv.keypoint(0.4 * a, 0)


def _lips(cv: _Canvas) -> None:
    cv.ellipse(0, -0.1, 0.85, 0.75, cv.tissue)
    cv.ellipse(0, 0.1, 0.62, 0.36, cv.tissue * 1.1, mask=True)
    w = cv.rng.uniform(0.45, 0.55)
    cv.ellipse(0, 0.0, w, 0.18, cv.bright, arc=(200, 340), thickness=4)  # upper lip
    cv.ellipse(0, 0.16, w * 0.85, 0.16, cv.bright, arc=(20, 160), thickness=4)  # lower lip
    cv.line([(-w * 0.8, 0.08), (w * 0.8, 0.08)], cv.dark, 2)  # mouth
    for s in (-1, 1):
        cv.ellipse(s * 0.15, -0.45, 0.07, 0.05, cv.dark)  # nostrils
    for x, y in ((0, 0.08), (0, -0.15), (0, 0.3), (-0.3, 0.05), (0.3, 0.05)):
        cv.keypoint(x, y)


def _spine_sag(cv: _Canvas) -> None:
    k = cv.rng.uniform(-0.25, 0.25)
    xs = np.linspace(-0.95, 0.95, 9)
    curve = [(x, k * x * x) for x in xs]
    cv.line(curve, cv.tissue, int(0.7 * UNIT), mask=True)
    cv.line([(x, y - 0.5) for x, y in curve], cv.bright * 0.6, 2)  # skin
    gap = cv.rng.uniform(0.17, 0.22)
    cv.line(curve, cv.dark, int(0.2 * UNIT))  # spinal canal
    for x, y in curve:
        cv.ellipse(x, y - gap, 0.09, 0.08, cv.bright)
        cv.ellipse(x, y + gap, 0.08, 0.07, cv.bright * 0.9)
        cv.keypoint(x, y)


def _background(cv: _Canvas) -> None:
    """A non-standard view: an oblique body outline with random blobs, a limb, or only fluid."""
    kind = cv.rng.integers(3)
    if kind == 0:
        cv.ellipse(0, 0, cv.rng.uniform(0.7, 1.1), cv.rng.uniform(0.6, 1.0), cv.tissue,
                   cv.rng.uniform(0, 180))
        for _ in range(cv.rng.integers(1, 4)):
            x, y = cv.rng.uniform(-0.5, 0.5, 2)
            cv.ellipse(x, y, *cv.rng.uniform(0.05, 0.25, 2), cv.rng.choice([cv.dark, cv.bright]),
                       cv.rng.uniform(0, 180))
            cv.keypoint(x, y)
    elif kind == 1:
        y0 = cv.rng.uniform(-0.4, 0.4)
        cv.ellipse(0, y0, 0.9, 0.3, cv.tissue * 0.8)
        cv.line([(-0.8, y0 - 0.1), (0, y0 + 0.05), (0.8, y0 - 0.1)], cv.bright * 0.7, 3)
        cv.keypoint(0, y0)


DRAW: dict[str, Callable[[_Canvas], None]] = {
    "background": _background, "3vt": _three_vessel, "4ch": _four_chamber, "abdomen": _abdomen,
    "femur": _femur, "brain_tv": _brain_tv, "brain_cb": _brain_cb, "kidneys": _kidneys,
    "lips": _lips, "spine_sag": _spine_sag,
}
_ROTATION = {"femur": 50.0, "lips": 30.0, "spine_sag": 35.0}


def draw_template(plane: str, rng: np.random.Generator) -> Template:
    """Draw one segment's anatomy for ``plane`` with shape/contrast drawn from ``rng``."""
    cv = _Canvas(rng)
    DRAW[plane](cv)
    return cv.finish(_ROTATION.get(plane, 45.0))
