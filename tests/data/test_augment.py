"""ClipAugment: identity draws change nothing, flips are exact, every frame gets the same draw."""

import torch

from usssl.data.augment import AugmentParams, ClipAugment


def params(b, **changes):
    base = dict(flip=torch.zeros(b, dtype=torch.bool), angle=torch.zeros(b), scale_x=torch.ones(b),
                scale_y=torch.ones(b), shift_x=torch.zeros(b), shift_y=torch.zeros(b), gamma=torch.ones(b),
                brightness=torch.zeros(b))
    base.update(changes)
    return AugmentParams(**base)


def test_identity_and_exact_flip():
    video = torch.rand(2, 1, 3, 8, 10)
    assert torch.allclose(ClipAugment.apply(video, params(2)), video, atol=1e-5)
    flipped = ClipAugment.apply(video, params(2, flip=torch.tensor([True, False])))
    assert torch.allclose(flipped[0], video[0].flip(-1), atol=1e-5)
    assert torch.allclose(flipped[1], video[1], atol=1e-5)


def test_gamma_and_brightness_hand_computed():
    video = torch.full((1, 1, 1, 4, 4), 0.25)
    out = ClipAugment.apply(video, params(1, gamma=torch.tensor([2.0]), brightness=torch.tensor([0.1])))
    assert torch.allclose(out[0, 0, 0, 1:3, 1:3], torch.tensor(0.25**2 + 0.1), atol=1e-5)


def test_one_draw_per_clip_applied_to_every_frame():
    frame = torch.rand(1, 1, 1, 16, 16)
    clip = frame.repeat(4, 1, 5, 1, 1)  # 4 clips of 5 identical frames
    out = ClipAugment(max_rotation_deg=30)(clip, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, out[:, :, :1].expand_as(out))  # frames within a clip stay identical
    assert not torch.allclose(out[0], out[1])  # clips get different draws
    assert out.min() >= 0 and out.max() <= 1


def test_warp_clips_identity_and_a_half_width_shift():
    from usssl.data.augment import warp_clips

    video = torch.rand(2, 1, 3, 4, 6)
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).repeat(2, 1, 1)
    assert torch.allclose(warp_clips(video, eye), video, atol=1e-6)
    shift = eye.clone()
    shift[:, 0, 2] = 1.0  # sample from x + 1 (normalised): half the width to the right
    out = warp_clips(video, shift, "zeros")
    assert torch.allclose(out[..., :3], video[..., 3:], atol=1e-6)  # every frame moved alike
    assert torch.count_nonzero(out[..., 4:]) == 0  # beyond the right edge: zero padding
