"""3-D encoders: the interface, the published sizes, and where each one pools time."""

import pytest
import torch

from usssl.models.video3d import VIDEO3D_NAMES, build_video3d


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def nets():
    """The paper-size networks, built once (about 33 M parameters each)."""
    torch.manual_seed(0)
    return {name: build_video3d(name).eval() for name in ("r3d_18", "r2plus1d_18", "r3d_50")}


@pytest.mark.parametrize("name,out_dim", [("r3d_18", 512), ("r2plus1d_18", 512), ("r3d_50", 2048)])
def test_paper_networks_interface(nets, name, out_dim):
    enc = nets[name]
    with torch.no_grad():
        out = enc(torch.rand(2, 1, 2, 16, 16))
    assert out.shape == (2, out_dim) and enc.out_dim == out_dim and torch.isfinite(out).all()
    assert enc.stem[0].in_channels == 1


def test_tiny3d_interface_and_gradient_to_the_stem():
    enc = build_video3d("tiny3d", width=4, dim=24)
    out = enc(torch.rand(2, 1, 4, 32, 32))
    assert out.shape == (2, 24) and enc.out_dim == 24 and enc.stem[0].in_channels == 1
    out.sum().backward()
    assert enc.stem[0].weight.grad.abs().sum() > 0


def test_published_sizes(nets):
    # R3D-18 without its classifier: 33,166,272 parameters with an RGB stem (Tran et al., CVPR 2018);
    # one input channel removes 2 × 64 × 3×7×7 stem weights
    assert n_params(nets["r3d_18"]) == 33_166_272 - 2 * 64 * 3 * 7 * 7
    # R(2+1)D keeps the parameter count of the full 3-D convolutions (Sec. 3.5)
    r3d, r21d = n_params(nets["r3d_18"]), n_params(nets["r2plus1d_18"])
    assert abs(r21d - r3d) / r3d < 0.01
    # slow-only ResNet-50 without its classifier: ≈ 31.6 M (SlowFast's Slow pathway, Feichtenhofer et al.),
    # plus CVRL's 5-frame stem: 64 × 1 × (5 − 1) × 7 × 7 = 12,544 weights more than a 1×7×7 one
    assert 31.5e6 < n_params(nets["r3d_50"]) < 31.7e6
    assert nets["r3d_50"].stem[0].weight.numel() == 64 * 1 * 5 * 7 * 7


def test_temporal_layout_and_order_sensitivity(nets):
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        assert nets["r3d_50"].feature_volume(x).shape[2] == 4  # only CVRL's stem strides in time: 8 → 4
        assert nets["r3d_18"].feature_volume(x).shape[2] == 1  # R3D halves T in stages 2–4
    kernels = [b.body[0].kernel_size[0] for stage in nets["r3d_50"].stages for b in stage]
    assert kernels == [1] * 7 + [3] * 9  # temporal kernels only in res4 and res5
    tiny = build_video3d("tiny3d", width=4, dim=8).eval()
    with torch.no_grad():  # a 3-D encoder sees frame order (a 2-D one averages it away)
        assert not torch.allclose(tiny(x), tiny(x.flip(2)), atol=1e-4)


def test_unknown_name():
    with pytest.raises(ValueError, match="tiny3d"):
        build_video3d("r3d_34")
    assert set(VIDEO3D_NAMES) == {"r3d_18", "r2plus1d_18", "r3d_50", "tiny3d"}


def test_r3d_50_stem_is_cvrls_5x7x7_stride_2(nets):
    """tensorflow/models video_ssl (cvrl_pretrain_k600_200ep.yaml): stem_conv_temporal_kernel_size 5,
    stem_conv_temporal_stride 2, stem_pool_temporal_stride 1; 16 × 224² in → 8 × 56² after the stem
    and max-pool, 8 × 7² × 2048 out of res5 (spatial /32, temporal /2)."""
    conv, pool = nets["r3d_50"].stem[0], nets["r3d_50"].stem[3]
    assert conv.kernel_size == (5, 7, 7) and conv.stride == (2, 2, 2) and conv.padding == (2, 3, 3)
    assert pool.kernel_size == (1, 3, 3) and pool.stride == (1, 2, 2)
    with torch.no_grad():
        assert nets["r3d_50"].stem(torch.rand(1, 1, 16, 224, 224)).shape == (1, 64, 8, 56, 56)
        assert nets["r3d_50"].feature_volume(torch.rand(1, 1, 16, 64, 64)).shape == (1, 2048, 8, 2, 2)
        for t in (1, 2, 5, 15):  # "same" padding as in TF: ⌈T / 2⌉ frames
            assert nets["r3d_50"].stem(torch.rand(1, 1, t, 16, 16)).shape[2] == (t + 1) // 2
