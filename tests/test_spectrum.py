"""Frequency analysis: the math against theory, then ``segdecay spectrum`` end to end.

The spectra, filters, noise and Boundary IoU are checked on signals whose answer is known
(a constant, a sinusoid, white noise, a square shifted by one pixel), so a wrong frequency
axis, a missing normalisation or an off-by-one erosion fails here before it can bend a
verdict about weight decay.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from segdecay.cli import main
from segdecay.studies.spectrum.measures import (
    BoundaryIoU,
    band_noise,
    boundary_dilation,
    boundary_iou,
    kernel_spectra,
    low_frequency_fraction,
    lowpass,
    mask_boundary,
    power_spectrum_2d,
    radial_frequency,
    radial_power_spectrum,
    summed_kernel_power,
)

# ----------------------------------------------------------------------------- radial spectra


def test_constant_has_all_its_energy_at_frequency_zero():
    x = torch.full((32, 32), 3.0)
    freqs, power = radial_power_spectrum(x)
    assert freqs[0] == 0 and math.isclose(float(freqs[-1]), 0.5)
    # Orthonormal FFT: the DC coefficient is mean * N = 3 * 32, so its power is 9 * 1024,
    # the whole energy sum(x^2) (Parseval); every other annulus is empty.
    assert float(power[0]) == pytest.approx(9 * 1024)
    assert float(power[1:].abs().max()) < 1e-9
    assert float(low_frequency_fraction(x, cutoff=0.01)) == pytest.approx(1.0)


@pytest.mark.parametrize(("ky", "kx", "radius_bin"), [(0, 5, 5), (7, 0, 7), (3, 4, 5)])
def test_sinusoid_peaks_at_its_radius(ky, kx, radius_bin):
    n = 64
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    # ky cycles down and kx across the image: frequency (ky/N, kx/N), radius sqrt(ky^2+kx^2)/N
    # (3, 4) -> 5/64: the radial axis must combine both directions.
    x = torch.cos(2 * math.pi * (ky * yy + kx * xx) / n).double()
    freqs, power = radial_power_spectrum(x)
    assert int(power.argmax()) == radius_bin
    assert float(freqs[radius_bin]) == pytest.approx(radius_bin / n)
    others = torch.cat([power[:radius_bin], power[radius_bin + 1:]])
    assert float(others.abs().max()) < 1e-9 * float(power.max())
    # All energy sits at radius 5/64 ~ 0.078: below a cutoff of 0.1, none below 0.07.
    if radius_bin == 5:
        assert float(low_frequency_fraction(x, 0.1)) == pytest.approx(1.0)
        assert float(low_frequency_fraction(x, 0.07)) == pytest.approx(0.0, abs=1e-12)


def test_white_noise_spectrum_is_flat():
    gen = torch.Generator().manual_seed(0)
    sigma = 2.0
    x = sigma * torch.randn(100, 64, 64, generator=gen)
    freqs, power = radial_power_spectrum(x)
    mean = power.mean(dim=0)
    # E|F(f)|^2 = sigma^2 at every frequency (orthonormal FFT). Bins >= 4 average >= 2,500
    # samples over the 100 images: within 10%. The few samples of the first bins vary more.
    assert torch.all((mean[4:] / sigma**2 - 1).abs() < 0.1), mean / sigma**2
    assert torch.all((mean[:4] / sigma**2 - 1).abs() < 0.35)
    # The energy below 0.25 cycles/px is the share of grid points there: about pi * 0.25^2.
    share = float((radial_frequency(64, 64) <= 0.25).double().mean())
    assert share == pytest.approx(math.pi * 0.25**2, abs=0.01)
    frac = float(low_frequency_fraction(x, 0.25).mean())
    assert frac == pytest.approx(share, abs=0.01)


def test_zero_padding_keeps_energy_and_the_kernel_shortcut_is_exact():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(6, 4, 3, 5, generator=gen)
    padded = power_spectrum_2d(w, 32)
    assert padded.shape[-2:] == (32, 32)
    # Parseval with zero padding: the energy of each kernel is unchanged.
    assert torch.allclose(padded.sum(dim=(-2, -1)), (w.double() ** 2).sum(dim=(-2, -1)))
    for size in (5, 8, 32):
        direct = power_spectrum_2d(w, size).sum(dim=(0, 1))
        assert torch.allclose(summed_kernel_power(w, size), direct, atol=1e-10)


class _TwoConvs(nn.Module):
    """Registers ``late`` first but calls ``early`` first; a 1x1 conv sits in between."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Conv2d(4, 2, 3, padding=1, bias=False)
        self.mix = nn.Conv2d(4, 4, 1)
        self.early = nn.Conv2d(3, 4, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late(self.mix(self.early(x)))


def test_kernel_spectra_follow_forward_order_and_theory():
    model = _TwoConvs()
    with torch.no_grad():
        model.early.weight.zero_()
        model.early.weight[..., 1, 1] = 1.0  # deltas: flat spectrum
        checker = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])
        model.late.weight.copy_(checker.expand_as(model.late.weight))
    layers = kernel_spectra(model, torch.zeros(1, 3, 8, 8), cutoff=0.25, size=32)
    assert [(k.depth, k.name) for k in layers] == [(0, "early"), (1, "late")]  # no 1x1 "mix"
    early, late = layers
    assert early.kernels == 12 and early.energy == pytest.approx(12.0)
    # A delta has |F|^2 = 1/32^2 everywhere: its low fraction is the share of grid points at
    # radius <= 0.25, and its profile is flat.
    share = float((radial_frequency(32, 32) <= 0.25).double().mean())
    assert early.low_fraction == pytest.approx(share)
    assert max(early.spectrum) == pytest.approx(min(early.spectrum))
    # The checkerboard kernel's spectrum peaks at (0.5, 0.5): almost nothing below 0.25.
    assert late.low_fraction < 0.05
    assert sum(late.spectrum) == pytest.approx(1.0)
    assert kernel_spectra(model)[0].name == "late"  # no example input: registration order


# ----------------------------------------------------------------------------- filters, noise


def test_ideal_lowpass_removes_everything_above_the_cutoff_and_keeps_the_rest():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 48, 40, generator=gen, dtype=torch.float64)
    cutoff = 0.15
    y = lowpass(x, cutoff)
    assert y.shape == x.shape and y.dtype == x.dtype
    r = radial_frequency(48, 40)
    fx, fy = torch.fft.fft2(x, norm="ortho"), torch.fft.fft2(y, norm="ortho")
    above = r > cutoff
    assert float((fy.abs() ** 2)[..., above].sum()) < 1e-20 * float((fx.abs() ** 2).sum())
    assert torch.allclose(fy[..., ~above], fx[..., ~above], atol=1e-10)
    assert float(low_frequency_fraction(y, cutoff).min()) == pytest.approx(1.0)


def test_gaussian_lowpass_scales_a_sinusoid_by_the_gaussian_gain():
    n, k, cutoff = 64, 8, 0.1
    xx = torch.arange(n, dtype=torch.float64)[None, :].expand(n, n)
    x = torch.cos(2 * math.pi * k * xx / n)
    y = lowpass(x, cutoff, kind="gaussian")
    gain = math.exp(-((k / n) ** 2) / (2 * cutoff**2))  # r = 0.125: gain 0.458
    assert torch.allclose(y, gain * x, atol=1e-12)
    with pytest.raises(ValueError, match="ideal"):
        lowpass(x, 0.1, kind="box")


@pytest.mark.parametrize("band", [(0.0, 1 / 6), (1 / 6, 1 / 3), (1 / 3, 0.5)])
def test_band_noise_lies_in_its_band_with_the_requested_energy(band):
    eps = 0.3
    noise = band_noise((4, 3, 40, 48), band, eps, torch.Generator().manual_seed(3))
    assert noise.dtype == torch.float32
    # Exact L2 norm per image: eps * sqrt(C * H * W), the same in every band.
    norms = noise.double().flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((4,), eps * math.sqrt(3 * 40 * 48),
                                            dtype=torch.float64), rtol=1e-5)
    power = power_spectrum_2d(noise)
    r = radial_frequency(40, 48)
    inside = (r > band[0]) & (r <= band[1])
    assert float(power[..., ~inside].sum()) < 1e-10 * float(power.sum())
    # and it is spread over the band, not a few frequencies: over half the bins hold energy
    assert float((power[..., inside].mean(dim=(0, 1)) > 0.01 * power.max()).double().mean()) > 0.5
    again = band_noise((4, 3, 40, 48), band, eps, torch.Generator().manual_seed(3))
    assert torch.equal(noise, again)


def test_band_noise_refuses_an_empty_band():
    with pytest.raises(ValueError, match="holds no frequency"):
        band_noise((1, 4, 4), (0.6, 0.7), 0.1)


# ----------------------------------------------------------------------------- boundary IoU


def _square(top: int, left: int, n: int = 10, side: int = 4) -> torch.Tensor:
    m = torch.zeros(n, n, dtype=torch.bool)
    m[top:top + side, left:left + side] = True
    return m


def test_boundary_width_follows_the_image_diagonal():
    assert boundary_dilation(64, 64) == 2  # 0.02 * 90.5 = 1.81 -> 2
    assert boundary_dilation(32, 32) == 1  # 0.91 -> 1
    assert boundary_dilation(8, 8) == 1  # at least one pixel
    assert boundary_dilation(360, 480) == 12  # CamVid: 0.02 * 600


def test_boundary_iou_of_a_mask_with_itself_and_with_a_shifted_copy():
    a = _square(3, 3)
    assert boundary_iou(a, a, dilation=1) == 1.0
    assert boundary_iou(a, a) == 1.0
    # d = 1: the boundary of a 4x4 square is its outer ring of 16 - 2x2 = 12 pixels.
    assert int(mask_boundary(a, 1).sum()) == 12
    # Shift right by one pixel (rows 3-6, cols 3-6 -> cols 4-7). The rings share the top and
    # bottom rows at cols 4-6 (3 + 3 = 6 px); in rows 4-5 ring A has cols 3 and 6, ring B
    # cols 4 and 7: nothing in common. Boundary IoU = 6 / (12 + 12 - 6) = 1/3, while the
    # mask IoU is 12 / 20 = 0.6: edges are judged much more harshly.
    b = _square(3, 4)
    assert boundary_iou(b, a, dilation=1) == pytest.approx(1 / 3)
    # d = 2 erodes the 4x4 square away entirely: boundary = mask, so it is the mask IoU.
    assert boundary_iou(b, a, dilation=2) == pytest.approx(12 / 20)


def test_per_class_boundary_iou_counts_the_image_border_and_skips_ignored_pixels():
    a, b = _square(3, 3).long(), _square(3, 4).long()
    acc = BoundaryIoU(num_classes=2, ratio=0.02)  # 10x10: d = round(0.28) -> 1
    acc.update(b[None], a[None])
    got = acc.compute()
    # class 1: 1/3 as above. class 0 (background): its boundary is the 36-pixel image frame
    # (the border counts, as in Cheng et al.) plus the 20-pixel ring around the square, 56
    # px for each mask. Shared: the frame (36) and, of the rings (rows 2-7 x cols 2-7 vs
    # cols 3-8, minus the squares), rows 2 and 7 at cols 3-7 (5 + 5): 46. 46 / (56+56-46).
    assert got["biou"] == pytest.approx([46 / 66, 1 / 3])
    assert got["mbiou"] == pytest.approx((46 / 66 + 1 / 3) / 2)
    assert got["dilation"] == [1]
    # Ignored target pixels count nowhere. Ignore cols 5-9 of the target; class 0 is then
    # counted in cols 0-4 only.
    # Target class 0 = cols 0-4 minus the square (rows 3-6, cols 3-4). Its boundary: the
    # frame part (col 0: 10, rows 0/9 at cols 1-4: 8) = 18; col 4, which now borders the
    # ignored (non-class-0) half, rows 1, 2, 7, 8 = 4; around the square, rows 2/7 at cols
    # 2-3 (4) and col 2 at rows 3-6 (4) = 8. Total 30.
    # Prediction class 0 in cols 0-4: frame 18; around its square, rows 2/7 at cols 3-4 (4)
    # and col 3 at rows 3-6 (4) = 8. Total 26.
    # Shared: the frame 18 and (2,3), (2,4), (7,3), (7,4) = 22. IoU 22 / (30 + 26 - 22).
    target = a.clone()
    target[:, 5:] = 255
    acc = BoundaryIoU(num_classes=2, ratio=0.02)
    acc.update(b[None], target[None])
    assert acc.compute()["biou"][0] == pytest.approx(22 / 34)


# ----------------------------------------------------------------------------- end to end

SYN = "synthetic:size=32,n_train=8,n_val=8,n_test=8"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, one_torch_thread):
    """Two tiny runs (lambda 0 and 1) in one folder, plus a checkpoint-less fold fit."""
    from segdecay.config import TrainConfig
    from segdecay.training import Log, train

    root = tmp_path_factory.mktemp("sweep")
    for lam in (0.0, 1.0):
        cfg = TrainConfig(data=SYN, epochs=2, batch_size=4, lr=2e-3, weight_decay=lam,
                          device="cpu")
        train(cfg, root / f"wd{lam:g}", log=Log(quiet=True))
    fold = root / "trials" / "0000" / "r0f0"
    fold.mkdir(parents=True)
    (fold / "config.yaml").write_text((root / "wd0" / "config.yaml").read_text())
    return root


def _cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_spectrum_command_end_to_end(two_runs, tmp_path, capsys):
    from segdecay.data import load_dataset
    from segdecay.runs import load_run
    from segdecay.studies.spectrum.analyse import perturbed_miou
    from segdecay.training import evaluate_split

    out = tmp_path / "spec"
    rc, stdout, err = _cli(capsys, "spectrum", two_runs, "--out", out, "--device", "cpu",
                           "--lowpass", "0.125,0.25")
    assert rc == 0, err
    payload = json.loads((out / "spectrum.json").read_text())
    assert set(payload) == {"settings", "runs", "skipped", "verdict"}
    runs = payload["runs"]
    assert [r["weight_decay"] for r in runs] == [0.0, 1.0]
    assert [Path(s["path"]).name for s in payload["skipped"]] == ["r0f0"]
    for r in runs:
        layers = r["kernels"]["layers"]
        assert [la["depth"] for la in layers] == list(range(len(layers))) and len(layers) > 10
        assert layers[0]["name"] == "encoder.conv1" and layers[0]["kernel_size"] == [7, 7]
        assert all(0 <= la["low_fraction"] <= 1 for la in layers)
        p = r["predictions"]
        assert len(p["freqs"]) == len(p["pred_power"]) == len(p["gt_power"]) == 17
        assert 0 < p["pred_low_fraction"] <= 1 and 0 < p["gt_low_fraction"] <= 1
        br = r["band_reliance"]
        assert [e["cutoff"] for e in br["lowpass"]] == [0.125, 0.25]
        assert [e["band"] for e in br["noise"]] == ["low", "mid", "high"]
        b = r["boundary"]
        assert 0 <= b["boundary_iou"] <= 1 and b["dilation_px"] == [1]
        assert len(b["boundary_iou_per_class"]) == 6
        assert r["checkpoint"] == "last" and r["images"] == 8

    # The clean score is the one `segdecay evaluate` gives (same forward path and metrics),
    # and an identity "perturbation" through the spectrum's own input path reproduces it.
    run = two_runs / "wd1"
    config, meta, model, dev = load_run(run, "last", "cpu")
    data = load_dataset(SYN, seed=config.seed)
    result, _ = evaluate_split(model, data.val, 6, config, dev)
    assert runs[1]["band_reliance"]["clean_miou"] == pytest.approx(result["miou"], abs=1e-12)
    assert perturbed_miou(model, data.val, 6, config, dev, lambda x, _b: x) == pytest.approx(
        result["miou"], abs=1e-12)

    # The verdict quotes the measured numbers, not a canned text.
    verdict = payload["verdict"]
    first = [r["kernels"]["layers"][0]["low_fraction"] for r in runs]
    kernel_line = verdict["sentences"][0]
    assert f"{first[0]:.3f} at lambda=0" in kernel_line
    assert f"{first[1]:.3f} at lambda=1" in kernel_line
    assert "lambda=0" in verdict["headline"] and "lambda=1" in verdict["headline"]
    assert verdict["headline"] in stdout

    report = (out / "report.html").read_text()
    for heading in ("Verdict", "Kernel spectra", "Prediction spectra", "Band reliance",
                    "Boundary quality", "Skipped folders"):
        assert f"<h2>{heading}" in report
    assert len(re.findall(r'src="data:image/png;base64,', report)) == 4  # one per quantity


def test_spectrum_of_a_folder_without_runs_is_a_one_line_user_error(tmp_path, capsys):
    empty = tmp_path / "not_a_run"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("hello")
    for args, needle in [((empty,), str(empty)),
                         ((tmp_path / "missing",), "missing"),
                         ((empty, "--cutoff", "0.9"), "--cutoff")]:
        rc, _, err = _cli(capsys, "spectrum", *args, "--out", tmp_path / "o")
        assert rc == 2, err
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("segdecay spectrum: error: ")
        assert needle in lines[0]
    assert not (tmp_path / "o").exists()


def test_spectrum_rejects_a_bad_lowpass_list(two_runs, tmp_path, capsys):
    rc, _, err = _cli(capsys, "spectrum", two_runs / "wd0", "--out", tmp_path / "o",
                      "--lowpass", "0.1,abc")
    assert rc == 2 and "--lowpass" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- verdict


def _fake_run(lam: float, first: float, rest: float, ratio: float, high_drop: float,
              clean: float = 0.6, **recipe) -> dict:
    """The parts of one run's spectrum.json entry that the verdict reads."""
    layers = [{"depth": d, "name": f"conv{d}", "kernel_size": [3, 3], "low_fraction": f}
              for d, f in enumerate([first, rest, rest])]
    return {
        "weight_decay": lam, "optimizer": "adamw", "decay_mode": None, "lr": 2e-3, "l1": 0.0,
        "dropout": 0.0, "arch": "unet/resnet18", **recipe,
        "kernels": {"layers": layers},
        "predictions": {"high_energy_ratio": ratio},
        "band_reliance": {"clean_miou": clean,
                          "lowpass": [{"cutoff": 0.125, "miou": clean - 0.2}],
                          "noise": [{"band": b, "miou": clean - (high_drop if b == "high"
                                                                 else 0.05)}
                                    for b in ("low", "mid", "high")]},
        "boundary": {"miou": clean, "boundary_iou": 0.4},
    }


def test_verdict_is_computed_from_the_numbers():
    from segdecay.studies.spectrum.options import SpectrumOptions
    from segdecay.studies.spectrum.verdict import verdict

    opts = SpectrumOptions(lowpass=[0.125])
    towards_low = [_fake_run(0.0, 0.30, 0.20, 0.80, 0.10), _fake_run(3.0, 0.45, 0.35, 0.50, 0.02)]
    v = verdict(towards_low, opts)
    assert "support the claim" in v["headline"] and "lambda=3" in v["headline"]
    assert "rises from 0.300 at lambda=0 to 0.450 at lambda=3" in v["sentences"][0]
    assert "in 3 and falls by more than 0.01 in 0" in v["sentences"][0]
    assert v["votes"] == {"kernels": 1, "predictions": 1, "band_reliance": 1}
    assert "high band 0.100 -> 0.020" in v["sentences"][2]
    assert "to 0.125 cycles/px (ideal) costs 0.200 mIoU at lambda=0" in v["sentences"][3]

    towards_high = [_fake_run(0.0, 0.45, 0.35, 0.50, 0.02), _fake_run(3.0, 0.30, 0.20, 0.80, 0.10)]
    assert "contradict the claim" in verdict(towards_high, opts)["headline"]
    split = [_fake_run(0.0, 0.30, 0.20, 0.50, 0.02), _fake_run(3.0, 0.45, 0.35, 0.80, 0.10)]
    v = verdict(split, opts)
    assert "do not settle" in v["headline"] and "One run per lambda" in v["headline"]

    one = verdict([_fake_run(1.0, 0.3, 0.2, 0.5, 0.1)], opts)
    assert one["headline"].startswith("Only one lambda (1)") and one["sentences"] == []
    # Two variants at the same lambda (a compare folder) are averaged, and the verdict says so.
    mixed = [*towards_low, _fake_run(3.0, 0.45, 0.35, 0.50, 0.02, dropout=0.2)]
    v = verdict(mixed, opts)
    assert "differ in dropout" in v["headline"] and "One run per lambda" not in v["headline"]
    # An underfitting largest lambda: the verdict also compares lambda=0 with the best one.
    sweep = [_fake_run(0.0, 0.30, 0.20, 0.80, 0.10),
             _fake_run(3.0, 0.35, 0.25, 0.60, 0.05, clean=0.62),
             _fake_run(10.0, 0.50, 0.35, 0.30, 0.01, clean=0.50)]
    last = verdict(sweep, opts)["sentences"][-1]
    assert last.startswith("lambda=10 scores 0.120 mIoU below the best lambda (3, mIoU 0.620)")
    assert "first-layer low-frequency fraction 0.300 -> 0.350" in last
    assert "high-frequency ratio 0.800 -> 0.600" in last
    assert "high-band noise 0.100 -> 0.050" in last
