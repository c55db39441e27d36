"""ContraCAM: hand-built encoders and maps with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from usssl.downstream.contracam import (ContrastiveScorer, contracam, gradcam, mask_boxes, normalise_maps,
                                        reduce_last_stride, weighted_cam)


class _Pick(nn.Module):
    """The 'last feature map': the frame itself as channel 0 (no downsampling), optionally 1 − frame."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x if self.channels == 1 else torch.cat([x, 1 - x], dim=1)


class _HotEncoder(nn.Module):
    """Feature map = the frame (one channel); embedding = (spatial mean, 0.1)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _Pick()

    def forward(self, x):
        a = self.features(x).mean(dim=(2, 3))  # (B, 1)
        return torch.cat([a, torch.full_like(a, 0.1)], dim=1)


def _square(h=16, w=16, box=(4, 6, 10, 12), value=1.0):
    x = torch.zeros(1, 1, h, w)
    x0, y0, x1, y1 = box
    x[..., y0:y1, x0:x1] = value
    return x


def test_hot_channel_lights_exactly_its_region():
    # frame 0: bright square (mean 36/256); frame 1: a dim one elsewhere. Frame 0 has the largest mean, so
    # raising it turns its projection away from frame 1's: a positive weight, the CAM is the square.
    frames = torch.cat([_square(), _square(box=(0, 0, 4, 4), value=0.3)])
    scorer = ContrastiveScorer(_HotEncoder(), normalise_input=False)
    mask = contracam(scorer, frames, iterations=1)
    lit = mask[0, 0] > 0.5
    assert torch.equal(lit, _square()[0, 0] > 0)
    assert float(mask[0, 0].max()) == 1.0 and float(mask[0, 0][~lit].max()) == 0.0
    # frame 1's weight is negative (raising its mean moves it towards frame 0): clamped to 0, an empty map
    assert float(mask[1].abs().max()) == 0.0


def test_clamping_keeps_only_positive_weights():
    # channel 0 = 1 on R0 ∪ R1 with weight +0.5; channel 1 = 1 on R1 with weight −1; the bottom half is empty
    r0, r1 = _square(8, 8, (0, 0, 4, 4))[0, 0] > 0, _square(8, 8, (4, 0, 8, 4))[0, 0] > 0
    acti = torch.stack([(r0 | r1).float(), r1.float()])[None]  # (1, 2, 8, 8)
    grad = torch.stack([torch.full((8, 8), 0.5), torch.full((8, 8), -1.0)])[None]  # mean = the weight
    clamped = weighted_cam(acti, grad, (8, 8), clamp=True)[0, 0]  # 0.5·A0 → 1 on R0 ∪ R1
    plain = weighted_cam(acti, grad, (8, 8), clamp=False)[0, 0]  # ReLU(0.5·A0 − A1): 0.5 on R0, 0 on R1
    assert torch.equal(clamped, (r0 | r1).float())
    assert torch.equal(plain, r0.float())


def test_normalise_inside_the_region_only():
    cam = torch.arange(16.0).view(1, 1, 4, 4)
    region = torch.zeros(1, 4, 4, dtype=torch.bool)
    region[0, 1:3, 1:3] = True  # values 5, 6, 9, 10 → 0, 0.2, 0.8, 1
    out = normalise_maps(cam, region)[0, 0]
    assert torch.allclose(out[1:3, 1:3], torch.tensor([[0.0, 0.2], [0.8, 1.0]]))
    assert float(out[~region[0]].abs().max()) == 0.0


def _tiny_scorer(seed=0):
    from usssl.config import EncoderConfig
    from usssl.models.encoders import build_encoder

    torch.manual_seed(seed)
    return ContrastiveScorer(build_encoder(EncoderConfig(name="tiny2d", width=4, dim=16)).image_encoder)


def test_refinement_never_shrinks_the_mask():
    scorer = _tiny_scorer()
    frames = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    masks = [contracam(scorer, frames, iterations=t) for t in (1, 2, 3)]
    assert masks[0].shape == (4, 1, 32, 32)
    assert bool((masks[1] >= masks[0]).all()) and bool((masks[2] >= masks[1]).all())
    assert float((masks[2] - masks[0]).sum()) > 0  # the later iterations added something
    # the hooks are gone afterwards and no parameter keeps a gradient
    assert not scorer.encoder.features._forward_hooks and not scorer.encoder.features._backward_hooks
    assert all(p.grad is None for p in scorer.parameters())


def test_region_restricts_the_map():
    scorer = _tiny_scorer()
    frames = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    region = torch.zeros(1, 32, 32, dtype=torch.bool)
    region[0, 8:24, 4:28] = True
    mask = contracam(scorer, frames, region=region, iterations=2)
    assert float(mask[:, :, ~region[0]].abs().max()) == 0.0
    assert torch.allclose(mask.amax(dim=(1, 2, 3)), torch.ones(3))


def test_batch_of_one_is_refused():
    with pytest.raises(ValueError, match=">= 2 frames"):
        contracam(_tiny_scorer(), torch.rand(1, 1, 32, 32))


def test_reduce_last_stride_doubles_the_map():
    scorer = _tiny_scorer()
    finer = reduce_last_stride(scorer.encoder, (32, 32))
    x = torch.rand(2, 1, 32, 32)
    assert scorer.encoder.feature_map(x).shape[-2:] == (2, 2)
    assert finer.feature_map(x).shape[-2:] == (4, 4)
    assert contracam(ContrastiveScorer(finer), x).shape == (2, 1, 32, 32)


def test_boxes_from_a_hand_made_mask():
    mask = np.zeros((32, 32), np.float32)
    mask[10:16, 4:12] = 1.0  # 8 × 6 block: kept
    mask[20:24, 20:24] = 0.9  # 4 × 4 = 16 px > 1% of 1024: kept
    mask[0:2, 28:30] = 1.0  # 2 × 2 = 4 px < 10.24: dropped
    mask[28:32, 0:8] = 0.4  # below 0.5 · max: not an object
    boxes = mask_boxes(mask, threshold=0.5, min_area=0.01, margin=0.2)
    # margin 0.2: 8 × 6 → x 4 − 1.6 … 12 + 1.6, y 10 − 1.2 … 16 + 1.2, rounded outwards
    assert boxes == [(2, 8, 14, 18), (19, 19, 25, 25)]
    assert mask_boxes(np.zeros((8, 8))) == []


class _TwoClass(nn.Module):
    """logits = (mean brightness, mean darkness): a bright frame is class 0, a dark one class 1."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _Pick(channels=2)

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


def test_supervised_gradcam_scores_each_frame_for_its_own_class():
    from monai.visualize import GradCAM

    bright = torch.full((1, 1, 8, 8), 0.6)
    bright[..., 2:4, 2:6] = 1.0  # predicted class 0; its map is the bright channel: the block lights up
    dark = torch.full((1, 1, 8, 8), 0.1)  # predicted class 1
    batch = torch.cat([bright, dark])
    model = _TwoClass()
    assert model(batch).argmax(1).tolist() == [0, 1]
    mixed = gradcam(model, batch, "features")
    alone = gradcam(model, bright, "features")
    assert torch.allclose(mixed[0], alone[0])
    expected = normalise_maps(bright)  # 0 where 0.6, 1 on the block
    assert torch.allclose(mixed[0], expected)
    # MONAI's own GradCAM sums logits[:, [0, 1]] on this batch: frame 0's weights mix both classes, so
    # its map is ReLU(x + (1 − x)) = constant and the block is not found
    stock = GradCAM(nn_module=_TwoClass(), target_layers="features", postprocessing=normalise_maps)(batch.clone().requires_grad_(True))
    assert not torch.allclose(stock[0], expected)
    assert float(stock[0].detach().max()) == 0.0


def test_shard_region_is_the_stored_region_within_the_lit_pixels():
    from types import SimpleNamespace

    from usssl.downstream.localise import shard_region

    frames = np.zeros((2, 6, 8), np.uint8)
    frames[:, 1:5, 2:7] = 100  # lit: rows 1-4, columns 2-6
    stored = np.ones((6, 8), np.uint8)
    stored[:, 5:] = 0  # the stored region stops at column 4
    region = shard_region(SimpleNamespace(frames=frames, region_mask=stored))
    assert region.sum() == 4 * 3 and region[1:5, 2:5].all()
    whole = shard_region(SimpleNamespace(frames=frames, region_mask=np.ones((6, 8), np.uint8)))
    assert whole.sum() == 4 * 5  # a still's stored region is everything: the lit area decides
    apart = np.zeros((6, 8), np.uint8)
    apart[0, 0] = 1
    assert shard_region(SimpleNamespace(frames=frames, region_mask=apart)).sum() == 20  # no overlap: the lit region
