"""Figures of a tune: the CV curve with both choices, the fit picture, norms, compute."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from segdecay.fileio import atomic_write_text
from segdecay.report.html import figure_to_img, html_table, lambda_axis, page
from segdecay.studies.tune.evidence import EVIDENCE_WORDS
from segdecay.studies.tune.recipe import part_note


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _tau_axis(ax, payload: dict[str, Any]) -> None:
    """The decay timescale tau (epochs of the CV fits) of each lambda, on the top axis."""
    taus = {t["weight_decay"]: t.get("tau_epochs") for t in payload["trials"]}
    ticks = [lam for lam, tau in sorted(taus.items()) if _finite(tau)]
    if not ticks:
        return
    # Labels at each lambda's own data position: a secondary axis would rebuild the symlog
    # scale with default parameters and put them a decade off.
    for lam in ticks:
        ax.annotate(f"{taus[lam]:.3g}", xy=(lam, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    fontsize=7)
    ax.annotate("tau (epochs)", xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, 12),
                textcoords="offset points", ha="center", va="bottom", fontsize=8)


def _paired_figure(sel: dict[str, Any]) -> str:
    """Each lambda's mean paired difference from lambda.min with its 95% interval."""
    import matplotlib.pyplot as plt

    pts = sel["paired"]
    lams = [p["lam"] for p in pts]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(lams, [p["mean_diff"] for p in pts],
                yerr=[[p["mean_diff"] - p["ci_low"] for p in pts],
                      [p["ci_high"] - p["mean_diff"] for p in pts]],
                fmt="o", capsize=4, label="mean paired difference, 95% interval")
    ax.plot(lams, [-p["se"] for p in pts], "_", color="tab:red", markersize=14,
            label="-1 paired SE (the 1-SE band)")
    ax.axhline(0.0, color="grey", lw=0.8)
    lambda_axis(ax, lams)
    ax.set_ylabel("val mIoU minus lambda.min's, same folds")
    ax.legend(fontsize=8)
    return figure_to_img(fig)


def _figures(payload: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    trials = [t for t in payload["trials"] if t["weight_decay"] is not None]
    done = [t for t in trials if t["state"] == "COMPLETE"]
    sections = []
    sel = payload.get("selection")
    if sel:
        sections.append(("Cross-validated mIoU against lambda", _curve_figure(sel, payload)))
        sections.append(("Paired differences from lambda.min", _paired_figure(sel)))
    if done:
        sections.append(("Train and validation mIoU, weight norm", _fit_figure(done)))
    if trials:
        sections.append(("Compute saved by pruning", _compute_figure(trials, payload)))
    return sections


def _curve_figure(sel: dict[str, Any], payload: dict[str, Any]) -> str:
    """The CV curve with lambda.min and both lambda.1se, tau on the top axis."""
    import matplotlib.pyplot as plt

    curve = sel["curve"]
    lams = [p["lam"] for p in curve]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(lams, [p["mean"] for p in curve], yerr=[p["se"] for p in curve],
                fmt="o-", capsize=4, label="CV mIoU (mean ± SE over folds)")
    ax.axhline(sel["threshold"], color="grey", ls=":", label="best - 1 SE")
    ax.axvline(sel["lambda_min"], color="tab:green", ls="--",
               label=f"lambda.min = {sel['lambda_min']:g}")
    ax.axvline(sel["lambda_1se"], color="tab:red", ls="--",
               label=f"lambda.1se (paired) = {sel['lambda_1se']:g}")
    ax.axvline(sel["lambda_1se_unpaired"], color="tab:purple", ls=":",
               label=f"lambda.1se (unpaired) = {sel['lambda_1se_unpaired']:g}")
    lambda_axis(ax, lams)
    _tau_axis(ax, payload)
    ax.set_ylabel("val mIoU")
    ax.legend()
    return figure_to_img(fig)


def _fit_figure(done: list[dict[str, Any]]) -> str:
    """Train against held-out mIoU of the completed trials, and their weight norms."""
    import matplotlib.pyplot as plt

    done.sort(key=lambda t: t["weight_decay"])
    lams = [t["weight_decay"] for t in done]
    fig, ax = plt.subplots(1, 2, figsize=(13, 4))
    ax[0].plot(lams, [t["train_miou"] for t in done], "o-", label="train mIoU (fold fits)")
    ax[0].plot(lams, [t["cv_mean"] for t in done], "o-", label="held-out fold mIoU")
    ax[0].set_ylabel("mIoU")
    gaps = [t["train_miou"] - t["cv_mean"] for t in done]
    widest = max(range(len(gaps)), key=gaps.__getitem__)
    ax[0].set_title(f"train - held-out gap: {gaps[0]:.3f} at lambda {lams[0]:g}, "
                    f"widest {gaps[widest]:.3f} at {lams[widest]:g}, "
                    f"{gaps[-1]:.3f} at {lams[-1]:g}", fontsize=9)
    ax[0].legend()
    lambda_axis(ax[0], lams)
    ax[1].plot(lams, [t["weight_norm"] for t in done], "o-")
    ax[1].set_ylabel("||w|| at the end of training")
    ax[1].set_title("weight norm")
    lambda_axis(ax[1], lams)
    return figure_to_img(fig)


def _compute_figure(trials: list[dict[str, Any]], payload: dict[str, Any]) -> str:
    """Fit-epochs each trial ran against the full budget of one trial (pruned in orange)."""
    import matplotlib.pyplot as plt

    full = payload.get("fit_epochs_per_trial") or (payload["epochs_per_fit"]
                                                   * payload["folds"] * payload["repeats"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [f"#{t['number']}\n{t['weight_decay']:g}" for t in trials]
    colours = ["tab:orange" if t["pruned"] else "tab:blue" for t in trials]
    ax.bar(range(len(trials)), [t["epochs_run"] for t in trials], color=colours)
    ax.axhline(full, color="grey", ls=":", label="full budget per trial")
    ax.set_xticks(range(len(trials)), labels, fontsize=7)
    ax.set_ylabel("fit-epochs run")
    frac = payload["compute"]["fraction"]
    ax.set_title(f"compute used: {frac:.0%} of the full search (orange: pruned)"
                 if _finite(frac) else "compute used")
    ax.legend()
    return figure_to_img(fig)


def _recipe_section(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """What each searched part of the chosen recipe bought over its plain value, paired."""
    parts = payload.get("recipe_parts")
    if not parts:
        return []
    s = payload["selection"]
    head = (f"<p>Chosen recipe: lambda {payload['chosen']:g}, lr {s['lr']}, decay mode "
            f"{s['decay_mode']}, loss {s['loss']}, class weights {s['class_weights']}. Each "
            "row puts one part back to its plain value and compares, fit by fit on the same "
            "folds (Nadeau-Bengio corrected SE, t interval).</p>")
    table = html_table(["part", "chosen", "plain", "mean paired gain", "95% low", "95% high",
                        "fits", "note"],
                       [[r["part"], r["chosen"], r["reference"], r["mean_gain"],
                         r.get("ci_low"), r.get("ci_high"), r.get("n"), part_note(r)]
                        for r in parts])
    return [("What each part of the recipe bought", head + table)]


def write_tune_report(run_dir: Path, payload: dict[str, Any]) -> Path:
    """report.html of a tune: choices, figures, trial table, refit, dashboard hint."""
    sections = [("Choice of lambda", _choice_section(payload)), *_recipe_section(payload),
                *_figures(payload), ("Trials", _trials_table(payload["trials"]))]
    if payload.get("screen"):
        sections.append(_screen_section(payload["screen"]))
    if payload.get("refit"):
        sections.append(_refit_section(payload["refit"]))
    sections.append(("Browse the study", f"<p><code>optuna-dashboard '{payload['storage']}'"
                     "</code> (pip install optuna-dashboard; a journal file opens the same "
                     "way); the storage URL is shown with its password removed.</p>"))
    path = run_dir / "report.html"
    atomic_write_text(path, page(f"segdecay tune {run_dir.name}", sections))
    return path


def _choice_section(payload: dict[str, Any]) -> str:
    """The choices and their CV scores, the evidence in words, the paired table."""
    choice_rows, paired_table, words = [], "", ""
    if payload.get("selection"):
        s = payload["selection"]
        choice_rows = [["lambda.min", s["lambda_min"], s["best_mean"], s["best_se"]],
                       ["lambda.1se (paired)", s["lambda_1se"], None, None],
                       ["lambda.1se (unpaired, glmnet)", s["lambda_1se_unpaired"], None, None]]
        paired_table = html_table(
            ["lambda", "mean paired diff", "95% low", "95% high", "corrected SE", "naive SE",
             "fits", "within 1 SE"],
            [[p["lam"], p["mean_diff"], p["ci_low"], p["ci_high"], p["se"], p["se_naive"],
              p["n"], "yes" if p["lam"] in s["within_paired"] else ""] for p in s["paired"]])
        words = _evidence_words(payload)
    return html_table(["choice", "lambda", "CV mIoU", "SE"], choice_rows) + words + (
        f"<p>chosen ({payload.get('select', '-')}): {payload.get('chosen', '-')}; "
        f"{payload['design']}, pruner "
        f"{payload['pruner']}. {payload['se_caveat']}.</p>") + paired_table


def _evidence_words(payload: dict[str, Any]) -> str:
    """The evidence sentences, the paired rule and the check on the default rule."""
    ev = payload.get("evidence", {})
    words = "".join(f"<p>{html.escape(ev[k])}</p>" for k in EVIDENCE_WORDS if ev.get(k))
    words += f"<p>{html.escape(payload['selection']['paired_rule'])}.</p>"
    if payload.get("rule_check"):
        words += ("<p>Check on the default rule: "
                  f"{html.escape(payload['rule_check']['sentence'])}.</p>")
    return words


def _trials_table(trials: list[dict[str, Any]]) -> str:
    rows = [[t["number"], t["state"], t["weight_decay"], t.get("tau_epochs"), t["lr"],
             t["decay_mode"], t.get("loss"), t.get("class_weights"),
             t["cv_mean"], t["cv_se"], t["folds_done"], t["train_miou"], t["weight_norm"],
             t["epochs_run"]] for t in trials]
    return html_table(["#", "state", "lambda", "tau (epochs)", "lr", "mode", "loss",
                       "class weights", "CV mIoU", "SE", "folds", "train mIoU", "||w||",
                       "fit-epochs"], rows)


def _refit_section(r: dict[str, Any]) -> tuple[str, str]:
    """The refit's per-class IoU on its split, with the budget lambda was moved to."""
    moved = r.get("transfer")
    budget = (f" for {moved['refit_steps']:.0f} steps (the CV's {moved['lambda_cv']:g} "
              f"at {moved['fit_steps']:.0f} steps, --refit-lambda {moved['rule']})"
              if moved else "")
    return (f"Refit with lambda = {r['weight_decay']:g}{budget} on the whole training split, "
            f"scored on {r['split']}",
            html_table(["class", "IoU"], list(zip(r["class_names"], r["iou"], strict=True))
                       + [["mIoU", r["miou"]]]))


def _screen_section(screen: dict) -> tuple[str, str]:
    """The short rung of --pruner screen: its budget, its curve, what it promoted."""
    budget = f"{screen['steps']} steps" if screen["steps"] else f"{screen['epochs']} epochs"
    promoted = {k: v for k, v in screen["promoted"].items() if k != "setting"}
    axis, values = next(iter(promoted.items()))
    name = "tau (epochs)" if axis == "tau_epochs" else "lambda"
    setting = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in
                        screen["promoted"]["setting"].items() if v is not None)
    curve = html_table(["lambda", "CV mIoU", "SE", "fits"],
                       [[p["lam"], p["mean"], p["se"], p["n"]]
                        for p in screen["selection"]["curve"]])
    text = (f"<p>Every grid point ran on every fold at {budget} a fit ({screen['fraction']:g} "
            f"of the budget), lambda x {screen['lambda_scale']:g} so tau stays the same "
            f"fraction of the run; {screen['epochs_run']} fit-epochs. Promoted to the full "
            f"budget: {name} {', '.join(f'{v:g}' for v in values)} "
            f"({html.escape(setting)}). The curve below is "
            "the short runs' (grid lambdas, before the x scale).</p>")
    return "Screen: complete short runs first", text + curve
