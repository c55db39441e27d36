"""Affine τ: parameters recovered exactly from the matrix; applying τ moves content as documented."""

import math

import pytest
import torch

from usssl.methods.affine import (AffineRanges, apply_affine, centre_crop, denormalise_params,
                                  matrix_to_params, normalise_params, params_to_matrix, sample_affine)


def test_known_transform_matrix_and_exact_recovery():
    params = torch.tensor([[0.1, -0.05, 1.2, 30.0, 10.0]], dtype=torch.float64)
    c, s, k = math.cos(math.radians(30)), math.sin(math.radians(30)), math.tan(math.radians(10))
    # A = 1.2 · [[c, -s], [s, c]] · [[1, k], [0, 1]]
    expected = torch.tensor([[[1.2 * c, 1.2 * (c * k - s), 0.1], [1.2 * s, 1.2 * (s * k + c), -0.05]]],
                            dtype=torch.float64)
    matrix = params_to_matrix(params)
    assert torch.allclose(matrix, expected, atol=1e-12)
    assert torch.allclose(matrix_to_params(expected), params, atol=1e-6)


def test_random_parameters_round_trip_and_ranges():
    ranges = AffineRanges(max_translation=0.2, scale_range=(0.7, 1.3), max_rotation_deg=45, max_shear_deg=20)
    params = sample_affine(1000, ranges, torch.Generator().manual_seed(0)).double()
    lo, hi = ranges.bounds()
    assert (params >= lo).all() and (params <= hi).all()
    assert torch.allclose(matrix_to_params(params_to_matrix(params)), params, atol=1e-6)
    normed = normalise_params(params, ranges)
    assert normed.abs().max() <= 1 and torch.allclose(denormalise_params(normed, ranges), params, atol=1e-9)
    assert torch.equal(normalise_params(torch.stack([lo, hi]), ranges)[:, 0], torch.tensor([-1.0, 1.0]).double())
    fixed = AffineRanges(max_translation=0.0)  # a range of zero width normalises to 0, not NaN
    assert torch.equal(normalise_params(sample_affine(4, fixed), fixed)[:, :2], torch.zeros(4, 2))


def _dot(h=8, w=8, row=3, col=2, frames=3):
    video = torch.zeros(1, 1, frames, h, w)
    video[..., row, col] = 1.0
    return video


def test_translation_moves_content_by_the_fraction_of_the_frame_on_every_frame():
    out = apply_affine(_dot(h=8, w=12), torch.tensor([[0.25, 0.25, 1.0, 0.0, 0.0]]))  # +3 px right, +2 px down
    for t in range(3):
        assert out[0, 0, t].argmax().item() == (3 + 2) * 12 + (2 + 3)
        assert out[0, 0, t].max().item() == pytest.approx(1.0, abs=1e-5)


def test_rotation_is_clockwise_on_screen_and_identity_is_exact():
    video = torch.rand(2, 1, 2, 6, 6)
    assert torch.allclose(apply_affine(video, torch.tensor([[0.0, 0, 1, 0, 0]] * 2)), video, atol=1e-6)
    turned = apply_affine(video, torch.tensor([[0.0, 0, 1, 90, 0]] * 2))
    assert torch.allclose(turned, torch.rot90(video, k=-1, dims=(-2, -1)), atol=1e-5)


def test_scale_enlarges_about_the_centre_and_centre_crop():
    video = torch.zeros(1, 1, 1, 8, 8)
    video[..., 3:5, 3:5] = 1.0  # 2×2 centre square
    big = apply_affine(video, torch.tensor([[0.0, 0, 2.0, 0, 0]]))
    img = big[0, 0, 0]
    assert torch.allclose(img, img.flip(0)) and torch.allclose(img, img.flip(1))  # still centred
    assert img[3:5, 3:5].min() > 0.99 and (img[2:6, 2:6] > 0.5).all()  # the square grew to 4×4 ...
    assert img[[0, 7]].abs().max() < 1e-6 and img[:, [0, 7]].abs().max() < 1e-6  # ... not to the edge
    assert centre_crop(torch.rand(1, 1, 2, 10, 20), 0.5).shape == (1, 1, 2, 5, 10)


def test_valid_region_by_hand_and_filled_by_every_transform():
    from usssl.methods.affine import valid_region

    # translation only, ±20% of 8 px = ±1.6 px: a pixel centre x is read from x ∓ 1.6, and bilinear needs it
    # within ±3.5 (the outer pixel centres): |x| ≤ 1.9, i.e. the 4 central columns (and rows)
    shift = AffineRanges(max_translation=0.2, scale_range=(1.0, 1.0), max_rotation_deg=0, max_shear_deg=0)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = True
    assert torch.equal(valid_region(shift, 8, 8), expected)
    # scale 0.5 only: x is read from 2x, |2x| ≤ 3.5 → |x| ≤ 1.75: again the 4 central pixel centres
    half = AffineRanges(max_translation=0.0, scale_range=(0.5, 1.0), max_rotation_deg=0, max_shear_deg=0)
    assert torch.equal(valid_region(half, 8, 8), expected)
    # the default ranges: every drawn τ fills the region from inside the frame, and the region is tight
    ranges = AffineRanges()
    region = valid_region(ranges, 32, 40)
    moved = apply_affine(torch.ones(4000, 1, 1, 32, 40), sample_affine(4000, ranges, torch.Generator().manual_seed(0)))
    assert (moved[:, 0, 0][:, region] - 1).abs().max() < 1e-5
    assert (moved[:, 0, 0][:, ~region] < 1 - 1e-5).any(dim=0).float().mean() > 0.85
    assert 0.15 < region.float().mean() < 0.3
