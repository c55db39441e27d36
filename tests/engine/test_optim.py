"""Learning-rate schedules step as configured (ViRB's flaw: schedulers that never step)."""

import pytest
import torch

from usssl.config import OptimizerConfig
from usssl.engine.optim import configure_optimization


def rates(cfg, epochs):
    out = configure_optimization([torch.nn.Parameter(torch.zeros(1))], cfg)
    opt, sched = out["optimizer"], out.get("lr_scheduler", {}).get("scheduler")
    seen = []
    for _ in range(epochs):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return seen


def test_paper_step_schedule_divides_by_ten_every_20_epochs():
    lr = rates(OptimizerConfig(name="sgd", lr=1e-3, scheduler="step", step_epochs=20), 45)
    assert lr[0] == lr[19] == pytest.approx(1e-3)
    assert lr[20] == lr[39] == pytest.approx(1e-4)
    assert lr[40] == pytest.approx(1e-5)


def test_protocol_multistep_and_constant():
    lr = rates(OptimizerConfig(name="sgd", lr=0.01, scheduler="multistep", milestones=[20, 35]), 40)
    assert (lr[19], lr[20], lr[34], lr[35]) == pytest.approx((0.01, 1e-3, 1e-3, 1e-4))
    assert set(rates(OptimizerConfig(lr=0.5), 5)) == {0.5}
    out = configure_optimization([torch.nn.Parameter(torch.zeros(1))], OptimizerConfig(name="sgd", momentum=0.8))
    assert isinstance(out["optimizer"], torch.optim.SGD) and out["optimizer"].defaults["momentum"] == 0.8
