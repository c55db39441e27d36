"""The frame-level contrastive method and its object-aware options (crop, background mixup)."""

import numpy as np
import pytest
import torch

from usssl.config import PretrainConfig
from usssl.data.object_aware import BackgroundMixup, background_only, crop_to_boxes, mask_rectangle
from usssl.methods.frame_contrastive import FrameContrastiveModule, projector_from_meta


def cfg(**fc):
    return PretrainConfig.model_validate({"method": "frame_contrastive", "encoder": {"width": 4, "dim": 16},
                                          "projection_dim": 8, "frame_contrastive": fc})


def step(module, batch):
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    return module.training_step(batch, 0), logged


def test_training_step_reaches_the_encoder_and_the_projector_is_saved():
    torch.manual_seed(0)
    module = FrameContrastiveModule(cfg())
    loss, logged = step(module, {"video": torch.rand(6, 1, 1, 32, 32)})
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert set(logged) == {"train/loss", "train/nt_xent", "train/positive_cosine", "train/embedding_std"}
    assert module.encoder.image_encoder.features[0].weight.grad.abs().sum() > 0
    head = projector_from_meta(module.checkpoint_extras())
    z = torch.rand(3, 16)
    module.head.eval(), head.eval()
    assert torch.allclose(head(z), module.head(z))


def test_object_options_need_the_maps():
    with pytest.raises(ValueError, match="objects_from"):
        cfg(object_crop=True)


def test_crop_to_a_box_and_the_whole_frame_box():
    frame = torch.arange(64.0).view(1, 1, 8, 8)
    whole = crop_to_boxes(frame, torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
    assert torch.allclose(whole, frame, atol=1e-4)
    # the left half (x 0..4) stretched to 8 columns: pixel centres land between source pixels
    half = crop_to_boxes(frame, torch.tensor([[0.0, 0.0, 4.0, 8.0]]))
    assert half.shape == (1, 1, 8, 8)
    # output column j samples x = (j + 0.5) / 2 px, i.e. source index (j + 0.5) / 2 − 0.5
    assert torch.allclose(half[0, 0, :, 1], frame[0, 0, :, 0] + 0.25, atol=1e-4)  # index 0.25
    assert torch.allclose(half[0, 0, :, 7], frame[0, 0, :, 3] + 0.25, atol=1e-4)  # index 3.25


def test_background_only_tiles_the_largest_strip_over_the_object():
    frame = torch.zeros(1, 6, 6)
    frame[:, :, 4:] = torch.tensor([1.0, 2.0])  # columns 4, 5 (right strip) hold 1, 2
    hard = np.zeros((6, 6), bool)
    hard[1:5, 0:4] = True  # the object: rows 1..4, columns 0..3
    assert mask_rectangle(hard) == (1, 5, 0, 4)
    # strips: top 1·6, bottom 1·6, left 0, right 2·6 = 12 → the right strip, tiled: columns 1, 2, 1, 2, ...
    out = background_only(frame, hard)
    assert torch.equal(out[0, 1:5, 0:4], torch.tensor([1.0, 2.0, 1.0, 2.0]).expand(4, 4))
    assert torch.equal(out[0, 0], frame[0, 0]) and torch.equal(out[0, 5], frame[0, 5])
    assert background_only(frame, np.ones((6, 6), bool)) is None  # no background left


def test_background_mixup_keeps_the_object_and_fills_from_the_fifo():
    mix = BackgroundMixup(threshold=0.2, p=1.0, queue_size=2, seed=0)
    frames = torch.stack([torch.full((1, 4, 4), 0.5), torch.full((1, 4, 4), 0.75)])
    masks = torch.zeros(2, 1, 4, 4)
    masks[:, :, 1:3, 1:3] = 1.0
    out = mix(frames, masks)
    assert torch.equal(out[:, :, 1:3, 1:3], frames[:, :, 1:3, 1:3])  # the object stays
    backgrounds = {0.5, 0.75}
    assert {float(v) for v in out[:, :, 0, 0].flatten()} <= backgrounds
    assert len(mix.queue) == 2
    mix.p = 0.0  # no new backgrounds: the FIFO's are used
    out = mix(frames, masks)
    assert {float(v) for v in out[:, :, 0, 0].flatten()} <= backgrounds
    assert torch.equal(out[:, :, 1:3, 1:3], frames[:, :, 1:3, 1:3])
