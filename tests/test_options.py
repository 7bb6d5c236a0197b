"""The studies' options are declared once, on their dataclass fields: every field is one flag
of its command, with the field's help and default, and the parsed command line builds the
dataclass with no hand mapping. Parsing only: nothing here trains or reads data.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from segdecay.cli import build_parser
from segdecay.cli.tune import study_inputs
from segdecay.config import TrainConfig
from segdecay.errors import UserError
from segdecay.options import options_from_args
from segdecay.studies.compare.options import CompareOptions, Variant
from segdecay.studies.spectrum.options import SpectrumOptions
from segdecay.studies.tune.options import TuneOptions

# Today's flags, written out by hand: a renamed or lost flag fails here.
FLAGS = {
    TuneOptions: {
        "grid": "--grid", "tau_grid": "--tau-grid", "range": "--range", "search": "--search",
        "trials": "--trials", "lr_grid": "--lr-grid", "modes": "--decay-modes",
        "losses": "--loss-grid", "weightings": "--class-weights-grid", "folds": "--folds",
        "holdout": "--holdout", "group_by": "--group-by", "repeats": "--repeats",
        "pruner": "--pruner", "screen_fraction": "--screen-fraction", "select": "--select",
        "refit": "--refit", "refit_steps": "--refit-steps", "refit_epochs": "--refit-epochs",
        "refit_size": "--refit-size", "refit_lambda": "--refit-lambda",
        "rule_point": "--rule-point", "storage": "--storage", "study": "--study",
        "workers": "--workers", "heartbeat": "--heartbeat"},
    CompareOptions: {
        "seeds": "--seeds", "baseline": "--baseline", "retune_lr": "--retune-lr",
        "retune_epochs": "--retune-epochs", "workers": "--workers"},
    SpectrumOptions: {
        "data": "--data", "split": "--split", "checkpoint": "--checkpoint",
        "device": "--device", "cutoff": "--cutoff", "lowpass": "--lowpass",
        "lowpass_kind": "--lowpass-kind", "noise_eps": "--noise-eps",
        "boundary_ratio": "--boundary-ratio", "kernel_fft": "--kernel-fft", "seed": "--seed",
        "max_images": "--max-images"},
}
# Fields with no flag of their own (derived from other options, or Python API only).
INTERNAL = {TuneOptions: {"seed"}, CompareOptions: {"variants", "per_image"},
            SpectrumOptions: {"bands"}}
COMMAND = {TuneOptions: "tune", CompareOptions: "compare", SpectrumOptions: "spectrum"}
# The command's own flags that are no study option (and TrainConfig's, where it trains).
PLAIN = {"tune": {"--help", "--out", "--config", "--quiet"},
         "compare": {"--help", "--out", "--config", "--quiet", "--variant", "--variants",
                     "--preset", "--from-tune"},
         "spectrum": {"--help", "--out", "--quiet"}}
TRAIN_FLAGS = {"--decay-rule" if n == "decay_rules" else "--" + n.replace("_", "-")
               for n in TrainConfig.fields()}


def _parser(command: str) -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@pytest.mark.parametrize("cls", list(FLAGS), ids=lambda c: c.__name__)
def test_every_field_is_one_flag_with_its_declared_help_and_default(cls) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(fields) == set(FLAGS[cls]) | INTERNAL[cls]
    for name in INTERNAL[cls]:
        assert fields[name].metadata.get("internal"), f"{name}: say where its value comes from"
    actions = [a for a in _parser(COMMAND[cls])._actions if a.option_strings]
    for name, flag in FLAGS[cls].items():
        mine = [a for a in actions if a.dest == name]
        assert len(mine) == 1, f"{name}: {len(mine)} flags"
        action, f = mine[0], fields[name]
        assert action.option_strings[0] == flag
        assert action.default is argparse.SUPPRESS, f"{flag}: the default is the field's"
        text = action.help.replace("%%", "%")
        assert f.metadata["help"] in text, flag
        shown = f.metadata["default_text"] or _default(f)
        if isinstance(shown, list):
            shown = ",".join(str(v) for v in shown)
        if f.metadata["switch"] or shown is None or shown == "":
            assert "[default:" not in text, (flag, text)
        else:
            assert text.endswith(f"[default: {shown}]"), (flag, text)
    others = TRAIN_FLAGS | PLAIN[COMMAND[cls]]  # tune's seed is the train options' --seed
    for name in INTERNAL[cls]:
        assert all(a.option_strings[0] in others for a in actions if a.dest == name), name


@pytest.mark.parametrize("command", list(PLAIN))
def test_no_flag_of_a_study_is_declared_outside_its_dataclass(command: str) -> None:
    cls = next(c for c, name in COMMAND.items() if name == command)
    trains = command != "spectrum"
    flags = {s for a in _parser(command)._actions for s in a.option_strings
             if s.startswith("--")}
    expected = PLAIN[command] | set(FLAGS[cls].values()) | (TRAIN_FLAGS if trains else set())
    negatives = {"--no-" + f[2:] for f in expected}  # the --no- forms of bool options
    assert flags - negatives == expected


def test_help_shows_the_same_defaults_as_before() -> None:
    """Spot checks, by hand, of the help texts the fields now produce."""
    def help_of(command: str, flag: str) -> str:
        return next(a.help for a in _parser(command)._actions if flag in a.option_strings)

    assert help_of("tune", "--folds") == "k of k-fold CV [default: 3]"
    assert help_of("tune", "--screen-fraction").endswith("steps [default: 0.3]")
    assert help_of("tune", "--search") == ("grid | random | tpe [default: grid with --grid, "
                                           "else tpe]")
    assert help_of("tune", "--rule-point").endswith("at what compute [default: on]")
    assert help_of("tune", "--heartbeat").endswith("retried [default: 10]")
    assert "[default:" not in help_of("tune", "--holdout")
    assert help_of("compare", "--seeds") == "a count (3) or a list (0,1,2) [default: 3]"
    assert help_of("compare", "--retune-epochs").endswith("[default: epochs/3]")
    assert help_of("spectrum", "--lowpass").endswith("[default: 0.0625,0.125,0.25]")
    assert help_of("spectrum", "--device") == "auto | cpu | cuda [default: auto]"


def _tune(*argv: str) -> TuneOptions:
    return study_inputs(_parse("tune", "--out", "t", *argv))[1]


def test_a_tune_command_line_builds_its_options() -> None:
    got = _tune("--grid", "1e-3,0,1e-4", "--lr-grid", "0.1,0.01", "--decay-modes",
                "coupled,decoupled", "--loss-grid", "ce,ce+dice,ce", "--class-weights-grid",
                "none,enet", "--holdout", "--repeats", "2", "--pruner", "race",
                "--screen-fraction", "0.5", "--select", "min", "--refit-steps", "100",
                "--refit-size", "64x96", "--refit-lambda", "same", "--no-rule-point",
                "--storage", "journal:x.journal", "--study", "s", "--workers", "2",
                "--heartbeat", "5", "--seed", "7", "--epochs", "2")
    assert got == TuneOptions(
        grid=[0.0, 1e-4, 1e-3], tau_grid=None, range=None, search="grid", trials=None,
        lr_grid=[0.01, 0.1], modes=["coupled", "decoupled"], losses=["ce", "ce+dice"],
        weightings=["none", "enet"], folds=1, holdout=True, group_by=None, repeats=2,
        pruner="race", screen_fraction=0.5, select="min", refit=True, refit_steps=100,
        refit_epochs=None, refit_size=[64, 96], refit_lambda="same", rule_point=False,
        storage="journal:x.journal", study="s", workers=2, heartbeat=5, seed=7)


def test_tune_derives_search_folds_refit_and_seed() -> None:
    assert _tune() == TuneOptions(search="tpe", folds=3, refit=False, seed=0)
    assert _tune("--range", "1e-5:1e-1", "--trials", "8", "--folds", "5", "--refit",
                 "--group-by", r"(seq\d+)") == TuneOptions(
        range=(1e-5, 0.1), search="tpe", trials=8, folds=5, refit=True, group_by=r"(seq\d+)")
    assert _tune("--tau-grid", "10,5").search == "grid"
    assert _tune("--tau-grid", "10,5").tau_grid == [5.0, 10.0]
    assert _tune("--grid", "0", "--search", "random").search == "random"
    assert _tune("--holdout", "--folds", "2").folds == 2  # validate() names it
    assert _tune("--refit-epochs", "4").refit is True
    native = _tune("--refit-size", "native")  # implies --refit, at the fits' own inputs
    assert native.refit is True and native.refit_size is None
    assert _tune("--grid", "").grid is None  # an empty list option is no list, as before


@pytest.mark.parametrize("argv, message", [
    (("--tau-grid", "x"), "--tau-grid 'x': expected comma-separated numbers"),
    (("--grid", "-1"), "--grid '-1': need finite values >= 0"),
    (("--range", "1:0"), "--range '1:0': need 0 < LOW < HIGH"),
    (("--refit-size", "4"), "--refit-size '4': expected HxW with both sides >= 8"),
])
def test_a_bad_tune_value_names_its_flag(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(UserError) as info:
        _tune(*argv)
    assert str(info.value).startswith(message)


def test_a_compare_command_line_builds_its_options() -> None:
    args = _parse("compare", "--out", "c", "--variant", "a: --lr 0.1", "--seeds", "0,4",
                  "--baseline", "a", "--retune-lr", "0.1,0.01", "--retune-epochs", "2",
                  "--workers", "3", "--epochs", "1")
    variants = [Variant("a", {"lr": 0.1})]
    assert options_from_args(CompareOptions, args, {"variants": variants}) == CompareOptions(
        variants=variants, seeds=[0, 4], baseline="a", retune_lr=[0.01, 0.1],
        retune_epochs=2, workers=3, per_image=True)
    bare = options_from_args(CompareOptions, _parse("compare", "--out", "c"), {"variants": []})
    assert bare == CompareOptions(variants=[], seeds=[0, 1, 2], baseline=None, retune_lr=None,
                                  retune_epochs=None, workers=1)
    with pytest.raises(UserError, match="--seeds 'x': expected a count"):
        options_from_args(CompareOptions, _parse("compare", "--out", "c", "--seeds", "x"),
                          {"variants": []})


def test_a_spectrum_command_line_builds_its_options() -> None:
    args = _parse("spectrum", "r1", "r2", "--out", "o", "--data", "synthetic", "--split",
                  "test", "--checkpoint", "best", "--cutoff", "0.125", "--lowpass",
                  "0.25,0.0625", "--lowpass-kind", "gaussian", "--noise-eps", "0.3",
                  "--boundary-ratio", "0.05", "--kernel-fft", "16", "--max-images", "4",
                  "--seed", "3", "--device", "cpu")
    assert options_from_args(SpectrumOptions, args) == SpectrumOptions(
        data="synthetic", split="test", checkpoint="best", device="cpu", cutoff=0.125,
        lowpass=[0.25, 0.0625], lowpass_kind="gaussian", noise_eps=0.3, boundary_ratio=0.05,
        kernel_fft=16, seed=3, max_images=4)
    bare = options_from_args(SpectrumOptions, _parse("spectrum", "r", "--out", "o"))
    assert bare == SpectrumOptions(
        data=None, split="val", checkpoint="last", device="auto", cutoff=0.25,
        lowpass=[0.0625, 0.125, 0.25], lowpass_kind="ideal", noise_eps=0.5,
        boundary_ratio=0.02, kernel_fft=32, seed=0, max_images=None)
    with pytest.raises(UserError, match="--lowpass 0.1,abc: not a comma-separated"):
        options_from_args(SpectrumOptions, _parse("spectrum", "r", "--out", "o", "--lowpass",
                                                  "0.1,abc"))
