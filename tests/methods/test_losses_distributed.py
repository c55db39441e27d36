"""NT-Xent by hand, and every contrastive loss across 2 CPU processes equal to one process.

World-size factor. With R ranks each holding B pairs, rank r's loss ℓ_r is the mean over its own
anchors and the global loss is L = (1/R) Σ_r ℓ_r (the single-process loss on the concatenated
batch). ``gather_with_grad``'s backward sums, over ranks, the gradients every rank's loss sends to
a slice, so rank r's gradient w.r.t. its embeddings is Σ_r' ∂ℓ_r'/∂e_r = R · ∂L/∂e_r: **per-rank
embedding gradients are world_size × the single-process gradient slice**. DDP then averages
parameter gradients over ranks (÷ R), which cancels the factor: the parameter gradient equals the
single-process one exactly.
"""

from __future__ import annotations

import math
import os

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from usssl.methods.losses import info_nce, nt_xent

WORLD, B, D, TAU = 2, 3, 5, 0.3


def test_nt_xent_hand_computed_2x2():
    # z1 = [e1, e2], z2 = [e1, (e1+e2)/√2]; τ = 0.5. Views: a1=e1, a2=e2, b1=e1, b2=(1,1)/√2.
    s, tau = 1 / math.sqrt(2), 0.5
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # normalised inside
    def ell(pos, others):  # −log e^{pos/τ} / Σ_{k≠i} e^{s_ik/τ}; ``others`` excludes the anchor itself
        return -pos / tau + math.log(sum(math.exp(v / tau) for v in others))
    # similarities of each anchor to the three other views (a1, a2, b1, b2 order, self removed)
    a1 = ell(1.0, [0.0, 1.0, s])  # a1 vs a2, b1, b2 — positive b1
    a2 = ell(s, [0.0, 0.0, s])  # a2 vs a1, b1, b2 — positive b2
    b1 = ell(1.0, [1.0, 0.0, s])  # b1 vs a1, a2, b2 — positive a1
    b2 = ell(s, [s, s, s])  # b2 vs a1, a2, b1 — positive a2
    expected = (a1 + a2 + b1 + b2) / 4
    assert nt_xent(z1, z2, tau).item() == pytest.approx(expected, abs=1e-6)


def test_nt_xent_matches_the_2n_by_2n_formula_and_checks_temperature():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D), SimCLR's layout
    sim = z @ z.T / 0.2
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(5, 10), torch.arange(5)])
    assert nt_xent(z1, z2, 0.2).item() == pytest.approx(F.cross_entropy(sim, target).item(), abs=1e-5)
    assert nt_xent(torch.eye(3) * 4, torch.eye(3) * 4, 0.01).item() < 1e-6
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z1, z2, 0.0)


def _fixed():
    g = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * B, D, generator=g), torch.randn(WORLD * B, D, generator=g), \
        torch.randn(D, D, generator=g)


LOSSES = {"info_nce": info_nce, "nt_xent": nt_xent}


def _worker(rank: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    x1, x2, w0 = _fixed()
    part = slice(rank * B, (rank + 1) * B)
    result = {}
    for name, loss_fn in LOSSES.items():
        e1, e2 = x1[part].clone().requires_grad_(), x2[part].clone().requires_grad_()
        loss = loss_fn(e1, e2, TAU)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        w = w0.clone().requires_grad_()  # a shared "parameter" in front of the loss, as under DDP
        loss_fn(x1[part] @ w, x2[part] @ w, TAU).backward()
        dist.all_reduce(w.grad)
        result[name] = {"loss": loss.item(), "mean_loss": mean_loss.item() / WORLD, "g1": e1.grad, "g2": e2.grad,
                        "w_grad": w.grad / WORLD}  # DDP averages parameter gradients
    torch.save(result, f"{out_file}.{rank}")
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter teardown: gloo's threads can abort there ("terminate called …")


def _spawn(tmp: str) -> None:
    mp.spawn(_worker, args=(f"{tmp}/init", f"{tmp}/result"), nprocs=WORLD, join=True)


def test_losses_and_gradients_across_two_processes_equal_one_process(tmp_path):
    # spawned from a fresh interpreter: inside pytest's process gloo's threads abort at exit
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import {Path(__file__).stem} as t; t._spawn({str(tmp_path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = str(tmp_path / "result")
    ranks = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    x1, x2, w0 = _fixed()
    for name, loss_fn in LOSSES.items():
        e1, e2 = x1.clone().requires_grad_(), x2.clone().requires_grad_()
        single = loss_fn(e1, e2, TAU)
        single.backward()
        w = w0.clone().requires_grad_()
        loss_fn(x1 @ w, x2 @ w, TAU).backward()
        for r, res in enumerate(ranks):
            part = slice(r * B, (r + 1) * B)
            assert res[name]["mean_loss"] == pytest.approx(single.item(), abs=1e-6), name
            # the world-size factor: per-rank gradient = WORLD × single-process gradient slice
            assert torch.allclose(res[name]["g1"], WORLD * e1.grad[part], atol=1e-6), name
            assert torch.allclose(res[name]["g2"], WORLD * e2.grad[part], atol=1e-6), name
            # after DDP's average over ranks, the parameter gradient is the single-process one
            assert torch.allclose(res[name]["w_grad"], w.grad, atol=1e-6), name
        # the ranks' local losses differ (each averages its own anchors) but average to the global one
        assert sum(res[name]["loss"] for res in ranks) / WORLD == pytest.approx(single.item(), abs=1e-6)
