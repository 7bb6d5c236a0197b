"""benchmarks/peer_recipes.py keeps a finished row only if it was trained with the recipe
given now (an edited recipe file must not be reported with the old file's numbers)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _peer_recipes():
    spec = importlib.util.spec_from_file_location("peer_recipes",
                                                  ROOT / "benchmarks" / "peer_recipes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_recipes"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_kept_row_with_another_recipe_is_refused_naming_the_keys(tmp_path, capsys):
    peers = _peer_recipes()
    protocol = peers.Protocol(data="synthetic", arch="Unet", encoder="resnet18", size=None,
                              crop=None, eval_size=None, batch_size=2, epochs=1, steps=None,
                              amp=False, vflip=False, norm="imagenet")
    from segdecay.config import TrainConfig

    recipe = peers.row_recipe("tuned", protocol, 0, {"tuned": TrainConfig(weight_decay=2.0)})
    assert recipe["weight_decay"] == 2.0 and recipe["seed"] == 0
    peers.check_same_recipe({"seed": 0, "recipe": recipe}, recipe, "tuned", 0, tmp_path)
    edited = peers.row_recipe("tuned", protocol, 0, {"tuned": TrainConfig(weight_decay=3.0,
                                                                          loss="dice")})
    with pytest.raises(SystemExit, match=r"row tuned seed 0 .*\(loss, weight_decay differ\)"):
        peers.check_same_recipe({"seed": 0, "recipe": recipe}, edited, "tuned", 0, tmp_path)
    # A row stored before segdecay had an option trained at its default: kept at the default,
    # refused at another value.
    older = {k: v for k, v in recipe.items() if k != "ema"}
    peers.check_same_recipe({"seed": 0, "recipe": older}, recipe, "tuned", 0, tmp_path)
    averaged = peers.row_recipe("tuned", protocol, 0, {"tuned": TrainConfig(weight_decay=2.0,
                                                                            ema=0.1)})
    with pytest.raises(SystemExit, match=r"\(ema differ\)"):
        peers.check_same_recipe({"seed": 0, "recipe": older}, averaged, "tuned", 0, tmp_path)
    peers.check_same_recipe({"seed": 0}, edited, "tuned", 0, tmp_path)  # an old row: a note
    assert "predates stored recipes" in capsys.readouterr().out
    smp_row = peers.row_recipe("smp", protocol, 0, {})
    assert smp_row == peers.row_recipe("smp", protocol, 1, {})  # a peer's recipe has no seed
