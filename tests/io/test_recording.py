"""FrameBlocks: frames grouped into blocks of at most ``chunk``, ``limit`` in total, each its own array."""

from __future__ import annotations

import numpy as np
import pytest

from usssl.io.recording import FrameBlocks


@pytest.mark.parametrize(("chunk", "limit", "sizes"), [(4, 10, [4, 4, 2]), (4, 7, [4, 3]), (20, 10, [10]),
                                                     (3, 100, [3, 3, 3, 1])])  # fmt: skip
def test_blocks_hold_every_frame_in_order_up_to_the_limit(chunk, limit, sizes):
    frames = (np.full((2, 3), i, np.uint8) for i in range(10))
    grouper = FrameBlocks(chunk, limit)
    blocks = list(grouper(frames))  # kept together: a later block must not overwrite an earlier one
    assert [len(b) for b in blocks] == sizes and grouper.count == sum(sizes)
    flat = np.concatenate(blocks)
    assert flat.shape == (sum(sizes), 2, 3) and flat.dtype == np.uint8
    np.testing.assert_array_equal(flat[:, 0, 0], np.arange(sum(sizes)))


def test_colour_frames_and_no_frames():
    colour = [np.full((2, 2, 3), i, np.uint8) for i in range(3)]
    (block,) = FrameBlocks(8, 8)(iter(colour))
    assert block.shape == (3, 2, 2, 3) and block[2].max() == 2
    assert list(FrameBlocks(8, 8)(iter([]))) == []
