"""CVRL as the official code trains it: summed loss, decay on kernels only, warm-up, SyncBatchNorm."""

import logging
import math
from types import SimpleNamespace

import pytest
import torch
from pydantic import Field

from usssl.config import PretrainConfig
from usssl.config.methods import CVRLConfig
from usssl.engine.distributed import sync_batchnorm_decision
from usssl.methods.cvrl import CVRLModule, cvrl_loss, warmup_factor, weight_decay_groups
from usssl.methods.losses import nt_xent
from usssl.models.encoders import build_encoder


class Cfg(PretrainConfig):
    cvrl: CVRLConfig = Field(default_factory=CVRLConfig)


def cfg(optimizer=None, **cv):
    return Cfg.model_validate({"encoder": {"width": 4, "dim": 16}, "projection_dim": 8,
                               "optimizer": optimizer or {"name": "sgd", "lr": 0.1, "momentum": 0.0,
                                                          "weight_decay": 0.5},
                               "cvrl": {"clip_frames": 4, "head_hidden_dim": 32, **cv}})


def test_loss_is_the_sum_of_both_directions_by_hand():
    # views a = (1, 0), (0, 1); b = (0.6, 0.8), (0, 1); τ = 0.5. Cosines / τ, positive first:
    # a0: 1.2 | 0 (a1), 0 (b1)      a1: 2 | 0 (a0), 1.6 (b0)
    # b0: 1.2 | 1.6 (a1), 1.6 (b1)  b1: 2 | 0 (a0), 1.6 (b0)
    e = math.exp
    l_a0 = -1.2 + math.log(e(1.2) + 2)
    l_a1 = l_b1 = -2 + math.log(e(2) + 1 + e(1.6))
    l_b0 = -1.2 + math.log(e(1.2) + 2 * e(1.6))
    loss_a, loss_b = (l_a0 + l_a1) / 2, (l_b0 + l_b1) / 2  # each a mean over one view's anchors
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    assert loss_a + loss_b == pytest.approx(1.517770, abs=1e-5)
    assert cvrl_loss(z_a, z_b, 0.5).item() == pytest.approx(loss_a + loss_b, abs=1e-6)
    assert nt_xent(z_a, z_b, 0.5).item() == pytest.approx((loss_a + loss_b) / 2, abs=1e-6)  # the old mean


def test_training_step_logs_the_sum_and_the_per_anchor_nt_xent():
    torch.manual_seed(0)
    module = CVRLModule(cfg())
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    loss = module.training_step({"video_a": torch.rand(4, 1, 4, 32, 32), "video_b": torch.rand(4, 1, 4, 32, 32)}, 0)
    assert logged["train/loss"] == pytest.approx(loss.item()) == pytest.approx(2 * logged["train/nt_xent"])


def test_weight_decay_acts_on_kernels_only():
    module = CVRLModule(cfg())
    decay, no_decay = weight_decay_groups(module)
    names = {id(p): n for n, p in module.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {n for n, p in module.named_parameters() if p.ndim < 2}
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert all(id(p) in no_decay_ids for n, p in module.named_parameters() if n.endswith(".bias"))
    bn = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bn and all(any(m.weight is p for p in no_decay["params"]) for m in bn)
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.parameters()))
    # one SGD step with zero gradients: kernels shrink by lr · wd = 0.05, BatchNorm and biases do not move
    optimizer = module.configure_optimizers()["optimizer"]
    conv = module.encoder.image_encoder.features[0].weight
    before_conv, before_bn = conv.detach().clone(), bn[0].weight.detach().clone()
    before_bias = module.head[0].bias.detach().clone()
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.allclose(conv, before_conv * (1 - 0.1 * 0.5), atol=1e-7)
    assert torch.equal(bn[0].weight, before_bn) and torch.equal(module.head[0].bias, before_bias)
    assert len(weight_decay_groups(module, decay_bn_bias=True)) == 1


def test_warmup_factor_and_the_step_it_scales():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0  # no warm-up
    torch.manual_seed(0)
    module = CVRLModule(cfg(warmup_epochs=2, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.0,
                                                        "weight_decay": 0.0}))
    module.trainer = SimpleNamespace(num_training_batches=5, global_step=3)  # warm-up: 2 × 5 = 10 steps
    optimizer = module.configure_optimizers()["optimizer"]
    w = module.head[-1].weight
    before = w.detach().clone()
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    module.optimizer_step(0, 3, optimizer)
    assert torch.allclose(w, before - 0.1 * 0.3, atol=1e-7)  # lr 0.1 × 3/10
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.1]  # the schedule's rate is put back


@pytest.mark.parametrize("wanted,world,device,expected,says", [
    (True, 4, "cuda", True, "SyncBatchNorm over 4 processes"),
    (True, 2, "cpu", False, "CUDA tensors only"),
    (True, 1, "cuda", False, "one process"),
    (False, 8, "cuda", False, "off"),
])
def test_sync_batchnorm_decision(wanted, world, device, expected, says):
    use, why = sync_batchnorm_decision(wanted, world, device)
    assert use is expected and says in why


def test_sync_batchnorm_is_on_by_default_and_converts_encoder_and_head(caplog):
    assert CVRLConfig().sync_batchnorm is True
    module = CVRLModule(cfg())
    keys = set(module.encoder.state_dict())
    with caplog.at_level(logging.INFO, logger="usssl.methods.cvrl"):
        assert module.set_sync_batchnorm(2, "cpu") is False  # gloo on CPU: plain BatchNorm, and it says so
    assert "plain, not synchronised: 2 processes on cpu" in caplog.text
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules())
    assert module.set_sync_batchnorm(2, "cuda") is True
    n_sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules())
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())
    assert n_sync == n_bn == 8 + 3  # tiny2d's 8 BatchNorm2d and the head's 3 BatchNorm1d
    assert set(module.encoder.state_dict()) == keys  # encoder.pt still loads into a plain encoder
    build_encoder(cfg().encoder).load_state_dict(module.encoder.state_dict())
