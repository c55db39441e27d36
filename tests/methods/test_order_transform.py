"""OrderTransformModule: both variants train on tiny clips, log their terms, reach the encoder."""

import pytest
import torch
from pydantic import Field

from usssl.config import PretrainConfig
from usssl.errors import ConfigError, DataError
from usssl.config.methods import OrderTransformConfig
from usssl.methods.order import sample_orders
from usssl.methods.order_transform import OrderTransformModule
from usssl.models.video3d import build_video3d

LOGGED = {"train/loss", "train/order_ce", "train/order_acc", "train/transform_reg", "train/embedding_std"}


class Cfg(PretrainConfig):
    """PretrainConfig with the field the lead adds."""

    order_transform: OrderTransformConfig = Field(default_factory=OrderTransformConfig)


def cfg(**ot):
    return Cfg.model_validate({"encoder": {"width": 4, "dim": 16}, "order_transform": {"branch_dim": 16, **ot}})


def step(module, video):
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    return module.training_step({"video": video}, 0), logged


@pytest.mark.parametrize("variant", ["siamese", "disentangled"])
@pytest.mark.parametrize("loss_norm", ["l1", "l2"])
def test_training_step_logs_every_term_and_reaches_the_encoder(variant, loss_norm):
    torch.manual_seed(0)
    module = OrderTransformModule(cfg(variant=variant, loss_norm=loss_norm, crop=0.75))
    loss, logged = step(module, torch.rand(6, 1, 4, 32, 32))
    loss.backward()
    assert set(logged) == LOGGED and torch.isfinite(loss)
    assert logged["train/loss"] == pytest.approx(logged["train/order_ce"] + logged["train/transform_reg"], rel=1e-5)
    assert 0 <= logged["train/order_acc"] <= 1 and 0 < logged["train/embedding_std"] < 1
    image = module.encoder.image_encoder
    assert image.features[0].weight.grad.abs().sum() > 0  # the shared trunk
    assert image.features[18].weight.grad.abs().sum() > 0  # the last stage: the order branch's own (Siamese)
    if variant == "siamese":  # the order branch reads the grid-pooled map, before the encoder's fc
        assert image.fc.weight.grad is None and module.transform_tail[0][0].weight.grad.abs().sum() > 0
    else:
        assert image.fc.weight.grad.abs().sum() > 0


def test_siamese_and_disentangled_shapes_and_branches():
    torch.manual_seed(0)
    clip = torch.randn(5, 1, 4, 32, 32)
    perms, _ = sample_orders(5, 4)
    params = torch.zeros(5, 5)
    params[:, 2] = 1.0
    siamese, disentangled = OrderTransformModule(cfg()), OrderTransformModule(cfg(variant="disentangled"))
    for module in (siamese, disentangled):
        logits, pred, feats = module.tasks(clip, perms, params)
        assert logits.shape == (5, 12) and pred.shape == (5, 5) and feats.shape == (5, 16)
        assert module.order_head[0].in_features == 6 * 16  # the 4·3/2 frame pairs, concatenated in order
    for module in (siamese, disentangled):
        assert module.transform_branch[0].in_features == 2 * 16  # [f(clip), f(τ clip)]
    assert hasattr(siamese, "transform_tail") and not hasattr(disentangled, "transform_tail")
    # the Siamese transform branch never sees the shuffled clip: its prediction ignores the order
    siamese.eval()
    with torch.no_grad():
        _, a, _ = siamese.tasks(clip, perms, params)
        _, b, _ = siamese.tasks(clip, perms.flip(1), params)
    assert torch.allclose(a, b, atol=1e-5)


def test_order_weights_and_clip_fusion_with_a_3d_encoder():
    torch.manual_seed(0)
    encoder = build_video3d("tiny3d", width=4, dim=16)
    module = OrderTransformModule(cfg(fusion="clip", transform_weight=0.0), encoder=encoder)
    loss, logged = step(module, torch.rand(4, 1, 4, 32, 32))
    loss.backward()
    assert logged["train/loss"] == pytest.approx(logged["train/order_ce"], rel=1e-6)
    assert module.order_head[0].in_features == 16 and module.encoder.stem[0].weight.grad is not None


def test_user_errors():
    with pytest.raises(ConfigError, match="fusion"):
        OrderTransformModule(cfg(fusion="clip"))  # a 2-D encoder cannot see the order of a whole clip
    with pytest.raises(DataError, match="clip_frames"):
        step(OrderTransformModule(cfg()), torch.rand(2, 1, 3, 32, 32))
    with pytest.raises(ValueError, match="scale_range"):
        OrderTransformConfig(scale_range=(1.2, 0.8))


def test_siamese_order_features_are_pooled_feature_maps_per_frame():
    torch.manual_seed(0)
    module = OrderTransformModule(cfg(order_grid=2)).eval()
    image = module.encoder.image_encoder  # tiny2d, width 4: last map has 4·4 = 16 channels
    assert module.order_branch[0].in_features == 16 * 2 * 2  # C'·g², not the pooled D = 16
    assert OrderTransformModule(cfg(order_grid=0)).order_branch[0].in_features == 16
    assert OrderTransformModule(cfg(variant="disentangled", order_grid=2)).order_branch[0].in_features == 16 * 2 * 2
    clip = torch.rand(3, 1, 4, 64, 64)
    with torch.no_grad():
        frames = clip.transpose(1, 2).reshape(12, 1, 64, 64)  # (B·T, C, H, W)
        grids = module._order_feature(image.feature_map(frames)).view(3, 4, -1)  # (B, T, C'·g²)
        fmap = image.feature_map(clip[:, :, 2])  # frame 2 alone: (3, 16, 4, 4) at 64 px
    by_hand = fmap.reshape(3, 16, 2, 2, 2, 2).mean(dim=(3, 5))  # 2 × 2 blocks of the 4 × 4 map averaged
    assert grids.shape == (3, 4, 64)
    assert torch.allclose(grids[:, 2], by_hand.reshape(3, -1), atol=1e-6)
    # the grid keeps position: a square moved from the left half to the right half changes the grid
    # features, while their global average (what the pooled encoder output sees) hardly moves
    left = torch.zeros(1, 1, 4, 64, 64)
    left[..., 8:24, 8:24] = 1.0
    right = left.roll(shifts=32, dims=-1)  # a multiple of the encoder stride 16 (padding still leaks)
    module.train()  # batch statistics: activations of order 1 (random running stats are tiny in eval)
    with torch.no_grad():
        both = torch.cat([left, right]).transpose(1, 2).reshape(8, 1, 64, 64)
        g_left, g_right = (g.reshape(4, 16, 4) for g in module._order_feature(image.feature_map(both)).chunk(2))
    assert (g_left - g_right).abs().mean() > 2 * (g_left.mean(-1) - g_right.mean(-1)).abs().mean()


def test_the_branches_need_an_encoder_with_stages():
    class NoStages(torch.nn.Module):  # a custom encoder: nothing to split into a trunk and branches
        out_dim = 8

        def forward(self, x):
            return x.mean(dim=(2, 3, 4)).expand(-1, 8)

    for variant in ("siamese", "disentangled"):
        with pytest.raises(ConfigError, match="no stem and stages"):
            OrderTransformModule(cfg(variant=variant, order_grid=0), encoder=NoStages())


def test_order_head_sees_every_frame_pair_in_position_order():
    torch.manual_seed(0)
    module = OrderTransformModule(cfg()).eval()
    g = torch.randn(2, 4, 16)  # per-frame order features (B, n, h)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    by_hand = torch.cat([module.pair_fc(torch.cat([g[:, i] - g[:, j], (g[:, i] - g[:, j]).abs()], dim=1))
                         for i, j in pairs], dim=1)
    with torch.no_grad():
        assert torch.allclose(module._order_logits(g), module.order_head(by_hand), atol=1e-6)
    flat = OrderTransformModule(cfg(order_pairs=False))
    assert flat.order_head[0].in_features == 4 * 16 and not hasattr(flat, "pair_fc")
