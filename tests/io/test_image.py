"""Still images as one-frame recordings, and the anatomy mask files beside a recording."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from usssl.errors import DataError
from usssl.io.image import read_image
from usssl.io.masks import anatomy_mask_file, is_mask_image, read_anatomy_masks
from usssl.io.registry import reader_for, recording_stem


def _ramp(h: int = 6, w: int = 8) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) * 5 % 256).astype(np.uint8)


def test_grey_png_is_one_frame_as_stored(tmp_path):
    image = _ramp()
    cv2.imwrite(str(tmp_path / "a.png"), image)
    rec = read_image(tmp_path / "a.png", tmp_path)
    assert (rec.source, rec.n_frames, rec.height, rec.width, rec.fps) == ("a.png", 1, 6, 8, 1.0)
    assert rec.timestamps.tolist() == [0.0] and rec.meta["photometric"] == "MONOCHROME2"
    blocks = list(rec.iter_frames(4))
    assert len(blocks) == 1 and blocks[0].shape == (1, 6, 8) and np.array_equal(blocks[0][0], image)
    assert reader_for(tmp_path / "a.png")[0] == "image" and recording_stem(tmp_path / "x.JPEG") == "x"


def test_rgb_with_equal_channels_is_grey_colour_is_luma_or_rgb(tmp_path):
    grey = _ramp()
    cv2.imwrite(str(tmp_path / "g.png"), np.stack([grey] * 3, -1))
    assert read_image(tmp_path / "g.png").meta["photometric"] == "MONOCHROME2"
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 2] = 200  # pure red
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    rec = read_image(tmp_path / "c.png")
    assert rec.meta["photometric"] == "RGB"
    assert next(rec.iter_frames())[0].tolist() == [[60, 60], [60, 60]]  # BT.601: round(0.299 * 200) = 60
    rgb = next(rec.as_colour().iter_frames())
    assert rgb.shape == (1, 2, 2, 3) and rgb[0, 0, 0].tolist() == [200, 0, 0]


def test_16_bit_png_maps_to_8_bits_and_junk_is_a_data_error(tmp_path):
    cv2.imwrite(str(tmp_path / "d.png"), np.array([[0, 257, 65535]], np.uint16))
    assert next(read_image(tmp_path / "d.png").iter_frames())[0].tolist() == [[0, 1, 255]]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="not a readable image"):
        read_image(tmp_path / "bad.png")


def test_mask_files_are_found_beside_the_recording(tmp_path):
    (tmp_path / "000_HC.png").write_bytes(b"")
    assert anatomy_mask_file(tmp_path / "000_HC.png", "000_HC") is None
    (tmp_path / "000_HC_Annotation.png").write_bytes(b"")
    assert anatomy_mask_file(tmp_path / "000_HC.png", "000_HC") == tmp_path / "000_HC_Annotation.png"
    (tmp_path / "000_HC_mask.png").write_bytes(b"")  # _mask comes first
    assert anatomy_mask_file(tmp_path / "000_HC.png", "000_HC") == tmp_path / "000_HC_mask.png"
    (tmp_path / "videos").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "scan_000.npz").write_bytes(b"")  # the synthetic corpus's layout
    assert anatomy_mask_file(tmp_path / "videos" / "scan_000.mp4", "scan_000") == tmp_path / "masks" / "scan_000.npz"
    assert anatomy_mask_file(tmp_path / "videos" / "scan_001.mp4", "scan_001") is None
    assert is_mask_image(tmp_path / "000_HC_Annotation.png") and is_mask_image(tmp_path / "000_HC_mask.png")
    assert not is_mask_image(tmp_path / "000_HC.png")
    (tmp_path / "lone_mask.png").write_bytes(b"")  # no image "lone" beside it: an image like any other
    assert not is_mask_image(tmp_path / "lone_mask.png")


def test_an_outline_mask_is_filled(tmp_path):
    outline = np.zeros((20, 30), np.uint8)
    cv2.ellipse(outline, (15, 10), (10, 6), 0, 0, 360, 255, 1)  # HC18 draws the head's outline
    cv2.imwrite(str(tmp_path / "a_Annotation.png"), np.stack([outline] * 3, -1))
    outside = outline.copy()
    cv2.floodFill(outside, None, (0, 0), 128)  # the background: reached from a corner
    masks = read_anatomy_masks(tmp_path / "a_Annotation.png", 1, 20, 30)
    assert masks.shape == (1, 20, 30) and masks.dtype == np.uint8
    assert np.array_equal(masks[0], (outside != 128).astype(np.uint8))  # the outline and its inside
    assert masks[0, 10, 15] == 1 and masks.sum() > 3 * (outline > 0).sum()
    with pytest.raises(DataError, match="2 frame"):
        read_anatomy_masks(tmp_path / "a_Annotation.png", 2, 20, 30)
    np.save(tmp_path / "m.npy", np.ones((3, 2, 2), np.uint8) * 9)
    assert read_anatomy_masks(tmp_path / "m.npy", 3, 2, 2).max() == 1


def test_find_recordings_skips_mask_images(tmp_path):
    from usssl.data.sources import find_recordings

    for name in ("a.png", "a_mask.png", "b.jpg", "b_Annotation.png", "c_mask.png"):
        cv2.imwrite(str(tmp_path / name), _ramp())
    found = sorted(p.name for p, _ in find_recordings([tmp_path]))
    assert found == ["a.png", "b.jpg", "c_mask.png"]  # c_mask.png is the mask of nothing: an image
