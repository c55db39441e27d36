"""feature_map(x: (B, C, T, H, W)) -> (B, C', h, w) on every video encoder, and forward pools it."""

import pytest
import torch

from usssl.config import EncoderConfig
from usssl.models.encoders import FrameEncoder, build_encoder
from usssl.models.seresnext import SEResNeXt
from usssl.models.video3d import ResNet3d, build_video3d


def small(name: str) -> torch.nn.Module:
    """Each encoder family at a tiny size (the paper sizes build the same classes, only wider/deeper)."""
    if name == "tiny2d":
        return build_encoder(EncoderConfig(width=4, dim=8))
    if name == "se_resnext":  # se_resnext50(_half): same class, (3, 4, 6, 3) blocks
        return FrameEncoder(SEResNeXt(layers=(1, 1, 1, 1), width=0.5, groups=4))
    if name == "resnet18":
        return build_encoder(EncoderConfig(name="resnet18"))
    if name == "tiny3d":
        return build_video3d("tiny3d", width=4, dim=8)
    kind = {"r3d_18": "r3d", "r2plus1d_18": "r2plus1d", "r3d_50": "slow"}[name]
    return ResNet3d(kind, (1, 1, 1, 1), width=4)


# family, input (T, H, W), expected (C', h, w)
CASES = [
    ("tiny2d", (3, 32, 48), (16, 2, 3)),  # 4 stride-2 blocks: /16, 4·width channels
    ("se_resnext", (2, 64, 96), (1024, 4, 6)),  # output stride 16 (last stage dilated), 4·(32·8) channels
    ("resnet18", (2, 64, 64), (512, 2, 2)),  # output stride 32
    ("tiny3d", (4, 32, 32), (32, 2, 2)),  # stem /2, stages 2–4 /2 each; 8·width channels
    ("r3d_18", (4, 32, 32), (32, 2, 2)),
    ("r2plus1d_18", (4, 32, 32), (32, 2, 2)),
    ("r3d_50", (2, 64, 64), (128, 2, 2)),  # slow-only: stem /2, max-pool /2, stages /8; 4·8·width
]


@pytest.mark.parametrize("name,thw,expected", CASES, ids=[c[0] for c in CASES])
def test_feature_map_shape_and_forward_pools_it(name, thw, expected):
    torch.manual_seed(0)
    enc = small(name).eval()
    x = torch.rand(2, 1, *thw)
    with torch.no_grad():
        fmap = enc.feature_map(x)
        assert fmap.shape == (2, *expected)
        head = enc.fc if hasattr(enc, "fc") else getattr(enc.image_encoder, "fc", torch.nn.Identity())
        assert torch.allclose(enc(x), head(fmap.mean(dim=(2, 3))), atol=1e-5)


def test_2d_feature_map_is_the_time_average_of_per_frame_maps():
    enc = build_encoder(EncoderConfig(width=4, dim=8)).eval()
    x = torch.rand(2, 1, 3, 32, 32)
    with torch.no_grad():
        per_frame = torch.stack([enc.image_encoder.feature_map(x[:, :, t]) for t in range(3)]).mean(0)
        assert torch.allclose(enc.feature_map(x), per_frame, atol=1e-6)
        first = enc.feature_map(x[:, :, :1])
        assert (first - per_frame).abs().max() > 0.01 * per_frame.abs().max()  # not just frame 0


def test_3d_feature_map_pools_the_feature_volume_over_time():
    enc = build_video3d("tiny3d", width=4, dim=8).eval()
    x = torch.rand(1, 1, 8, 32, 32)
    with torch.no_grad():
        volume = enc.feature_volume(x)
        assert volume.shape == (1, 32, 1, 2, 2)  # R3D halves T in stages 2–4: 8 → 1
        assert torch.allclose(enc.feature_map(x), volume.mean(dim=2))
        assert small("r3d_50").eval().feature_volume(x).shape[2] == 4  # slow-only: CVRL's stem halves T, then kept


def test_feature_map_carries_gradient_to_the_stem():
    enc = build_encoder(EncoderConfig(name="tiny3d", width=4, dim=8))
    enc.feature_map(torch.rand(2, 1, 2, 32, 32)).square().mean().backward()
    assert enc.stem[0].weight.grad.abs().sum() > 0
