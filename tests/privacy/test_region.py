"""Imaging-region detection, crop + resize, and mapping points into cached pixels."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import fixtures_video as fx  # noqa: E402

from usssl.io.video import read_video  # noqa: E402
from usssl.privacy.region import (  # noqa: E402
    check_box,
    colour_fraction,
    crop_resize,
    detect_imaging_region,
    imaging_mask,
    map_points,
    mask_box,
    static_mask,
    temporal_stats,
)

MARKER_X, MARKER_Y = 60, 62  # a caliper "+" inside the fan, below the blob's path


def with_marker(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` with a static bright "+" (9 px arms) drawn into every frame, and its (H, W) mask."""
    marker = np.zeros(frames.shape[1:], bool)
    marker[MARKER_Y - 4 : MARKER_Y + 5, MARKER_X] = True
    marker[MARKER_Y, MARKER_X - 4 : MARKER_X + 5] = True
    out = frames.copy()
    out[:, marker] = 230
    return out, marker


def _assert_fan_box(box):
    x0, y0, x1, y1 = box
    tx0, ty0, tx1, ty1 = fx.TEXT_BOX
    assert y1 <= ty0, f"box {box} reaches into the burned-in text rows {ty0}..{ty1}"
    fan = fx.fan_box()
    centres = np.array([fx.blob_centre(i) for i in range(60)])
    assert x0 <= centres[:, 0].min() - 3 and centres[:, 0].max() + 3 <= x1
    assert y0 <= centres[:, 1].min() - 3 and centres[:, 1].max() + 3 <= y1
    inter = max(0, min(x1, fan[2]) - max(x0, fan[0])) * max(0, min(y1, fan[3]) - max(y0, fan[1]))
    union = (x1 - x0) * (y1 - y0) + (fan[2] - fan[0]) * (fan[3] - fan[1]) - inter
    assert inter / union > 0.85


def test_region_of_rendered_frames_excludes_static_text():
    frames = fx.render(40)
    assert frames[:, fx.TEXT_BOX[1] :, :].max() == 255  # the text is there
    _assert_fan_box(detect_imaging_region(frames))


def test_region_of_decoded_video(tmp_path):
    rec = read_video(fx.make_scan(tmp_path / "scan.mp4", with_audio=False))
    frames = np.concatenate(list(rec.iter_frames()))
    _assert_fan_box(detect_imaging_region(frames))


def test_static_frames_fall_back_to_the_full_frame(caplog):
    frames = np.repeat(fx.render(1), 10, axis=0)
    with caplog.at_level(logging.WARNING, logger="usssl.privacy.region"):
        assert detect_imaging_region(frames) == (0, 0, fx.SIZE, fx.SIZE)
    assert "full frame" in caplog.text
    assert detect_imaging_region(frames[:1]) == (0, 0, fx.SIZE, fx.SIZE)


def test_mask_blanks_text_in_a_corner_of_the_box():
    """Text beside the fan's narrow top lies inside the bounding box; the mask removes it."""
    import cv2

    frames = fx.render(40)
    for i in range(len(frames)):
        frames[i] = cv2.putText(frames[i].copy(), "DOE", (6, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
    mask = imaging_mask(frames)
    box = detect_imaging_region(frames)
    assert mask.shape == (fx.SIZE, fx.SIZE) and mask[fx.fan_mask()].mean() > 0.97
    text = np.zeros_like(mask)
    text[:16, :30] = frames[0, :16, :30] > 0  # the fan is at x > 40 in these rows
    assert text.sum() > 10 and not (mask & text).any()
    x0, y0, x1, y1 = box
    assert text[y0:y1, x0:x1].any()  # the box alone would keep some of the text
    out = crop_resize(frames, box, (y1 - y0, x1 - x0), mask)  # no resampling: exact pixels
    assert out[:, text[y0:y1, x0:x1]].max() == 0
    np.testing.assert_array_equal(out[:, mask[y0:y1, x0:x1]], frames[:, y0:y1, x0:x1][:, mask[y0:y1, x0:x1]])
    assert imaging_mask(np.repeat(frames[:1], 5, axis=0)) is None


def test_crop_resize_shapes():
    frames = np.zeros((3, 50, 80), np.uint8)
    frames[:, 10:20, 30:40] = 200
    out = crop_resize(frames, (30, 10, 40, 20), (4, 6))
    assert out.shape == (3, 4, 6) and out.dtype == np.uint8 and (out == 200).all()
    colour = crop_resize(np.zeros((2, 50, 80, 3), np.uint8), (0, 0, 80, 50), (25, 40))
    assert colour.shape == (2, 25, 40, 3)


@pytest.mark.parametrize(
    "box,size", [((10, 20, 74, 84), (32, 32)), ((7, 3, 67, 90), (32, 24)), ((0, 0, 96, 96), (96, 96))]
)
def test_map_points_follows_crop_resize(box, size):
    """A bright square's centroid after crop_resize is where map_points puts its centre."""
    frame = np.zeros((1, 96, 96), np.uint8)
    frame[0, 40:44, 30:34] = 255  # centre (x, y) = (31.5, 41.5)
    out = crop_resize(frame, box, size)[0].astype(float)
    yy, xx = np.mgrid[: size[0], : size[1]]
    centroid = np.array([(xx * out).sum(), (yy * out).sum()]) / out.sum()
    mapped = map_points(np.array([[31.5, 41.5]]), box, size)[0]
    np.testing.assert_allclose(mapped, centroid, atol=0.35)


def test_map_points_keeps_nan_and_shape():
    xy = np.array([[[np.nan, 5.0], [10.0, 10.0]]])
    out = map_points(xy, (0, 0, 20, 20), (10, 10))
    assert out.shape == (1, 2, 2) and out.dtype == np.float32
    assert np.isnan(out[0, 0, 0]) and out[0, 1].tolist() == [4.75, 4.75]


def test_check_box_rejects_boxes_outside_the_frame():
    assert check_box((0, 0, 10, 10), 10, 10) == (0, 0, 10, 10)
    for bad in [(0, 0, 11, 10), (5, 0, 5, 10), (-1, 0, 4, 4)]:
        with pytest.raises(ValueError, match="crop box"):
            check_box(bad, 10, 10)


def test_static_marker_inside_a_moving_fan_is_found():
    frames, marker = with_marker(fx.render(40))
    assert fx.fan_mask()[marker].all()  # the marker sits on moving speckle
    region = imaging_mask(frames)
    assert region[marker].all()  # a static marker inside the fan does not change the region
    static = static_mask(frames, region)
    assert static is not None and static[marker].all() and marker.sum() == 17
    ring = cv2.dilate(marker.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert not (static & ~ring).any()  # only the marker and its 1-pixel rim
    assert static.sum() <= ring.sum() == 11 * 3 * 2 - 9  # two 11 x 3 bars crossing
    assert static_mask(fx.render(40), region) is None  # moving speckle: nothing static


def test_static_mask_rules():
    frames, marker = with_marker(fx.render(40))
    inside = np.zeros(marker.shape, bool)
    inside[: MARKER_Y + 1] = True  # a region that ends at the marker's horizontal arm
    static = static_mask(frames, inside)
    assert not static[MARKER_Y + 1 :].any() and static[marker & inside].all()
    assert static_mask(frames[:4], imaging_mask(frames)) is None  # too few frames to tell
    speck = fx.render(40)
    speck[:, 50:52, 50:52] = 200  # 4 static pixels: a chance speck, not an overlay
    assert static_mask(speck, fx.fan_mask()) is None
    dark = fx.render(40)
    dark[:, 60:70, 40:56] = 20  # constant but darker than the floor: background
    assert static_mask(dark, fx.fan_mask()) is None
    text = static_mask(fx.render(40))  # the whole frame: the burned-in text below the fan
    ys, xs = np.nonzero(text)
    assert ys.min() >= fx.TEXT_BOX[1] - 1 and fx.TEXT_BOX[0] - 1 <= xs.min() and xs.max() <= fx.TEXT_BOX[2]


def test_a_still_recording_is_not_masked(caplog):
    still = np.repeat(fx.render(1), 12, axis=0)
    with caplog.at_level(logging.WARNING, logger="usssl.privacy.region"):
        assert static_mask(still) is None
    assert "static-pixel masking skipped" in caplog.text


def test_colour_fraction_counts_coloured_pixels_in_the_region():
    grey = np.repeat(fx.render(3)[..., None], 3, axis=-1)  # (3, H, W, 3), R = G = B
    assert colour_fraction(grey).tolist() == [0.0, 0.0, 0.0]
    coloured = grey.copy()
    coloured[1, :48, :, 0] = 255  # top half of frame 1 red-tinted
    coloured[1, :48, :, 1:] = 40
    coloured[2, :10, :10] = (140, 120, 110)  # low chroma (30 < 48): not coloured
    keep = np.zeros((fx.SIZE, fx.SIZE), bool)
    keep[:, :48] = True
    np.testing.assert_allclose(colour_fraction(coloured), [0.0, 0.5, 0.0])
    np.testing.assert_allclose(colour_fraction(coloured, keep), [0.0, 0.5, 0.0])
    keep[48:] = False  # only the red quarter
    np.testing.assert_allclose(colour_fraction(coloured, keep), [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="RGB"):
        colour_fraction(grey[..., 0])


def _int64_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference: integer sums in int64, moments in float64."""
    wide = frames.astype(np.int64)
    mean = wide.sum(axis=0) / len(frames)
    return mean, np.sqrt(np.clip((wide * wide).sum(axis=0) / len(frames) - mean * mean, 0, None))


@pytest.mark.parametrize("t", [1, 2, 60, 300])  # 300 > EXACT_FRAMES: two float32 runs
def test_temporal_stats_equal_the_numpy_reference(t):
    frames = np.random.default_rng(t).integers(0, 256, (t, 23, 37), dtype=np.uint8)
    frames[:, :3] = 255  # constant at the top of the range: std exactly 0, sums at their largest
    mean, std = temporal_stats(frames)
    ref_mean, ref_std = _int64_stats(frames)
    assert mean.dtype == std.dtype == np.float64 and mean.shape == std.shape == (23, 37)
    np.testing.assert_array_equal(mean, ref_mean)  # bit-equal: the sums are exact
    np.testing.assert_array_equal(std, ref_std)
    assert (std[:3] == 0).all()
    np.testing.assert_allclose(std, frames.astype(np.float64).std(axis=0), rtol=0, atol=1e-9)
    view = frames[:, 2:20, 5:30]  # a non-contiguous view, and a float copy, give the same numbers
    np.testing.assert_array_equal(temporal_stats(view)[1], _int64_stats(view)[1])
    np.testing.assert_allclose(temporal_stats(view.astype(np.float32))[1], ref_std[2:20, 5:30], atol=1e-9)


def test_shared_stats_give_the_same_masks():
    frames, _ = with_marker(fx.render(40))
    stats = temporal_stats(frames)
    region = imaging_mask(frames)
    np.testing.assert_array_equal(imaging_mask(frames, stats=stats), region)
    np.testing.assert_array_equal(static_mask(frames, region, stats=stats), static_mask(frames, region))


def test_a_moving_ring_gives_its_filled_hull():
    """The mask is the convex hull of the whole moving region, holes and concave parts included."""
    rng = np.random.default_rng(0)
    frames = np.full((30, 96, 96), 40, np.uint8)
    ring = np.zeros((96, 96), np.uint8)
    cv2.circle(ring, (48, 48), 30, 1, thickness=8)  # a moving annulus, static inside and out
    frames[:, ring.astype(bool)] = rng.integers(60, 200, (30, int(ring.sum())), dtype=np.uint8)
    mask = imaging_mask(frames)
    disc = np.zeros((96, 96), np.uint8)
    cv2.circle(disc, (48, 48), 30 + 4, 1, thickness=-1)
    assert mask[disc.astype(bool)].all()  # the static centre is inside the hull
    assert not mask[:, :8].any() and not mask[:8].any()  # the corners stay out
    assert mask_box(mask) == (13, 13, 84, 84)  # the ring's rows/columns 14..82, grown by 1 pixel


@pytest.mark.parametrize("channels", [(), (3,)])
def test_crop_resize_equals_blank_then_resize(channels):
    """Blanking by one multiply on the crop view is the same as np.where on a contiguous copy."""
    frames = np.random.default_rng(1).integers(0, 256, (4, 50, 70, *channels), dtype=np.uint8)
    mask = np.random.default_rng(2).random((50, 70)) > 0.3
    box, size = (5, 3, 61, 47), (16, 20)
    keep = mask[3:47, 5:61].reshape(44, 56, *(1 for _ in channels))
    expected = np.stack([cv2.resize(np.where(keep, f[3:47, 5:61], 0).astype(np.uint8), (20, 16),
                                    interpolation=cv2.INTER_AREA) for f in frames])  # fmt: skip
    np.testing.assert_array_equal(crop_resize(frames, box, size, mask), expected)
    plain = np.stack([cv2.resize(np.ascontiguousarray(f[3:47, 5:61]), (20, 16), interpolation=cv2.INTER_AREA)
                      for f in frames])  # fmt: skip
    np.testing.assert_array_equal(crop_resize(frames, box, size), plain)


def test_colour_fraction_equals_the_channel_spread():
    frames = np.random.default_rng(3).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    spread = frames.max(axis=-1).astype(np.int16) - frames.min(axis=-1)
    keep = np.random.default_rng(4).random((20, 30)) > 0.5
    np.testing.assert_array_equal(colour_fraction(frames), (spread >= 48).mean(axis=(1, 2)))
    np.testing.assert_array_equal(colour_fraction(frames, keep, chroma=100),
                                  ((spread >= 100) & keep).sum(axis=(1, 2)) / keep.sum())  # fmt: skip
