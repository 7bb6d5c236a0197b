"""Decay modes under conditions the basic tests leave out, against independent references:
SGDW while the lr changes every step (timm's SGDW under the same schedule), and L1 under
AdamW (torch AdamW on a loss that carries alpha·sum|w| by hand)."""

from __future__ import annotations

import pytest
import torch
from timm.optim import SGDW as TimmSGDW
from torch import nn

from segdecay.decay import build_optimizer, build_scheduler, param_groups, regularization_term


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 3, 1))


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(3, 2, 6, 6, generator=g)
    y = torch.randint(0, 3, (3, 6, 6), generator=g)
    return nn.functional.cross_entropy(model(x), y)


def _timm_groups(model: nn.Module, lam: float) -> list[dict]:
    """The same decay/no-decay split, built independently by ndim."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": lam}, {"params": rest, "weight_decay": 0.0}]


@pytest.mark.parametrize("schedule, warmup", [("cosine", 3), ("poly", 0)])
def test_sgdw_under_a_changing_lr_matches_timm_sgdw(schedule, warmup):
    lr, lam, steps = 0.2, 0.5, 12
    ours, ref = _net(), _net()
    opt = build_optimizer(param_groups(ours, lam), "sgd", lr, "decoupled", momentum=0.9)
    sched = build_scheduler(opt, steps, schedule, warmup)
    ref_opt = TimmSGDW(_timm_groups(ref, lam), lr=lr, momentum=0.9)
    ref_sched = build_scheduler(ref_opt, steps, schedule, warmup)  # same lr at every step
    seen = set()
    for step in range(steps):
        for model, optimizer, scheduler in ((ours, opt, sched), (ref, ref_opt, ref_sched)):
            optimizer.zero_grad()
            _loss(model, step).backward()
            optimizer.step()
            scheduler.step()
        seen.add(round(opt.param_groups[0]["lr"], 9))
    assert len(seen) > steps // 2  # the lr really changed along the way
    for (name, a), b in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    # and the decay mattered: without it the weights end elsewhere
    plain = _net()
    plain_opt = build_optimizer(param_groups(plain, 0.0), "sgd", lr, "decoupled", momentum=0.9)
    plain_sched = build_scheduler(plain_opt, steps, schedule, warmup)
    for step in range(steps):
        plain_opt.zero_grad()
        _loss(plain, step).backward()
        plain_opt.step()
        plain_sched.step()
    assert (plain[0].weight - ours[0].weight).abs().max() > 1e-3


def test_l1_under_adamw_is_adamw_on_the_loss_plus_alpha_abs_w():
    lr, lam, alpha, steps = 0.01, 0.1, 0.05, 8
    ours, ref = _net(), _net()
    opt = build_optimizer(param_groups(ours, lam), "adamw", lr)
    ref_opt = torch.optim.AdamW(_timm_groups(ref, lam), lr=lr)
    for step in range(steps):
        opt.zero_grad()
        (_loss(ours, step) + regularization_term(l1=alpha, groups=opt.param_groups)).backward()
        opt.step()
        ref_opt.zero_grad()
        l1 = sum(p.abs().sum() for p in ref.parameters() if p.ndim >= 2)
        (_loss(ref, step) + alpha * l1).backward()
        ref_opt.step()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    # norm and bias tensors carry no L1: their gradient is the data gradient alone
    groups = {g["group"]: g for g in param_groups(_net(), 0.0)}
    net = _net()
    names = dict(net.named_parameters())
    (_loss(net, 0) + regularization_term(l1=alpha, groups=param_groups(net, 0.0))).backward()
    with_l1 = {n: names[n].grad.clone() for n in groups["no_decay"]["param_names"]}
    net.zero_grad()
    _loss(net, 0).backward()
    for n, grad in with_l1.items():
        torch.testing.assert_close(grad, names[n].grad, msg=n)
