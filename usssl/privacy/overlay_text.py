"""Burned-in text inside the imaging region: find it on the sampled frames, blank it, or refuse.

    >>> frames = np.zeros((8, 120, 160), np.uint8)  # (t, H, W) grey frames spread over a recording
    >>> for frame in frames:
    ...     _ = cv2.putText(frame, "DOE JOHN", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
    >>> found = text_mask(frames)  # inside=None: the whole frame is the imaging region
    >>> found.boxes[0].tolist(), bool(found.mask[47:61, 11:90].all()), found.unsure
    ([0, 43, 102, 65], True, False)

In ingest: ``found = text_mask(sample, inside, mean=stats[0])`` on the frames and statistics the
region and static-pixel detection already use; refuse the recording with ``found.reason`` when
``found.unsure``, else write ``inside & ~static & ~found.mask``.

The static-pixel test (:func:`usssl.privacy.region.static_mask`) misses text whose pixels change:
a name shown on alternate half-seconds (blinking), anti-aliased text flickering by a few grey
levels after compression, labels that move. And where it does catch a name, it blanks the glyph
shapes, whose dark outline in the speckle still reads. This module looks at what text *is*, frame
by frame, with offline image operations only (no learned detector, nothing downloaded):

How strokes, glyphs and lines are found (morphology, stroke width, line rules; the papers each step
follows and where it departs) is written out in docs/privacy.md, "Burned-in text inside the image".

Over a recording (:func:`text_mask`) the lines of every sampled frame and of their temporal mean
(speckle averages out, fixed and blinking text keep their edges) are united into one fixed mask:
a blinking, flickering or intermittent name sits at one place. Lines that no other sampled frame
and not the mean find at the same place, in ``MOVING_MIN_LINES`` frames or more, are a moving
overlay one mask cannot follow: the verdict is ``unsure``, as it is when the boxes cover more than
``UNSURE_FRACTION`` of the region or a frame is too cluttered to sort. Only light text is looked
for (overlays are drawn light on the dark image; inverse-video labels are not); a lone glyph (a
caliper, a cursor arrow, one letter) is not text here and is left to the static-pixel test.

Speed (benchmarks/results/text-blanking-realdata.md): ~3 ms per searched frame at 640 x 480 on one
core; ``max_frames`` searches fewer of the sampled frames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

WORK_SIDE = 540  # frames with a shorter side of 2x this or more are searched at 1/2 (1/3, ...) size
MAX_STROKE = 3  # px (at work size): machine fonts draw 1-3 px strokes; wider is tissue
LEVELS = (40, 70, 110)  # top-hat grey levels binarised (a 4th, 160, changed no result on the real data)
BRIGHT_MIN = 96  # overlay text is drawn light; a darker stroke is tissue
GLYPH_MIN_H, GLYPH_MAX_H = 5, 32  # px: from the smallest legible glyph to large labels
GLYPH_MAX_W = 2.5  # heights: one glyph, or two touching ("rn")
STROKE_RATIO = 0.4  # a glyph's stroke width is at most this share of its height (or 2 px)
PITCH_RATIO = 0.8  # mean distance between a row's stroke crossings, in heights (a bar: its width)
FILL_RANGE = (0.12, 0.85)  # share of its box a glyph fills: not a thin diagonal, not a blob
LINE_MIN_GLYPHS = 3  # a name, an ID or a date has 3 glyphs or more; 2 is a measurement label
HEIGHT_RATIO = 1.8  # neighbouring glyphs' heights differ at most this much (capitals vs x-height)
OVERLAP_RATIO = 0.6  # neighbouring glyphs share this share of the smaller height vertically
GAP_RATIO = 1.0  # neighbours are at most a height apart (a word space is ~0.5)
MEDIAN_GAP_RATIO = 0.7  # a line's median glyph gap, in heights: letters, not a row of B-lines
STROKE_MATCH = 2.2  # neighbouring glyphs' stroke widths differ at most this much
PEAK_MATCH = 0.2  # neighbouring glyphs' brightest pixels differ at most this share
PEAK_CV = 0.06  # a line's glyph brightness varies less than this (one colour; speckle: 0.04-0.12)
ALIGN_TOL = 0.12  # heights (>= 1 px): tops or bottoms this close count as on one line
NARROW_RATIO = 0.3  # a line's median glyph is at least this wide, in heights: not a comb of comet tails
ALIGN_MIN = 0.75  # share of a line's glyphs whose tops or bottoms align (speckle rows: 0.3-0.7)
COMPLETE_STEPS = 3  # glyphs a line may grow by at each end (an undetected glyph, punctuation)
PAD_RATIO = 0.35  # heights of margin above and below a blanked line: anti-aliased rims, accents
PAD_END_RATIO = 1.0  # heights of margin at its ends: a glyph fused with bright tissue
MAX_CANDIDATES = 1500  # more glyph candidates at one level: clutter the rules cannot sort (unsure)
HEAVY_FRACTION = 0.05  # blanked share of the region from which a recording is flagged for review
UNSURE_FRACTION = 0.25  # a quarter of the region "text": more overlay than image, or misfiring
MOVING_MIN_FRAMES = 5  # fewer sampled frames cannot tell a moving label from a flash
MOVING_MIN_LINES = 2  # frames with a line found nowhere else from which an overlay is "moving"
MATCH_SHARE = 0.7  # another box holding this share of a line finds it "at the same place"
MATCH_OTHER = 0.3  # ... when that box is at most 1 / this times larger (a whole line vs. one word)


@dataclass(frozen=True)
class TextMask:
    """What :func:`text_mask` found in a recording's sampled frames.

    Attributes:
        mask: (H, W) bool pixels to blank in every frame (inside the region only).
        boxes: (n, 4) int (x0, y0, x1, y1) end-exclusive blanked boxes, before clipping to the
            region (one per text line found, in any sampled frame or the mean).
        fraction: ``mask.sum() / inside.sum()``, the blanked share of the imaging region.
        heavy: ``fraction > HEAVY_FRACTION``: report it for review.
        moving: text seen once each at several places (a label that moves).
        unsure: the fixed mask may not cover the text: refuse the recording (``reason`` says why).
        reason: empty, or why the verdict is unsure.
        n_frames: frames searched (the sampled frames, plus their mean when t >= 2).
        frames_with_text: how many of them held a text line.
    """

    mask: np.ndarray
    boxes: np.ndarray
    fraction: float
    heavy: bool
    moving: bool
    unsure: bool
    reason: str
    n_frames: int
    frames_with_text: int


def _median(values: np.ndarray) -> float:
    """Median of a short 1-D array (np.median costs ~10 us of overhead per call; this ~1 us)."""
    v = np.sort(values)
    return float(v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def _levels(image: np.ndarray, near: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """Glyph candidates level by level, lowest contrast first.

    Yields:
        per ``LEVELS`` entry: (n, 6) float x0, y0, x1, y1, stroke width, peak grey level of its
        glyph candidates; (m, 5) float x0, y0, x1, y1, peak of boxes a line may grow by (the
        candidates, and at the lowest level also the specks: dots, commas, colons); and whether
        there were more than ``MAX_CANDIDATES`` (then only the first are kept).
    """
    k = 2 * MAX_STROKE + 1
    tophat = cv2.morphologyEx(image, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    bright = (image >= BRIGHT_MIN) & near
    for j, level in enumerate(LEVELS):
        cand = ((tophat >= level) & bright).astype(np.uint8)  # (h, w) 0/1
        if not cand.any():
            return
        n, labels, st, _ = cv2.connectedComponentsWithStatsWithAlgorithm(cand, 8, cv2.CV_32S, cv2.CCL_BBDT)
        x, y, w, h, area = (st[:, i].astype(np.float64) for i in range(5))  # (n,) each; 0 = background
        on = cand.astype(bool)
        peak = np.zeros(n, np.uint8)  # uint8: ufunc.at takes its fast path (~50x float64's)
        np.maximum.at(peak, labels[on], image[on])
        size_ok = (h >= GLYPH_MIN_H) & (h <= GLYPH_MAX_H) & (w <= GLYPH_MAX_W * h)
        size_ok[0] = False
        speck = np.flatnonzero((h < GLYPH_MIN_H) & (w < GLYPH_MIN_H))[1:] if j == 0 else np.zeros(0, int)
        idx = np.zeros(0, int)
        stroke = np.zeros(n)
        if size_ok.any():
            edge = on & ~cv2.erode(cand, np.ones((3, 3), np.uint8)).astype(bool)
            border = np.bincount(labels[edge], minlength=n)  # boundary pixels per component
            starts = on.copy()
            starts[:, 1:] &= ~on[:, :-1]  # first pixel of each horizontal run
            runs = np.bincount(labels[starts], minlength=n)
            stroke = 2.0 * area / np.maximum(border, 1)  # width of a ribbon with this area and outline
            pitch = w * h / np.maximum(runs, 1)  # row width / crossings per row
            fill = area / (w * h)
            ok = size_ok & (stroke <= np.maximum(STROKE_RATIO * h, 2.0)) & (pitch <= PITCH_RATIO * h)
            ok &= (fill >= FILL_RANGE[0]) & (fill <= FILL_RANGE[1])
            idx = np.flatnonzero(ok)
        cluttered = len(idx) > MAX_CANDIDATES
        idx = idx[:MAX_CANDIDATES]
        glyphs = np.stack([x[idx], y[idx], x[idx] + w[idx], y[idx] + h[idx], stroke[idx], peak[idx]], 1)
        grow = np.concatenate([idx, speck])
        yield glyphs, np.stack([x[grow], y[grow], x[grow] + w[grow], y[grow] + h[grow], peak[grow]], 1), cluttered


def _groups(adjacent: np.ndarray) -> np.ndarray:
    """(n,) group label of each node of an (n, n) bool symmetric adjacency (label propagation)."""
    n = len(adjacent)
    label = np.arange(n)
    while True:
        new = np.minimum(label, np.where(adjacent, label[None, :], n).min(axis=1))
        new = new[new]  # pointer jumping: halves the remaining distance
        if (new == label).all():
            return label
        label = new


def _lines(glyphs: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Text lines among one level's glyphs (``_levels`` rows): (5,) x0, y0, x1, y1 and median
    glyph height, and the glyphs' median peak grey level. The rows span the glyphs' median top
    and bottom +- half a height (ascenders, descenders), not a glyph fused with a B-line."""
    if len(glyphs) < LINE_MIN_GLYPHS:
        return []
    x0, y0, x1, y1, stroke, peak = glyphs.T  # (n,) each
    h = y1 - y0
    hi, lo = np.maximum(h[:, None], h[None, :]), np.minimum(h[:, None], h[None, :])  # (n, n)
    overlap = np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :])
    gap = np.maximum(x0[:, None], x0[None, :]) - np.minimum(x1[:, None], x1[None, :])
    adjacent = (overlap >= OVERLAP_RATIO * lo) & (hi <= HEIGHT_RATIO * lo) & (gap <= GAP_RATIO * hi)
    thick, thin = np.maximum(stroke[:, None], stroke[None, :]), np.minimum(stroke[:, None], stroke[None, :])
    adjacent &= thick <= STROKE_MATCH * thin
    adjacent &= np.abs(peak[:, None] - peak[None, :]) <= PEAK_MATCH * np.maximum(peak[:, None], peak[None, :])
    group = _groups(adjacent)
    sizes = np.bincount(group, minlength=len(glyphs))
    out = []
    for g in np.flatnonzero(sizes >= LINE_MIN_GLYPHS):
        i = np.flatnonzero(group == g)
        i = i[np.argsort(x0[i])]
        tall = _median(h[i])
        gaps = x0[i][1:] - np.maximum.accumulate(x1[i])[:-1]  # (len - 1,) to the glyphs on the left
        tol = max(1.0, ALIGN_TOL * tall)
        aligned = max(int((np.abs(y0[i] - _median(y0[i])) <= tol).sum()),
                      int((np.abs(y1[i] - _median(y1[i])) <= tol).sum()))  # fmt: skip
        if (_median(gaps) > MEDIAN_GAP_RATIO * tall or aligned < max(LINE_MIN_GLYPHS, ALIGN_MIN * len(i))
                or peak[i].std() > PEAK_CV * peak[i].mean()
                or _median(x1[i] - x0[i]) < NARROW_RATIO * tall):  # fmt: skip
            continue
        top = max(y0[i].min(), _median(y0[i]) - tall / 2)
        bottom = min(y1[i].max(), _median(y1[i]) + tall / 2)
        out.append((np.array([x0[i].min(), top, x1[i].max(), bottom, tall]), _median(peak[i])))
    return out


def _complete(line: np.ndarray, peak: float, grow: np.ndarray) -> np.ndarray:
    """``line`` grown to the glyph-like boxes beside it on its row (punctuation, a glyph the
    rules missed) that are as bright as its glyphs: (5,) x0, y0, x1, y1, glyph height."""
    x0, y0, x1, y1, tall = line
    h, w = grow[:, 3] - grow[:, 1], grow[:, 2] - grow[:, 0]
    row = (grow[:, 1] >= y0 - 0.25 * tall) & (grow[:, 3] <= y1 + 0.35 * tall)  # within the row, descenders
    row &= (h <= 1.3 * tall) & (w <= GLYPH_MAX_W * tall) & (np.abs(grow[:, 4] - peak) <= PEAK_MATCH * peak)
    for _ in range(COMPLETE_STEPS):
        near = row & (grow[:, 2] >= x0 - GAP_RATIO * tall) & (grow[:, 0] <= x1 + GAP_RATIO * tall)
        nx0, nx1 = min(x0, grow[near, 0].min(initial=x0)), max(x1, grow[near, 2].max(initial=x1))
        if (nx0, nx1) == (x0, x1):
            break
        x0, x1 = nx0, nx1
    return np.array([x0, y0, x1, y1, tall])


def _search_area(inside: np.ndarray | None, height: int, width: int) -> tuple[int, np.ndarray]:
    """(f, near): the work-size factor of an (height, width) frame and, at work size, the pixels
    where glyphs are looked for (the region grown by ``GLYPH_MAX_H``: text crossing its border)."""
    f = max(1, min(height, width) // WORK_SIDE)  # 1080 p: half size
    size = (width // f, height // f)
    if inside is None:
        return f, np.ones(size[::-1], bool)
    region = np.asarray(inside, np.uint8)
    if f > 1:
        region = cv2.resize(region, size, interpolation=cv2.INTER_NEAREST)
    return f, cv2.dilate(region, np.ones((2 * GLYPH_MAX_H + 1,) * 2, np.uint8)).astype(bool)


def _boxes(frame: np.ndarray, f: int, near: np.ndarray) -> tuple[np.ndarray, bool]:
    """:func:`frame_text_boxes` with the search area already prepared (``_search_area``)."""
    height, width = frame.shape
    small = frame if f == 1 else cv2.resize(frame, near.shape[::-1], interpolation=cv2.INTER_AREA)
    boxes, cluttered, found = [], False, np.zeros((0, 5))
    for glyphs, grow, crowded in _levels(small, near):
        cluttered |= crowded
        if len(found):  # glyphs already in a line of a lower level: found, not searched again
            cx, cy = (glyphs[:, 0] + glyphs[:, 2]) / 2, (glyphs[:, 1] + glyphs[:, 3]) / 2
            seen = ((cx[:, None] >= found[None, :, 0]) & (cx[:, None] < found[None, :, 2])
                    & (cy[:, None] >= found[None, :, 1]) & (cy[:, None] < found[None, :, 3])).any(axis=1)  # fmt: skip
            glyphs = glyphs[~seen]
        lines = [_complete(line, peak, grow) for line, peak in _lines(glyphs)]
        if lines:
            found = np.concatenate([found, np.stack(lines)])
    for x0, y0, x1, y1, tall in found:
        pad, side = PAD_RATIO * tall, PAD_END_RATIO * tall
        boxes.append([int((x0 - side) * f), int((y0 - pad) * f),
                      int(np.ceil((x1 + side) * f)), int(np.ceil((y1 + pad) * f))])  # fmt: skip
    out = np.array(boxes, np.int64).reshape(-1, 4)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out, cluttered


def frame_text_boxes(frame: np.ndarray, inside: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Text lines in one grey frame: the boxes to blank, padded, in source pixels.

    Args:
        frame: (H, W) uint8 grey.
        inside: (H, W) bool imaging region; glyphs up to ``GLYPH_MAX_H`` px outside it count (text
            crossing its border). None: the whole frame.

    Returns:
        (n, 4) int x0, y0, x1, y1 end-exclusive (clipped to the frame, not to the region), and
        whether the frame was too cluttered to sort (``MAX_CANDIDATES``).
    """
    if frame.ndim != 2 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W) uint8, got shape {frame.shape} dtype {frame.dtype}")
    return _boxes(frame, *_search_area(inside, *frame.shape))


def _paint(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool union of (n, 4) end-exclusive boxes."""
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def frame_text_mask(frame: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool text to blank in one (H, W) uint8 frame (:func:`frame_text_boxes`), inside only."""
    mask = _paint(frame_text_boxes(frame, inside)[0], frame.shape)
    return mask if inside is None else mask & np.asarray(inside, bool)


def block_text_masks(frames: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """Per-frame text masks of a block, for a recording whose overlay moves (``TextMask.moving``).

    Costs :func:`frame_text_boxes` per frame (a few ms at 640 x 480), so ingest calls it only for
    flagged recordings, on the frames it writes: ``block[masks] = 0`` before the crop and resize.

    Args:
        frames: (t, H, W) uint8 grey frames.
        inside: (H, W) bool imaging region or None.

    Returns:
        (t, H, W) bool.
    """
    if frames.ndim != 3:
        raise ValueError(f"frames must be (t, H, W), got shape {frames.shape}")
    return np.stack([frame_text_mask(frame, inside) for frame in frames]) if len(frames) else \
        np.zeros(frames.shape, bool)  # fmt: skip


def text_mask(frames: np.ndarray, inside: np.ndarray | None = None, *, mean: np.ndarray | None = None,
              max_frames: int | None = None) -> TextMask:  # fmt: skip
    """The fixed mask of in-region text over a recording, and the verdict ingest acts on.

    Every sampled frame is searched (:func:`frame_text_boxes`), and so is their temporal mean,
    where speckle averages out and fixed or blinking text keeps its edges. The union of the boxes
    is the mask: a blinking name, a name that flickers by a few grey levels and a name shown in
    part of the recording all sit at fixed places.

    Args:
        frames: (t, H, W) uint8 grey frames spread over the recording (a still image: t = 1).
        inside: (H, W) bool imaging region (mask or box); None: the whole frame.
        mean: (H, W) temporal mean of ``frames`` when already computed
            (``usssl.privacy.region.temporal_stats(frames)[0]``).
        max_frames: search at most this many of ``frames``, evenly spread (the mean is still of
            all of them): faster, but text shown in fewer than ``t / max_frames`` of the sampled
            frames may be missed. None: all.

    Returns:
        TextMask: the mask, its share of the region, and the heavy / moving / unsure verdicts.
    """
    if frames.ndim != 3 or not len(frames):
        raise ValueError(f"frames must be (t, H, W) with t >= 1, got shape {frames.shape}")
    t, height, width = frames.shape
    region = np.ones((height, width), bool) if inside is None else np.asarray(inside, bool)
    f, near = _search_area(region, height, width)
    picks = np.arange(t) if max_frames is None or max_frames >= t else \
        np.unique(np.linspace(0, t - 1, max(1, max_frames)).round().astype(int))  # fmt: skip
    found, cluttered = [], False
    for frame in frames[picks]:
        boxes, crowded = _boxes(np.ascontiguousarray(frame), f, near)
        found.append(boxes)
        cluttered |= crowded
    searched = list(found)
    mean_boxes = np.zeros((0, 4), np.int64)
    if t >= 2:
        if mean is None:
            mean = frames.mean(axis=0)
        mean_boxes, crowded = _boxes(np.clip(np.rint(mean), 0, 255).astype(np.uint8), f, near)
        searched.append(mean_boxes)
        cluttered |= crowded
    boxes = np.concatenate(searched)  # (n, 4)
    mask = _paint(boxes, (height, width)) & region
    fraction = float(mask.sum()) / max(int(region.sum()), 1)
    moving = len(picks) >= MOVING_MIN_FRAMES and _moving_frames(found, mean_boxes) >= MOVING_MIN_LINES
    reasons = []
    if cluttered:
        reasons.append(f"more than {MAX_CANDIDATES} stroke candidates in a frame: too cluttered to tell text "
                       "from image")  # fmt: skip
    if fraction > UNSURE_FRACTION:
        reasons.append(f"text-like strokes cover {100 * fraction:.0f}% of the imaging region (more overlay than image, "
                       "or the detector misfires on this anatomy)")  # fmt: skip
    if moving:
        reasons.append("text appears at changing places in the sampled frames (a moving overlay): one fixed mask "
                       "cannot follow it")  # fmt: skip
    if fraction > HEAVY_FRACTION:
        log.warning("in-region text: %.1f%% of the imaging region blanked", 100 * fraction)
    return TextMask(mask=mask, boxes=boxes, fraction=fraction, heavy=fraction > HEAVY_FRACTION, moving=moving,
                    unsure=bool(reasons), reason="in-region text: " + "; ".join(reasons) if reasons else "",
                    n_frames=len(searched), frames_with_text=sum(len(b) > 0 for b in searched))  # fmt: skip


def _moving_frames(found: list[np.ndarray], mean_boxes: np.ndarray) -> int:
    """How many sampled frames hold a line found nowhere else at its place: no box of another
    frame or of the mean holds ``MATCH_SHARE`` of it while being at most ``1 / MATCH_OTHER``
    times larger (a line split into words in one frame and whole in another still matches)."""
    owner = np.concatenate([np.full(len(b), i) for i, b in enumerate(found)] + [np.full(len(mean_boxes), -1)])
    every = np.concatenate([*found, mean_boxes]).astype(np.float64)  # (N, 4)
    area = np.prod(every[:, 2:] - every[:, :2], axis=1).clip(1)  # (N,)
    frames = 0
    for i, boxes in enumerate(found):
        if not len(boxes):
            continue
        b = boxes.astype(np.float64)[:, None, :]  # (k, 1, 4) against (N, 4)
        w = (np.minimum(b[..., 2], every[:, 2]) - np.maximum(b[..., 0], every[:, 0])).clip(0)
        h = (np.minimum(b[..., 3], every[:, 3]) - np.maximum(b[..., 1], every[:, 1])).clip(0)
        inter = w * h  # (k, N)
        own = np.prod(b[..., 2:] - b[..., :2], axis=-1).clip(1)  # (k, 1)
        match = (inter >= MATCH_SHARE * own) & (inter >= MATCH_OTHER * area) & (owner != i)
        frames += int(not match.any(axis=1).all())
    return frames
