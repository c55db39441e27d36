"""ISBI'20 variants: what the Siamese branches share, what transfers, equal heads, no border cue."""

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field

from usssl.config import PretrainConfig
from usssl.config.methods import OrderTransformConfig
from usssl.errors import ConfigError
from usssl.methods.affine import apply_affine, sample_affine
from usssl.methods.order import sample_orders
from usssl.methods.order_transform import OrderTransformModule
from usssl.models.encoders import build_encoder
from usssl.models.video3d import build_video3d


class Cfg(PretrainConfig):
    order_transform: OrderTransformConfig = Field(default_factory=OrderTransformConfig)


def cfg(**ot):
    return Cfg.model_validate({"encoder": {"width": 4, "dim": 16}, "order_transform": {"branch_dim": 16, **ot}})


def grads(module, loss):
    module.zero_grad()
    loss.backward(retain_graph=True)
    return {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_siamese_shares_every_stage_but_the_last_by_default():
    module = OrderTransformModule(cfg())
    image = module.encoder.image_encoder
    assert module.shared_depth == 3 and len(module.parts.stages) == 4  # tiny2d: 4 stages, the last not shared
    assert module.parts.stages[0][0] is image.features[0]  # the trunk is the encoder's own modules
    tail = module.transform_tail[0]  # the transform branch's copy of stage 4: same shapes, other tensors
    assert [p.shape for p in tail.parameters()] == [p.shape for p in module.parts.stages[3].parameters()]
    own = {id(p) for p in module.encoder.parameters()}
    assert not any(id(p) in own for p in module.transform_tail.parameters())
    assert not any(id(p) in own for p in module.transform_fc.parameters())
    assert not hasattr(OrderTransformModule(cfg(shared_depth=4)), "transform_tail")  # 4: the whole encoder
    assert len(OrderTransformModule(cfg(shared_depth=0)).transform_tail) == 4  # 0: only the stem (none here)
    with pytest.raises(ConfigError, match="shared_depth: 5 is more than the encoder's 4 stages"):
        OrderTransformModule(cfg(shared_depth=5))
    with pytest.raises(ValueError, match="shared_depth applies to variant 'siamese' only"):
        OrderTransformConfig(variant="disentangled", shared_depth=2)


def test_the_transfer_encoder_is_the_shared_trunk_plus_the_order_branch():
    torch.manual_seed(0)
    module = OrderTransformModule(cfg(border="none"))
    clip = torch.randn(4, 1, 4, 32, 32)
    perms, labels = sample_orders(4, 4)
    logits, pred, _ = module.tasks(clip, perms, sample_affine(4, module.ranges))
    order_only = grads(module, F.cross_entropy(logits, labels))
    transform_only = grads(module, pred.square().mean())
    stage = lambda i: {f"encoder.image_encoder.features.{j}.weight" for j in (6 * i, 6 * i + 3)}  # its convs
    for i in range(4):  # the order loss trains the whole transferred encoder, its last stage included
        assert stage(i) <= order_only
    assert not any(n.startswith("transform_tail") for n in order_only)
    for i in range(3):  # the transform loss trains the shared trunk and its own last stage, not the encoder's
        assert stage(i) <= transform_only
    assert not stage(3) & transform_only and "transform_tail.0.0.weight" in transform_only
    # the order branch's input is exactly the transferred encoder's feature map of each frame
    module.eval()
    seen = []
    hook = module.order_branch.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        module.tasks(clip, perms, sample_affine(4, module.ranges))
        frames = clip.transpose(1, 2).reshape(16, 1, 32, 32)  # original order: the features are permuted after
        expected = F.adaptive_avg_pool2d(module.encoder.image_encoder.feature_map(frames), 4).flatten(1)
    hook.remove()
    assert torch.allclose(seen[0], expected, atol=1e-5)
    # and encoder.pt (its state_dict) is a plain encoder: strict load, nothing from the transform branch
    state = module.encoder.state_dict()
    build_encoder(cfg().encoder).load_state_dict(state)
    assert set(state) == {k[len("encoder."):] for k in module.state_dict() if k.startswith("encoder.")}


def test_both_variants_have_the_same_heads():
    siamese, disentangled = OrderTransformModule(cfg()), OrderTransformModule(cfg(variant="disentangled"))

    def heads(module):
        return {n: p.shape for n, p in module.named_parameters()
                if not n.startswith(("encoder.", "transform_tail.", "transform_fc."))}

    assert heads(siamese) == heads(disentangled)
    assert set(heads(siamese)) >= {"order_branch.0.weight", "pair_fc.0.weight", "order_head.0.weight",
                                   "transform_branch.0.weight", "transform_head.weight"}
    assert siamese.order_branch[0].in_features == disentangled.order_branch[0].in_features == 16 * 4 * 4  # grids
    # ... and so do their 3-D, whole-clip versions
    s3, d3 = (OrderTransformModule(cfg(fusion="clip", variant=v), encoder=build_video3d("tiny3d", width=4, dim=16))
              for v in ("siamese", "disentangled"))
    assert heads(s3) == heads(d3) and s3.order_branch[0].in_features == 32 * 4 * 4
    logits, pred, feats = s3.tasks(torch.randn(2, 1, 4, 32, 32), *sample_orders(2, 4)[:1],
                                   sample_affine(2, s3.ranges))
    assert logits.shape == (2, 12) and pred.shape == (2, 5) and feats.shape == (2, 16)


@pytest.mark.parametrize("variant", ["siamese", "disentangled"])
def test_a_blank_clip_gives_no_transform_away_through_its_border(variant):
    """A constant clip has no content: only the zero-padded corners of τ(clip) could show τ. With the
    default border mask every τ gives the same views, so no model can predict τ from them."""
    torch.manual_seed(0)
    module = OrderTransformModule(cfg(variant=variant)).eval()
    blank = torch.full((1, 1, 4, 32, 32), 2.0)  # standardised: a bright, featureless clip
    params = sample_affine(16, module.ranges)
    moved = apply_affine(blank.expand(16, -1, -1, -1, -1), params)
    masked = module.prepare(moved)
    assert torch.allclose(masked, module.prepare(blank).expand_as(masked), atol=1e-5)  # identical for every τ
    perms = torch.arange(4).expand(16, 4)
    with torch.no_grad():
        _, pred, _ = module.tasks(blank.expand(16, -1, -1, -1, -1), perms, params)
    assert (pred - pred[:1]).abs().max() < 1e-4  # the same prediction whatever τ was
    # without the mask (the old default) every τ leaves its own corners: a network could learn τ from them
    old = OrderTransformModule(cfg(variant=variant, border="none")).eval()
    assert (old.prepare(moved)[1:] - old.prepare(moved)[:1]).abs().amax(dim=(1, 2, 3, 4)).min() > 0.5
    assert OrderTransformConfig().border == "mask"


def test_the_paper_backbone_splits_too():
    from usssl.models.encoders import FrameEncoder
    from usssl.models.seresnext import SEResNeXt

    torch.manual_seed(0)
    encoder = FrameEncoder(SEResNeXt(layers=(1, 1, 1, 1), width=0.5, groups=4))  # se_resnext50_half's class
    module = OrderTransformModule(cfg(order_grid=2), encoder=encoder)
    assert module.parts.stem is encoder.image_encoder.stem and module.shared_depth == 3
    assert module.order_branch[0].in_features == 1024 * 2 * 2
    clip, perms = torch.randn(2, 1, 4, 64, 64), sample_orders(2, 4)[0]
    logits, pred, feats = module.tasks(clip, perms, sample_affine(2, module.ranges))
    assert logits.shape == (2, 12) and pred.shape == (2, 5) and feats.shape == (2, 1024)
