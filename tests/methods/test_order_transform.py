"""OrderTransformModule: both variants train on tiny clips, log their terms, reach the encoder."""

import pytest
import torch
from pydantic import Field

from usssl.config import PretrainConfig
from usssl.errors import ConfigError, DataError
from usssl.methods.configs import OrderTransformConfig
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
    assert module.encoder.image_encoder.fc.weight.grad.abs().sum() > 0
    assert module.encoder.image_encoder.features[0].weight.grad.abs().sum() > 0


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
        assert module.order_head[0].in_features == 4 * 16  # per-frame features concatenated in order
    assert hasattr(siamese, "order_branch") and hasattr(siamese, "transform_branch") and not hasattr(siamese, "joint")
    assert siamese.transform_branch[0].in_features == 2 * 16  # [f(clip), f(τ clip)]
    assert hasattr(disentangled, "joint") and not hasattr(disentangled, "order_branch")
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
