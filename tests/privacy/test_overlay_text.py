"""In-region burned-in text: names drawn inside a synthetic fan are found and, once blanked as
ingest blanks (imaging mask, static pixels, then the text mask, crop and resize to 64 and 160 px),
cannot be recovered by template matching; thin bright anatomy moving slightly is not blanked.

The scene is a speckled sector (a Rayleigh envelope, log-compressed as B-mode is) with a pleura
line, B-lines, a comb of short comet tails, a femur-like bar and a row of spine-like dots, all
moving by a few pixels; 6 s at 20 fps, of which 60 frames are sampled as ingest samples them.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from usssl.privacy.overlay_text import (PAD_END_RATIO, PAD_RATIO, UNSURE_FRACTION,
                                        block_text_masks, frame_text_boxes, frame_text_mask,
                                        text_mask)  # fmt: skip
from usssl.privacy.region import crop_resize, imaging_mask, mask_box, static_mask, temporal_stats

H, W, FPS, SECONDS, SAMPLES = 256, 320, 20, 6.0, 60
APEX, R0, R1, HALF_ANGLE = (160, -30), 50, 280, np.deg2rad(34)
NAME, ORG, SCALE = "DOE^JOHN 1961", (90, 120), 0.7  # ~14 px capitals, 1-2 px anti-aliased strokes
RECOVERABLE = 0.7  # |normalised correlation| where the name is shown, unblanked (measured 0.78-0.94)
UNRECOVERABLE = 0.5  # blanked (measured 0.16-0.41: the blanked box's edge against speckle, not text)
NULL_MARGIN = 0.05  # blanked text may match no better than the same blanking of the text-free scene
NAME_SHARE = 0.2  # the padded name is ~10% of this small fan; much more would blank anatomy too
SEARCH = 4  # cached px around the true place that the matcher may shift (it knows where to look)


def fan() -> np.ndarray:
    """(H, W) bool sector below ``APEX`` between radii R0 and R1."""
    yy, xx = np.mgrid[:H, :W]
    dx, dy = xx - APEX[0], yy - APEX[1]
    r = np.hypot(dx, dy)
    return (r >= R0) & (r <= R1) & (np.abs(np.arctan2(dx, dy)) <= HALF_ANGLE)


def speckle(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Rayleigh envelope of low-pass complex noise, mean 1 (grains ~9 x 5 px)."""
    parts = [cv2.GaussianBlur(rng.normal(size=shape).astype(np.float32), (0, 0), 9 / 2.355, sigmaY=5 / 2.355)
             for _ in range(2)]  # fmt: skip
    env = np.hypot(*parts)
    return env / env.mean()


def anatomy(t: float) -> np.ndarray:
    """(H, W) float32 thin bright structures at time ``t`` s, moving by up to 2 px."""
    img = np.zeros((H, W), np.float32)
    dx, dy = 2.0 * np.cos(2 * np.pi * 0.5 * t), 2.0 * np.sin(2 * np.pi * 0.7 * t)
    xs = np.arange(60, 260)
    pleura = np.stack([xs + dx, 70 + dy + 4 * np.sin(xs / 40.0)], 1).round().astype(np.int32)
    cv2.polylines(img, [pleura], False, 230, 3, cv2.LINE_AA)
    for x in (110, 150, 205):  # B-lines from the pleura down
        cv2.line(img, (int(x + dx), int(75 + dy)), (int(x + dx), 240), 150, 6, cv2.LINE_AA)
    for k in range(8):  # comet tails: a comb of short streaks, evenly spaced like letters
        x = int(60 + 12 * k + dx)
        cv2.line(img, (x, int(215 + dy)), (x, int(235 + dy + 3 * np.sin(k))), 200, 3)
    cv2.line(img, (int(70 + dx), int(170 + dy)), (int(190 + dx), int(150 + dy)), 240, 7, cv2.LINE_AA)  # femur
    for k in range(6):  # spine: a row of bright bodies
        cv2.ellipse(img, (int(200 + 14 * k + dx), int(200 + dy + 2 * np.sin(k))), (5, 3), 0, 0, 360, 220, -1)
    return cv2.GaussianBlur(img, (0, 0), 1.2)


def text_layer(org=ORG, text=NAME) -> np.ndarray:
    """(H, W) float32 anti-aliased coverage of ``text`` in [0, 1]."""
    layer = np.zeros((H, W), np.uint8)
    cv2.putText(layer, text, org, cv2.FONT_HERSHEY_SIMPLEX, SCALE, 255, 1, cv2.LINE_AA)
    return layer.astype(np.float32) / 255


def scene(kind: str | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W) uint8 recording and (n,) bool frames showing the name.

    kind: None (no text), "fixed" (white every frame), "blink" (white on alternate half-seconds),
    "antialiased" (grey 190 whose pixels vary by ~2.5 levels, above the static threshold 2.0),
    "moving" (a label jumping to a new place every 2 frames).
    """
    rng = np.random.default_rng(seed)
    sector, n = fan(), int(SECONDS * FPS)
    base, pad = speckle(rng, (H + 40, W + 40)), 20
    gain = 95 * np.exp(-np.arange(H, dtype=np.float32)[:, None] / 500.0)  # (H, 1) depth gain
    name = text_layer()
    frames, shown = np.zeros((n, H, W), np.uint8), np.zeros(n, bool)
    for i in range(n):
        t = i / FPS
        sp = np.sqrt(0.5) * (base + speckle(rng, base.shape))  # half the speckle persists
        shift = int(round(3 * np.sin(t)))
        img = gain + 70 * np.log10(sp[pad + shift : pad + shift + H, pad : pad + W] + 1e-3)
        img = np.maximum(img, anatomy(t) * (0.85 + 0.15 * np.clip(sp[pad : pad + H, pad : pad + W], 0, 2) / 2))
        img = np.where(sector, img, 0)
        alpha, value = name, 255.0
        shown[i] = kind in ("fixed", "antialiased", "moving") or (kind == "blink" and int(t / 0.5) % 2 == 0)
        if kind == "antialiased":
            value = 190 + rng.normal(0, 2.5, (H, W))
        if kind == "moving":
            alpha = text_layer((40 + 37 * (i // 2) % 120, 100 + 53 * (i // 2) % 110))
        if shown[i]:
            img = img * (1 - alpha) + value * alpha
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, shown


def sample(frames: np.ndarray) -> np.ndarray:
    """The frames ingest samples for region and overlay detection (``REGION_SAMPLES`` spread)."""
    return frames[np.unique(np.linspace(0, len(frames) - 1, SAMPLES).round().astype(int))]


def correlation(cached: np.ndarray, template: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    """(n,) max |TM_CCOEFF_NORMED| of ``template`` within ``SEARCH`` px of its place ``at`` (x, y)
    in each cached frame; both polarities count (a glyph-shaped hole reads as well as a glyph)."""
    x, y = at
    th, tw = template.shape
    out = []
    for frame in cached:
        window = frame[max(y - SEARCH, 0) : y + th + SEARCH, max(x - SEARCH, 0) : x + tw + SEARCH]
        out.append(float(np.abs(cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)).max()))
    return np.array(out)


def cached_template(size: int, box, org=ORG) -> tuple[np.ndarray, tuple[int, int]]:
    """The name as the cache would hold it alone: (template, (x, y) of its corner) at size px."""
    drawn = (text_layer(org) * 255).astype(np.uint8)[None]
    small = crop_resize(drawn, box, (size, size))[0]
    ys, xs = np.nonzero(small > 20)
    y0, y1, x0, x1 = ys.min() - 2, ys.max() + 3, xs.min() - 2, xs.max() + 3
    return small[y0:y1, x0:x1], (int(x0), int(y0))


@pytest.fixture(scope="module")
def ingested():
    """kind -> (frames, shown, imaging mask, pixels kept without the text mask (the imaging mask
    less the static pixels, as ingest keeps them today), pixels kept with it, TextMask)."""
    out = {}
    for kind in ("fixed", "blink", "antialiased", None):
        frames, shown = scene(kind)
        picked = sample(frames)
        stats = temporal_stats(picked)
        inside = imaging_mask(picked, stats=stats)
        static = static_mask(picked, inside, stats=stats)
        before = inside if static is None else inside & ~static
        found = text_mask(picked, inside, mean=stats[0])
        out[kind] = frames, shown, inside, before, before & ~found.mask, found
    return out


@pytest.mark.parametrize("kind", ["fixed", "blink", "antialiased"])
@pytest.mark.parametrize("size", [64, 160])
def test_names_are_not_recoverable_from_the_cache(ingested, kind, size):
    frames, shown, inside, before, after, found = ingested[kind]
    null_frames, _, _, _, _, _ = ingested[None]
    assert not found.unsure and not found.moving and found.fraction < NAME_SHARE
    box = mask_box(inside)
    template, at = cached_template(size, box)
    readable = correlation(crop_resize(frames[shown], box, (size, size), before), template, at)
    blanked = correlation(crop_resize(frames[shown], box, (size, size), after), template, at)
    null = correlation(crop_resize(null_frames[shown], box, (size, size), after), template, at)
    # without the text mask the name reads in every frame that shows it: the static mask leaves
    # the blinking and the flickering name whole, and the fixed name as glyph-shaped holes
    assert readable.min() > RECOVERABLE
    assert blanked.max() < UNRECOVERABLE
    assert blanked.max() <= null.max() + NULL_MARGIN  # no better than the same blanking without text


def test_static_mask_alone_misses_the_flickering_name(ingested):
    """The issue's premise: pixels varying by ~2.5 grey levels escape the static test, while the
    fixed white name is taken by it glyph by glyph (and still reads as holes: see above)."""
    core = text_layer() > 0.5
    _, _, _, before, _, found = ingested["antialiased"]
    assert before[core].mean() > 0.5 and found.mask[core].all()  # most kept without the text mask
    _, _, _, before, _, found = ingested["fixed"]
    assert before[core].mean() < 0.2 and found.mask[core].all()  # most taken by the static test


def test_thin_bright_anatomy_is_not_blanked(ingested):
    """Pleura, B-lines, comet tails, a femur and a spine moving by 2 px: nothing blanked."""
    frames, _, inside, _, _, found = ingested[None]
    assert found.fraction <= 0.002 and not found.heavy and not found.unsure and not found.moving
    for frame in frames[::15]:  # the same scene's frames taken as still images
        assert frame_text_mask(frame, inside)[inside].mean() <= 0.002


def test_moving_label_is_unsure_and_blanked_frame_by_frame():
    frames, shown = scene("moving", seed=1)
    picked = sample(frames)
    sector = fan()
    found = text_mask(picked, sector)
    assert found.moving and found.unsure and "moving overlay" in found.reason
    masks = block_text_masks(frames, sector)  # (n, H, W), what ingest would apply per frame
    assert masks.shape == frames.shape
    box = mask_box(sector)
    for i in range(0, len(frames), 9):
        org = (40 + 37 * (i // 2) % 120, 100 + 53 * (i // 2) % 110)
        blanked = (np.where(masks[i], 0, frames[i]) * sector).astype(np.uint8)[None]  # (1, H, W)
        template, at = cached_template(160, box, org)
        assert correlation(crop_resize(blanked, box, (160, 160)), template, at)[0] < UNRECOVERABLE


def glyph_row(frame: np.ndarray, x0: int, y0: int, n: int, w: int = 6, h: int = 10, gap: int = 3) -> None:
    """Draw ``n`` hollow 1-px rectangles ("0"s) of w x h, ``gap`` apart, from (x0, y0), in place."""
    for k in range(n):
        x = x0 + k * (w + gap)
        cv2.rectangle(frame, (x, y0), (x + w - 1, y0 + h - 1), 255, 1)


def test_box_of_a_line_is_its_glyphs_padded_as_documented():
    frame = np.zeros((100, 100), np.uint8)
    glyph_row(frame, 20, 30, 4)  # glyphs span x 20..52, y 30..39: box (20, 30, 53, 40), height 10
    boxes, cluttered = frame_text_boxes(frame)
    # pad = PAD_RATIO * 10 = 3.5 above and below, PAD_END_RATIO * 10 = 10 at the ends
    assert PAD_RATIO == 0.35 and PAD_END_RATIO == 1.0
    assert boxes.tolist() == [[10, 26, 63, 44]] and not cluttered
    found = text_mask(frame[None])
    assert found.fraction == pytest.approx(53 * 18 / 100**2)  # (63 - 10) x (44 - 26) of 100 x 100
    region = np.zeros((100, 100), bool)
    region[:, :50] = True  # the left half only: the box is clipped, the share is of the region
    assert text_mask(frame[None], region).fraction == pytest.approx(40 * 18 / (100 * 50))
    assert found.n_frames == 1 and found.frames_with_text == 1 and not found.unsure


def test_two_glyphs_are_not_a_line():
    frame = np.zeros((100, 100), np.uint8)
    glyph_row(frame, 20, 30, 2)
    assert frame_text_boxes(frame)[0].shape == (0, 4)
    assert not text_mask(np.repeat(frame[None], 6, axis=0)).mask.any()


def test_a_screen_of_text_is_heavy_and_unsure():
    frame = np.zeros((100, 100), np.uint8)
    for row in range(6):
        glyph_row(frame, 12, 4 + 16 * row, 8)  # six lines of 8 glyphs fill most of the frame
    found = text_mask(np.repeat(frame[None], 3, axis=0))
    assert found.fraction > UNSURE_FRACTION and found.heavy and found.unsure
    assert "cover" in found.reason and not found.moving
    assert found.n_frames == 4 and found.frames_with_text == 4  # 3 frames and their mean


def test_still_image_names_are_blanked():
    frames, _ = scene("fixed", seed=2)
    still = frames[:1]
    found = text_mask(still, fan())
    assert found.mask[text_layer() > 0.1].all() and found.n_frames == 1


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(t, H, W\)"):
        text_mask(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W\) uint8"):
        frame_text_boxes(np.zeros((10, 10), np.float32))
