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
