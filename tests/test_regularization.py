"""Weight decay semantics against hand-computed updates and torch.optim references."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from segdecay import build_optimizer, param_groups, regularization_term
from segdecay.decay import SGDW, DecayRule, decay_report, lr_factor
from segdecay.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from decay_dynamics import (  # noqa: E402
    e_folding_steps,
    log_ratios,
    log_shrinkage,
    pure_decay,
    torch_schedule,
)


class Tiny(nn.Module):
    """A conv, a norm layer and a linear head: decayed and excluded tensors of each kind."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean(dim=(2, 3)))


def _model(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    model = Tiny()
    with torch.no_grad():  # non-trivial norm parameters so that excluding them matters
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.5, 0.5)
    return model


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 2, 5, 5, generator=g), torch.randint(0, 2, (4,), generator=g)


def _data_loss(model: nn.Module, seed: int) -> torch.Tensor:
    x, y = _batch(seed)
    return nn.functional.cross_entropy(model(x), y)


def _train(model, opt, steps: int, penalty: float = 0.0, l1: float = 0.0) -> None:
    for s in range(steps):
        loss = _data_loss(model, s)
        if penalty or l1:
            loss = loss + regularization_term(l2=penalty, l1=l1, groups=opt.param_groups)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_default_split_excludes_norm_and_bias_only():
    model = _model()
    groups = {g["group"]: g for g in param_groups(model, 0.1)}
    assert set(groups["decay"]["param_names"]) == {"conv.weight", "head.weight"}
    assert set(groups["no_decay"]["param_names"]) == {"conv.bias", "bn.weight", "bn.bias",
                                                      "head.bias"}
    assert groups["decay"]["weight_decay"] == 0.1
    assert groups["no_decay"]["weight_decay"] == 0.0


def test_smp_unet_no_decay_group_is_exactly_batchnorm_and_biases():
    model = smp.Unet("resnet18", encoder_weights=None, classes=5)
    bn_params = {
        f"{mn}.{pn}"
        for mn, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for pn, _ in m.named_parameters(recurse=False)
    }
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    groups = {g["group"]: g for g in param_groups(model, 5e-4)}
    excluded = set(groups["no_decay"]["param_names"])
    assert bn_params, "an smp U-Net has BatchNorm layers"
    assert excluded == bn_params | biases
    decayed = set(groups["decay"]["param_names"])
    assert all(dict(model.named_parameters())[n].ndim >= 2 for n in decayed)
    assert decayed | excluded == {n for n, _ in model.named_parameters()}
    # the module-type rule agrees with the ndim rule on this architecture
    by_type = {g["group"]: g for g in param_groups(model, 5e-4, no_decay="norm+bias")}
    assert set(by_type["no_decay"]["param_names"]) == excluded


def test_rules_scale_decayed_tensors_and_never_reach_excluded_ones():
    model = _model()
    groups = {g["group"]: g for g in param_groups(model, 0.1, rules=["^head\\.=0.5", "conv=2"])}
    assert groups["rule:^head\\.=0.5"]["param_names"] == ["head.weight"]
    assert groups["rule:^head\\.=0.5"]["weight_decay"] == pytest.approx(0.05)
    assert groups["rule:conv=2"]["param_names"] == ["conv.weight"]
    assert groups["rule:conv=2"]["weight_decay"] == pytest.approx(0.2)
    assert "decay" not in groups  # every decayed tensor went to a rule
    # the exclusion takes precedence: biases and norm tensors stay at lambda 0
    assert groups["no_decay"]["param_names"] == ["conv.bias", "bn.weight", "bn.bias",
                                                 "head.bias"]
    assert groups["no_decay"]["held_by_rule"] == {"^head\\.=0.5": 1, "conv=2": 1}
    # with nothing excluded, the rule reaches every tensor it names
    free = {g["group"]: g for g in param_groups(model, 0.1, "none", rules=["bn=2"])}
    assert free["rule:bn=2"]["param_names"] == ["bn.weight", "bn.bias"]


@pytest.mark.parametrize(("rule", "why"), [("nothing_here=2", "matches no trainable tensor"),
                                           ("bn=2", "keeps undecayed")])
def test_a_rule_that_would_change_nothing_is_an_error(rule, why):
    with pytest.raises(UserError, match=f"--decay-rule '{rule}'.*{why}"):
        param_groups(_model(), 0.1, rules=[rule])


@pytest.mark.parametrize("text", ["nomult", "=1", "a=x", "(=1", "a=-1"])
def test_bad_rules_are_user_errors_naming_the_option(text):
    with pytest.raises(UserError, match="--decay-rule"):
        DecayRule.parse(text)


def test_one_sgd_step_is_w_minus_lr_grad_plus_lambda_w():
    lr, lam = 0.1, 0.3
    model = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _data_loss(model, 0).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(param_groups(model, lam), "sgd", lr, "coupled", momentum=0.0)
    opt.step()
    for n, p in model.named_parameters():
        decayed = p.ndim >= 2
        expected = before[n] - lr * (grads[n] + (lam * before[n] if decayed else 0.0))
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_penalty_and_coupled_give_identical_sgd_trajectories(momentum, nesterov):
    name = "sgd-nesterov" if nesterov else "sgd"
    a, b = _model(), _model()
    opt_a = build_optimizer(param_groups(a, 0.2), name, 0.05, "penalty", momentum=momentum)
    opt_b = build_optimizer(param_groups(b, 0.2), name, 0.05, "coupled", momentum=momentum)
    assert all(g["weight_decay"] == 0 for g in opt_a.param_groups)
    _train(a, opt_a, 6, penalty=0.2)
    _train(b, opt_b, 6)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    # and decay did something: a run without it ends elsewhere
    c = _model()
    _train(c, build_optimizer(param_groups(c, 0.0), name, 0.05, "coupled", momentum=momentum), 6)
    assert not torch.allclose(a.conv.weight, c.conv.weight, atol=1e-4)


def test_coupled_matches_torch_sgd_with_weight_decay_on_decay_group_only():
    ours, ref = _model(), _model()
    opt = build_optimizer(param_groups(ours, 0.2), "sgd", 0.05, "coupled", momentum=0.9)
    decay = [p for n, p in ref.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in ref.named_parameters() if p.ndim < 2]
    ref_opt = torch.optim.SGD([{"params": decay, "weight_decay": 0.2},
                               {"params": rest, "weight_decay": 0.0}], lr=0.05, momentum=0.9)
    _train(ours, opt, 5)
    _train(ref, ref_opt, 5)
    for pa, pb in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_decoupled_adam_matches_torch_adamw_and_differs_from_coupled_adam():
    ours, ref, coupled = _model(), _model(), _model()
    opt = build_optimizer(param_groups(ours, 0.5), "adam", 0.01, "decoupled")
    assert isinstance(opt, torch.optim.AdamW)
    decay = [p for p in ref.parameters() if p.ndim >= 2]
    rest = [p for p in ref.parameters() if p.ndim < 2]
    ref_opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.5},
                                 {"params": rest, "weight_decay": 0.0}], lr=0.01)
    _train(ours, opt, 8)
    _train(ref, ref_opt, 8)
    for pa, pb in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    opt_c = build_optimizer(param_groups(coupled, 0.5), "adam", 0.01, "coupled")
    assert type(opt_c) is torch.optim.Adam
    _train(coupled, opt_c, 8)
    gap = (coupled.conv.weight - ours.conv.weight).abs().max()
    assert gap > 1e-3, "coupled L2 under Adam is a different algorithm from AdamW"


def test_adamw_name_defaults_to_decoupled_and_adam_to_coupled():
    opt = build_optimizer(param_groups(_model(), 0.1), "adamw", 1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    opt = build_optimizer(param_groups(_model(), 0.1), "adam", 1e-3)
    assert type(opt) is torch.optim.Adam
    assert opt.param_groups[0]["weight_decay"] == 0.1


def test_sgdw_shrinks_by_lr_lambda_outside_momentum():
    lr, lam, beta = 0.1, 0.3, 0.9
    ours = _model()
    opt = build_optimizer(param_groups(ours, lam), "sgd", lr, "decoupled", momentum=beta)
    assert isinstance(opt, SGDW)
    # reference by hand: v <- beta v + g ; w <- w - lr*lam*w - lr*v
    ref = _model()
    bufs = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    for s in range(4):
        opt.zero_grad()
        _data_loss(ours, s).backward()
        opt.step()
        ref.zero_grad()
        _data_loss(ref, s).backward()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                bufs[n] = p.grad.clone() if s == 0 else beta * bufs[n] + p.grad
                shrink = lr * lam * p if p.ndim >= 2 else 0.0
                p.sub_(shrink + lr * bufs[n])
    for (n, pa), pb in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, msg=n)


def test_sgdw_without_momentum_equals_coupled_sgd():
    a, b = _model(), _model()
    _train(a, build_optimizer(param_groups(a, 0.2), "sgd", 0.05, "decoupled", momentum=0.0), 5)
    _train(b, build_optimizer(param_groups(b, 0.2), "sgd", 0.05, "coupled", momentum=0.0), 5)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_l1_adds_alpha_sign_w_to_the_gradient():
    alpha = 0.07
    model = _model()
    groups = param_groups(model, 0.0)
    _data_loss(model, 0).backward()
    data_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (_data_loss(model, 0) + regularization_term(l1=alpha, groups=groups)).backward()
    for n, p in model.named_parameters():
        extra = alpha * torch.sign(p.detach()) if p.ndim >= 2 else torch.zeros_like(p)
        torch.testing.assert_close(p.grad, data_grads[n] + extra)


def test_regularization_term_value_by_hand():
    model = _model()
    groups = param_groups(model, 0.0, rules=["^head\\.weight$=0.5"])
    term = regularization_term(l2=0.2, l1=0.1, groups=groups)
    conv, head = model.conv.weight.detach(), model.head.weight.detach()
    expected = (0.1 * conv.pow(2).sum() + 0.1 * conv.abs().sum()
                + 0.5 * (0.1 * head.pow(2).sum() + 0.1 * head.abs().sum()))
    torch.testing.assert_close(term.detach(), expected)


def test_decay_report_tau_and_shrinkage_by_hand():
    model = _model()
    total, per_epoch = 100, 10
    opt = build_optimizer(param_groups(model, 0.05), "adamw", 0.01)
    report = {g["name"]: g for g in decay_report(opt, "adamw", total_steps=total,
                                                 steps_per_epoch=per_epoch, schedule="constant")}
    d = report["decay"]
    assert d["tau_steps"] == pytest.approx(1 / (0.01 * 0.05))
    assert d["tau_epochs"] == pytest.approx(1 / (0.01 * 0.05) / per_epoch)
    assert d["integrated_shrinkage"] == pytest.approx(math.exp(-0.05 * 0.01 * total))
    assert d["tensors"] == 2 and d["parameters"] == 2 * 3 * 9 + 3 * 2
    assert report["no_decay"]["tau_steps"] is None
    assert report["no_decay"]["integrated_shrinkage"] == 1.0
    # SGD with momentum: coupled decay passes through the buffer, effective lr = lr/(1-beta)
    opt = build_optimizer(param_groups(_model(), 0.05), "sgd", 0.01, "coupled", momentum=0.9)
    d = decay_report(opt, "sgd", total_steps=total, steps_per_epoch=per_epoch,
                     schedule="poly", momentum=0.9)[0]
    assert d["tau_steps"] == pytest.approx(1 / (0.1 * 0.05))
    assert d["effective_lr"] == pytest.approx(0.1)
    # the poly integral is checked against the optimizer itself in
    # test_integrated_shrinkage_is_what_the_optimizer_does_under_the_schedule


# (optimizer, mode, lr, lambda): lr_eff·lambda = 0.005 per step, so about 0.8 e-foldings
# over 300 steps of poly or cosine. Adam + coupled L2 is left out on purpose: Adam divides
# the decay gradient lambda·w by its own running RMS (about lambda·|w|), so a pure-decay
# step is about lr·sign(w), a linear shrinkage with no timescale, and its tau is nominal
# (decay_report says so in its note); there is no exponential decay to compare with.
PURE_DECAY = [
    ("sgd", "coupled", 0.01, 0.05),        # torch SGD weight_decay, through momentum 0.9
    ("sgd", "penalty", 0.01, 0.05),        # the loss term's gradient, through momentum too
    ("sgd-nesterov", "coupled", 0.01, 0.05),
    ("sgd", "decoupled", 0.01, 0.5),       # SGDW: outside the momentum buffer
    ("adamw", "decoupled", 1e-3, 5.0),     # torch AdamW
]


@pytest.mark.parametrize("optimizer, mode, lr, lam", PURE_DECAY)
@pytest.mark.parametrize("schedule, warmup", [("poly", 0), ("cosine", 30)])
def test_integrated_shrinkage_is_what_the_optimizer_does_under_the_schedule(
        optimizer, mode, lr, lam, schedule, warmup):
    """No data gradient for 300 steps under torch's own schedulers: the decayed weights
    shrink by the report's exp(-lambda·sum_t lr_eff_t), the excluded ones not at all.

    Tolerance on the log: 0.5% where the decay acts directly (SGDW, AdamW: measured 0.2%,
    the second-order term of prod(1 - lr_t·lambda)); 4% where it goes through the momentum
    buffer, whose lag and faster discrete rate the report ignores (measured -2.6% under
    poly, +1.7% under cosine). Without the factor 1/(1-beta) those would be 10x off."""
    total = 300
    model = _model()
    opt = build_optimizer(param_groups(model, lam), optimizer, lr, mode, momentum=0.9)
    report = {g["name"]: g for g in decay_report(
        opt, optimizer, total_steps=total, steps_per_epoch=30, schedule=schedule,
        warmup_steps=warmup, momentum=0.9)}
    before = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    history = pure_decay(opt, total, scheduler=torch_schedule(opt, total, schedule, warmup),
                         penalty_l2=lam if mode == "penalty" else 0.0)
    names = [g["group"] for g in opt.param_groups for _ in g["params"]]
    for name, w0, w in zip(names, before, history[-1], strict=True):
        if name == "no_decay":
            assert report[name]["integrated_shrinkage"] == 1.0
            torch.testing.assert_close(w, w0, rtol=0, atol=0)
        else:
            measured = log_shrinkage(w0, w)
            assert -1.0 < measured < -0.5  # a real test: far from 0 and from saturation
            rel = 0.005 if mode == "decoupled" else 0.04
            assert measured == pytest.approx(math.log(report[name]["integrated_shrinkage"]),
                                             rel=rel)


def test_lr_factor_is_torchs_warmup_then_schedule():
    """lr_factor against torch's LinearLR, PolynomialLR, CosineAnnealingLR and ConstantLR,
    stepped as the training loop steps its scheduler (once per optimizer step)."""
    for schedule in ("poly", "cosine", "constant"):
        for warmup in (0, 7):
            w = nn.Parameter(torch.ones(1))
            opt = torch.optim.SGD([w], lr=1.0)
            sched = torch_schedule(opt, 60, schedule, warmup)
            for step in range(60):
                assert lr_factor(step, 60, schedule, warmup) == pytest.approx(
                    opt.param_groups[0]["lr"], abs=1e-12), (schedule, warmup, step)
                w.grad = torch.zeros_like(w)
                opt.step()
                sched.step()


def test_lr_factor_warmup_then_schedules():
    assert lr_factor(0, 100, "poly", warmup_steps=10) == pytest.approx(0.1)
    assert lr_factor(9, 100, "poly", warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(10, 100, "poly", warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(55, 100, "cosine", warmup_steps=10) == pytest.approx(0.5)
    assert lr_factor(100, 100, "poly") == pytest.approx(0.0)
    assert lr_factor(50, 100, "constant") == 1.0


def test_state_dict_round_trip_keeps_decay_bookkeeping():
    model = _model()
    opt = build_optimizer(param_groups(model, 0.2), "sgd", 0.1, "decoupled")
    _train(model, opt, 2)
    clone = copy.deepcopy(model)
    opt2 = build_optimizer(param_groups(clone, 0.2), "sgd", 0.1, "decoupled")
    opt2.load_state_dict(opt.state_dict())
    assert [g["decoupled_weight_decay"] for g in opt2.param_groups] == [0.2, 0.0]


@pytest.mark.parametrize("kwargs,option", [
    ({"name": "rmsprop"}, "--optimizer"),
    ({"decay_mode": "both"}, "--decay-mode"),
    ({"lr": 0.0}, "--lr"),
    ({"weight_decay": -1.0}, "--weight-decay"),
])
def test_bad_optimizer_options_name_the_option(kwargs, option):
    args = {"name": "sgd", "lr": 0.1, "weight_decay": 0.1} | kwargs
    weight_decay = args.pop("weight_decay")
    with pytest.raises(UserError, match=option):  # lambda is checked where the groups are made
        build_optimizer(param_groups(_model(), weight_decay), **args)


# ------------------------------------------------------------------ lambda <-> tau


@pytest.mark.parametrize("optimizer, mode, lr, expected", [
    # tau 10 epochs x 8 steps: lambda = 1 / (80 · lr_eff)
    ("sgd", "coupled", 0.05, 1 / (80 * 0.05 / (1 - 0.9))),  # lr_eff = 0.5: 0.025
    ("sgd", "penalty", 0.05, 0.025),  # the penalty's gradient goes through momentum too
    ("sgd", "decoupled", 0.05, 1 / (80 * 0.05)),  # SGDW shrinks by lr·lambda: 0.25
    ("adamw", "decoupled", 1e-3, 1 / (80 * 1e-3)),  # 12.5
    ("adam", "coupled", 1e-3, 12.5),  # nominal: Adam divides the decay adaptively
])
def test_lambda_for_tau_by_hand(optimizer, mode, lr, expected):
    from segdecay.decay import lambda_for_tau, tau_for_lambda

    lam = lambda_for_tau(10.0, 8, optimizer, mode, lr, momentum=0.9)
    assert lam == pytest.approx(expected)
    assert tau_for_lambda(lam, 8, optimizer, mode, lr, momentum=0.9) == pytest.approx(10.0)
    assert lambda_for_tau(math.inf, 8, optimizer, mode, lr, 0.9) == 0.0


@pytest.mark.parametrize("optimizer, mode, lr, lam", PURE_DECAY)
def test_pure_decay_e_folds_in_tau_steps(optimizer, mode, lr, lam):
    """Measured, not re-derived: the optimizer with no data gradient shrinks w by 1/e after
    as many steps as decay_report's tau_steps (1/(lr_eff·lambda) = 200 here), and a lambda
    from lambda_for_tau(4 epochs of 50 steps) e-folds in 4 epochs. The momentum lag and the
    faster discrete rate cancel to within a step; without the factor 1/(1-beta) the SGD
    cases would e-fold at 20 or 2000 steps."""
    from segdecay.decay import lambda_for_tau

    layer = nn.Linear(4, 4, bias=False)
    opt = build_optimizer(param_groups(layer, lam), optimizer, lr, mode, momentum=0.9)
    report = decay_report(opt, optimizer, total_steps=1, steps_per_epoch=50, schedule="constant",
                          momentum=0.9)[0]
    assert e_folding_steps(log_ratios(optimizer, mode, lr, lam, 400)) == pytest.approx(
        report["tau_steps"], abs=2)
    per_epoch, tau_epochs = 50, 4
    lam4 = lambda_for_tau(tau_epochs, per_epoch, optimizer, mode, lr, momentum=0.9)
    steps = e_folding_steps(log_ratios(optimizer, mode, lr, lam4, 2 * per_epoch * tau_epochs))
    assert steps is not None and steps / per_epoch == pytest.approx(tau_epochs, abs=0.04)
