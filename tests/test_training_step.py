"""The step base every stage shares (sseg.training.StageStep), the one poly schedule and self-registration
of models."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from sseg.training import StageStep, adamw, poly_with_warmup


class LinearStep(StageStep):
    kind = "test"
    model_name = "linear"

    def __init__(self, grad_clip=None):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        optimizer = adamw([{"params": list(model.parameters())}], 0.1, (0.9, 0.999))
        super().__init__(model, optimizer, poly_with_warmup(optimizer, 10, 0), {}, grad_clip=grad_clip)
        self.after = 0

    def loss(self, batch):
        out = self.model(batch)
        return (out ** 2).mean() * 100, {"mean_out": float(out.detach().mean())}

    def after_update(self):
        self.after += 1


def test_update_clips_steps_and_reports():
    batch = torch.ones(4, 3)
    step = LinearStep(grad_clip=0.5)
    before = [p.detach().clone() for p in step.model.parameters()]
    loss, _ = step.loss(batch)
    loss.backward()
    expected_norm = float(torch.cat([p.grad.flatten() for p in step.model.parameters()]).norm())
    step.optimizer.zero_grad()
    metrics = step.run(batch)
    assert metrics["grad_norm"] == pytest.approx(expected_norm, rel=1e-6) and expected_norm > 0.5
    assert metrics["loss"] == pytest.approx(float(loss)) and "mean_out" in metrics
    assert metrics["lr"] == pytest.approx(0.09)  # read after the scheduler step, as every stage logs it
    assert step.after == 1 and step.scheduler.last_epoch == 1
    assert all(not torch.equal(a, b) for a, b in zip(before, step.model.parameters()))
    assert "grad_norm" not in LinearStep().run(batch)


def test_state_round_trip_and_wrap():
    batch = torch.ones(2, 3)
    running = LinearStep()
    running.run(batch)
    fresh = LinearStep()
    fresh.load_state_dict(running.state_dict())
    assert fresh.scheduler.last_epoch == 1
    assert fresh.optimizer.param_groups[0]["lr"] == running.optimizer.param_groups[0]["lr"]
    assert fresh.run(batch) == running.run(batch)

    class Wrapper(nn.Module):  # what DDP looks like to the step: the model as .module
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            return self.module(x)

    core = fresh.core
    fresh.wrap_model(Wrapper)
    assert isinstance(fresh.model, Wrapper) and fresh.core is core
    assert set(fresh.state_dict()["model"]) == {"weight", "bias"}  # the checkpoint holds the plain model


def _lrs(**kwargs) -> list[float]:
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = poly_with_warmup(optimizer, **kwargs)
    values = []
    for _ in range(6):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_poly_schedule_warmups():
    # mmcv (S-Seg+): the poly value times a ramp from warmup_ratio
    mmcv = _lrs(total_steps=4, warmup_steps=2, power=1.0, warmup="mmcv", warmup_ratio=0.1)
    assert mmcv == pytest.approx([1.0 * 0.1, 0.75 * (1 - 0.5 * 0.9), 0.5, 0.25, 0.0, 0.0])
    # linear (SemiVL): (i + 1) / W in place of the poly value during the warm-up
    linear = _lrs(total_steps=4, warmup_steps=2, power=0.9, warmup="linear")
    assert linear == pytest.approx([0.5, 1.0, 0.5 ** 0.9, 0.25 ** 0.9, 0.0, 0.0])
    assert _lrs(total_steps=4, warmup_steps=0, power=2.0) == pytest.approx([1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0])
    with pytest.raises(ValueError, match="warmup must be"):
        _lrs(total_steps=4, warmup="cosine")


def test_models_register_where_they_are_defined():
    """The registry imports no model module at import time (no sseg.semivl); a lookup imports them."""
    code = ("import sys, sseg.models.registry as r; assert 'sseg.semivl' not in sys.modules; "
            "assert {'sseg', 'semivl', 'upernet_vit'} <= set(r.model_names()); "
            "from sseg.semivl.model import SemiVLModel; assert r.model_entry('semivl').builder is SemiVLModel")
    subprocess.run([sys.executable, "-c", code], check=True)

    from sseg.models import registry

    @registry.register_model("test_only_model", registry.model_entry("sseg").config_class, segments=False)
    class Tiny(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.cfg = cfg

    try:
        assert isinstance(registry.create_model("test_only_model", {}), Tiny)
        assert not registry.model_entry("test_only_model").segments
    finally:
        registry._REGISTRY.pop("test_only_model")
