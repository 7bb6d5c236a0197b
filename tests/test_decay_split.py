"""Which tensors decay at the edges users meet: rules against the no-decay exclusion, a
model's own ``no_weight_decay()``, names under ``--dropout``, and SGDW steps that would
flip the weights' sign."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from segdecay.cli import main
from segdecay.decay import build_optimizer, param_groups
from segdecay.decay.optimizers import SGDW
from segdecay.errors import UserError
from segdecay.models import build_model, upgrade_state_dict
from segdecay.studies.tune.options import TuneOptions, validate_against

SYN = "synthetic:size=32,n_train=8,n_val=8,n_test=8"


def _norm_and_bias_names(model: nn.Module) -> set[str]:
    """Independent of the split's ndim rule: by module type and by name."""
    names = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            names |= {f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False)}
    return names


def test_train_with_an_encoder_rule_prints_a_split_where_no_norm_or_bias_decays(
        tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", SYN, "--epochs", "1", "--batch-size", "4", "--device",
               "cpu", "--optimizer", "sgd", "--weight-decay", "5e-4", "--tta", "none",
               "--decay-rule", r"^encoder\.=0.1", "--out", str(out)])
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert rc == 0
    model = build_model("unet", "resnet18", 6)
    norm_bias = _norm_and_bias_names(model)
    encoder_norm_bias = {n for n in norm_bias if n.startswith("encoder.")}
    # resnet18: 20 BatchNorm layers x 2 tensors (its convs have no bias, its fc is removed)
    assert len(encoder_norm_bias) == 40
    line = next(ln for ln in printed.splitlines() if "matched --decay-rule" in ln)
    assert line.strip().startswith("40 of them matched --decay-rule '^encoder\\.=0.1' and "
                                   "stay undecayed")
    groups = {g["name"]: g for g in json.loads((out / "decay.json").read_text())["groups"]}
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert groups[r"rule:^encoder\.=0.1"]["weight_decay"] == pytest.approx(0.1 * 5e-4)
    split = {g["group"]: g for g in param_groups(model, 5e-4, rules=[r"^encoder\.=0.1"])}
    assert norm_bias <= set(split["no_decay"]["param_names"])
    assert not norm_bias & set(split[r"rule:^encoder\.=0.1"]["param_names"])
    assert groups[r"rule:^encoder\.=0.1"]["tensors"] == len(
        split[r"rule:^encoder\.=0.1"]["param_names"])


class _WithTokens(nn.Module):
    """A model that lists tensors of ndim >= 2 in its ``no_weight_decay()``, as timm's ViT."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 3))
        self.proj = nn.Linear(3, 3)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}


def test_a_models_own_no_weight_decay_list_is_honoured_with_its_prefix():
    outer = nn.Module()
    outer.inner = _WithTokens()
    split = {g["group"]: g for g in param_groups(outer, 0.1)}
    assert split["no_decay"]["param_names"] == ["inner.pos_embed", "inner.proj.bias"]
    assert split["no_decay"]["listed_by_model"] == ["inner.pos_embed"]
    assert split["decay"]["param_names"] == ["inner.proj.weight"]
    everything = {g["group"]: g for g in param_groups(outer, 0.1, no_decay="none")}
    assert set(everything["decay"]["param_names"]) == {n for n, _ in outer.named_parameters()}


def test_vit_encoder_keeps_cls_token_and_pos_embed_undecayed():
    model = build_model("dpt", "tu-vit_tiny_patch16_224", 3)  # smp's timm-universal encoder
    params = dict(model.named_parameters())
    tokens = {"encoder.model.cls_token", "encoder.model.pos_embed"}
    assert all(params[n].ndim == 3 for n in tokens)  # the ndim rule alone would decay them
    for rule in ("ndim<2", "norm+bias"):
        split = {g["group"]: g for g in param_groups(model, 0.05, no_decay=rule)}
        assert tokens <= set(split["no_decay"]["param_names"]), rule
        assert not tokens & set(split["decay"]["param_names"]), rule


def test_dropout_keeps_parameter_names_and_drops_in_train_mode_only():
    torch.manual_seed(0)
    plain = build_model("unet", "resnet18", 4)
    torch.manual_seed(0)
    dropped = build_model("unet", "resnet18", 4, dropout=0.5)
    assert [n for n, _ in dropped.named_parameters()] == [n for n, _ in plain.named_parameters()]
    dropped.load_state_dict(plain.state_dict())  # same keys, strict
    split = {g["group"]: g for g in param_groups(dropped, 0.1,
                                                 rules=[r"^segmentation_head\.=2"])}
    assert split[r"rule:^segmentation_head\.=2"]["param_names"] == [
        "segmentation_head.0.weight"]
    x = torch.randn(2, 3, 32, 32)
    dropped.eval()
    plain.eval()
    torch.testing.assert_close(dropped(x), plain(x))
    dropped.train()
    plain.train()
    assert not torch.allclose(dropped(x), plain(x))


def test_checkpoints_from_the_wrapped_head_still_load():
    model = build_model("unet", "resnet18", 4, dropout=0.2)
    old = {k.replace("segmentation_head.", "segmentation_head.head.", 1): v
           for k, v in model.state_dict().items()}
    assert "segmentation_head.head.0.weight" in old
    build_model("unet", "resnet18", 4, dropout=0.2).load_state_dict(upgrade_state_dict(old))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1))


def test_decoupled_decay_refuses_a_step_that_would_flip_the_weights_sign():
    with pytest.raises(UserError, match=r"--lr 0.1 x --weight-decay 10 = 1 >= 1"):
        build_optimizer(param_groups(_tiny(), 10.0), "sgd", 0.1, "decoupled")
    with pytest.raises(UserError, match=re.escape(
            r"--lr 0.1 x lambda of group rule:^2\.=2 (--weight-decay x its multiplier) 12")):
        build_optimizer(param_groups(_tiny(), 6.0, rules=[r"^2\.=2"]), "sgd", 0.1, "decoupled")
    assert isinstance(build_optimizer(param_groups(_tiny(), 9.99), "sgd", 0.1, "decoupled"), SGDW)
    with pytest.raises(UserError, match=r"--lr 0.1 x --weight-decay 10 = 1 >= 1"):
        # AdamW's step is the same product
        build_optimizer(param_groups(_tiny(), 10.0), "adamw", 0.1)
    # coupled decay is a gradient term, not a multiplication by 1 - lr·lambda
    build_optimizer(param_groups(_tiny(), 10.0), "sgd", 0.1, "coupled")
    build_optimizer(param_groups(_tiny(), 10.0), "adam", 0.1, "coupled")


def test_tune_refuses_a_decoupled_grid_that_flips_signs_before_any_trial():
    grid = TuneOptions(grid=[0.0, 1e-3, 20.0])
    with pytest.raises(UserError, match=r"--grid lambda 20 with --lr 0.1"):
        validate_against(grid, "sgd", "decoupled", 0.1)
    with pytest.raises(UserError, match=r"--grid lambda 20 with --lr 0.05"):
        validate_against(TuneOptions(grid=[1e-3, 20.0], lr_grid=[0.01, 0.05]), "sgd",
                         "decoupled", 0.01)
    with pytest.raises(UserError, match=r"--range lambda 50"):
        validate_against(TuneOptions(search="random", range=(1e-4, 50.0), trials=3,
                                     modes=["coupled", "decoupled"]), "sgd", None, 0.1)
    with pytest.raises(UserError, match=r"--grid lambda 20 with --lr 0.1"):
        validate_against(grid, "adamw", None, 0.1)
    validate_against(grid, "sgd", "coupled", 0.1)
    validate_against(grid, "adam", None, 0.1)


def test_train_refuses_decoupled_decay_with_lr_times_lambda_at_least_one(tmp_path, capsys):
    rc = main(["train", "--data", SYN, "--epochs", "1", "--batch-size", "4", "--device", "cpu",
               "--optimizer", "sgd", "--decay-mode", "decoupled", "--lr", "1",
               "--weight-decay", "1000", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    line, = err.strip().splitlines()
    assert "--lr 1 x --weight-decay 1000 = 1000 >= 1" in line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_timm_universal_encoders_are_accepted_and_unknown_ones_named():
    model = build_model("unet", "tu-mobilenetv3_small_050", 3)
    assert type(model.encoder).__name__ == "TimmUniversalEncoder"
    with pytest.raises(UserError, match="timm has no model 'no_such_net'"):
        build_model("unet", "tu-no_such_net", 3)
