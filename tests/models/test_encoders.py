"""The encoder interface: (B, C, T, H, W) -> (B, D); 2-D encoders average over time."""

import torch

from usssl.config import EncoderConfig
from usssl.models.encoders import build_encoder, build_speech_encoder


def test_frame_encoder_shape_and_time_average():
    enc = build_encoder(EncoderConfig(width=4, dim=12)).eval()
    x = torch.rand(2, 1, 3, 32, 32)
    out = enc(x)
    assert out.shape == (2, 12) and enc.out_dim == 12
    per_frame = torch.stack([enc(x[:, :, t:t + 1]) for t in range(3)], dim=1).mean(1)
    assert torch.allclose(out, per_frame, atol=1e-5)


def test_speech_encoder_shape():
    enc = build_speech_encoder("tiny_spec", 4, 10)
    assert enc(torch.rand(3, 1, 32, 32)).shape == (3, 10)


def test_se_resnext50_matches_the_reference_size_and_dilation():
    from usssl.models.seresnext import se_resnext50

    net = se_resnext50(in_channels=1)
    n_params = sum(p.numel() for p in net.parameters())
    # SE-ResNeXt-50 32×4d has 27.56 M parameters with its 1000-class FC (2.05 M) and RGB stem
    assert 25.4e6 < n_params < 25.6e6
    half = se_resnext50(width=0.5)
    assert half.out_dim == 1024 and net.out_dim == 2048
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        assert half.feature_map(x).shape == (1, 1024, 4, 6)  # output stride 16: last stage dilated
        assert se_resnext50(width=0.5, dilate_last=0).feature_map(x).shape[2:] == (2, 3)  # stride 32
        assert se_resnext50(width=0.5, dilate_last=2).feature_map(x).shape[2:] == (8, 12)  # stride 8


def test_video_encoder_by_name():
    enc = build_encoder(EncoderConfig(name="se_resnext50_half"))
    with torch.no_grad():
        assert enc.eval()(torch.rand(2, 1, 2, 32, 32)).shape == (2, 1024)
    assert enc.out_dim == 1024


def test_resnet2d_matches_torchvision_sizes_with_a_single_channel_stem():
    from usssl.models.resnet2d import resnet2d

    r18, r50 = resnet2d("resnet18"), resnet2d("resnet50")
    # torchvision: ResNet-18 11,689,512 and ResNet-50 25,557,032 parameters with the RGB stem and
    # the 1000-class fc; one input channel removes 2·64·7·7 stem weights, dropping fc removes
    # 512·1000 + 1000 (ResNet-18) and 2048·1000 + 1000 (ResNet-50)
    assert sum(p.numel() for p in r18.parameters()) == 11_689_512 - 2 * 64 * 49 - 513_000
    assert sum(p.numel() for p in r50.parameters()) == 25_557_032 - 2 * 64 * 49 - 2_049_000
    assert r18.stem[0].in_channels == 1 and (r18.out_dim, r50.out_dim) == (512, 2048)
    with torch.no_grad():
        assert r18.eval().feature_map(torch.rand(1, 1, 112, 112)).shape == (1, 512, 4, 4)  # output stride 32


def test_resnet18_video_encoder_averages_frames():
    enc = build_encoder(EncoderConfig(name="resnet18")).eval()
    x = torch.rand(2, 1, 2, 64, 64)
    with torch.no_grad():
        out = enc(x)
        per_frame = (enc(x[:, :, :1]) + enc(x[:, :, 1:])) / 2
    assert out.shape == (2, 512) and enc.out_dim == 512
    assert torch.allclose(out, per_frame, atol=1e-5)
