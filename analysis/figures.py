"""Figures of an Analysis, one style, PNG + PDF.

Figures are built as matplotlib `Figure` objects on the Agg canvas (never pyplot), so drawing them changes
no global backend or state: the CLI, tests and notebooks can all call these functions. Every function
returns the Figure; `save` writes it as PNG and PDF.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from analysis.answers import answer_of
from analysis.correlate import CANDIDATES, interval, verdict
from analysis.fits import PowerLawFit
from analysis.kinds import OTHER_COLOUR, curve, short_name
from analysis.words import column_name, group_name, share_name

_OTHER = OTHER_COLOUR
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.1),
         "figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight", "axes.titlesize": "medium",
         "legend.frameon": False, "pdf.fonttype": 42}


def colour(group: str) -> str:
    """A curve's colour (analysis.kinds.CURVES; grey for a label it does not know)."""
    return curve(group).colour


@contextmanager
def style():
    """The one style of every figure (rcParams for the duration only)."""
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, size=(6.0, 4.0)):
    """A Figure on the Agg canvas and its axes (always a 2D array)."""
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))


def save(fig: Figure, stem) -> Path:
    """Write stem.png and stem.pdf; returns the PNG path."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with style():
        for ext in ("png", "pdf"):
            fig.savefig(stem.with_suffix(f".{ext}"))
    return stem.with_suffix(".png")


def _message(ax, text: str):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True, fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])


EMPTY = "salt_nothing_to_draw"   # attribute of a Figure that only says why it is empty: all_figures leaves it out


def _empty(reason: str) -> Figure:
    """A figure with nothing to draw: one line saying why (notebooks show it; the report leaves it out)."""
    fig, axes = new_figure(size=(6, 1.2))
    _message(axes[0, 0], reason)
    axes[0, 0].grid(False)
    setattr(fig, EMPTY, reason)
    return fig


FLOPS_AXIS = column_name("flops_total")


def _fit_label(group: str, d) -> str:
    """Legend entry of a curve's fit, or of why it is not drawn (analysis.fits.FitDiagnostics)."""
    if d is None:
        return f"{group_name(group)}: no fit"
    return f"{group_name(group)}: fit not drawn ({d.why})" if not d.identified else ""


def _setting_points(ax, a, group: str, x: str, c) -> None:
    """A curve's settings: each run faint, the mean over seeds with its 95% interval as an error bar."""
    runs = a.final[a.final["group"] == group]
    ax.scatter(runs[x], runs[a.target], s=10, alpha=0.25, color=c, lw=0)
    rep = a.replicates
    if rep is None:
        return
    settings = rep.settings[rep.settings["group"] == group]
    err = np.vstack([settings["accuracy"] - settings["lo"], settings["hi"] - settings["accuracy"]])
    ax.errorbar(settings[x], settings["accuracy"], yerr=None if np.isnan(err).all() else err, fmt="o", ms=4,
                color=c, capsize=2, lw=1, label=f"{group_name(group)} (mean over seeds"
                + (", 95% interval)" if rep.has_intervals else "; one seed: no interval)"))


def compute_curves(a) -> Figure:
    """Accuracy vs total FLOPs per curve: settings (mean over seeds with intervals; runs faint), the fitted curve
    with its 95% band where its diagnostics say the data identify it, and the Pareto frontier."""
    if a.final.empty:
        return _empty("no trained runs with the target accuracy")
    with style():
        fig, axes = new_figure(size=(7, 4.5))
        ax = axes[0, 0]
        for group, rows in a.final.groupby("group"):
            c = colour(group)
            _setting_points(ax, a, group, "flops_total", c)
            fit, d = a.curves.get(group), a.diagnostics.get(group)
            if isinstance(fit, PowerLawFit) and d is not None and d.identified:
                x = np.geomspace(rows["flops_total"].min(), rows["flops_total"].max() * 2, 100)
                band = fit.band(x)
                ax.plot(x, 1 - band["estimate"], color=c, lw=1.8,
                        label=f"{group_name(group)} fit: 1 - acc = {fit.params['E']:.3f} + k C^-{fit.params['c']:.2f}")
                ax.fill_between(x, 1 - band["lo"], 1 - band["hi"], color=c, alpha=0.15, lw=0)
            elif _fit_label(group, d):
                ax.plot([], [], color=c, ls=":", label=_fit_label(group, d))
        front = a.table[a.table["pareto"]].sort_values("flops_total")
        for group, rows in front.groupby("group"):
            ax.plot(rows["flops_total"], rows["accuracy"], marker="D", ms=6, mfc="none", mec="black",
                    color=colour(group), lw=1, ls="--", drawstyle="steps-post")
        ax.plot([], [], marker="D", mfc="none", mec="black", ls="--", color="black",
                label="Pareto frontier (nothing cheaper is as accurate)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(FLOPS_AXIS)
        ax.set_ylabel(column_name(a.target))
        ax.set_title("Accuracy vs compute (fits: 1 - accuracy = E + k C^-c, with its 95% band)")
        ax.legend(fontsize="x-small", loc="best")
    return fig


def share_curves(a) -> Figure:
    """Accuracy vs teacher share of the study kind's candidate curve (SALT), one line per budget (settings: mean
    over seeds with intervals), its reference (V-JEPA) at the same budget as a level with its interval, and the
    fitted optimum with its interval."""
    candidate, reference = a.kind.candidate, a.kind.reference
    share = a.shares["share_column"].iloc[0] if len(a.shares) else "teacher_share"
    rows = a.final[a.final["group"] == candidate].copy()
    if rows.empty or share not in rows or pd.to_numeric(rows[share], errors="coerce").isna().all():
        return _empty(f"no {short_name(candidate)} runs with a teacher share: nothing to draw against the share")
    rows[share] = pd.to_numeric(rows[share], errors="coerce")
    rep = a.replicates
    settings = rep.settings if rep is not None else pd.DataFrame(columns=["group", "budget"])
    with style():
        fig, axes = new_figure(size=(7, 4.5))
        ax = axes[0, 0]
        budgets = sorted(rows["budget"].unique())
        colours = dict(zip(budgets, sns.color_palette("viridis", len(budgets))))
        for budget in budgets:
            c = colours[budget]
            runs = rows[rows["budget"] == budget]
            ax.scatter(runs[share], runs[a.target], s=10, alpha=0.25, color=c, lw=0)
            mine = settings[(settings["group"] == candidate) & (settings["budget"] == budget)]
            if share in mine:
                mine = mine.sort_values(share)
                err = np.vstack([mine["accuracy"] - mine["lo"], mine["hi"] - mine["accuracy"]])
                ax.errorbar(mine[share], mine["accuracy"], yerr=None if np.isnan(err).all() else err, marker="o",
                            ms=4, color=c, capsize=2, lw=1.2, label=f"{group_name(candidate)}, budget {budget:g}")
            ref = settings[(settings["group"] == reference) & (settings["budget"] == budget)]
            if len(ref) == 1:
                r = ref.iloc[0]
                ax.axhline(r["accuracy"], color=c, lw=1, ls="--",
                           label=f"{group_name(reference)}, budget {budget:g}"
                           + (" (band: 95% interval)" if np.isfinite(r["lo"]) else ""))
                if np.isfinite(r["lo"]):
                    ax.axhspan(r["lo"], r["hi"], color=c, alpha=0.08, lw=0)
        along = ax.get_xaxis_transform()   # x in data, y in axes: the optima as bars along the bottom
        for k, (_, r) in enumerate(a.shares.iterrows()):
            c, y = colours.get(r["budget"], _OTHER), 0.03 + 0.035 * k
            if np.isfinite(r["lo"]):
                ax.plot([r["lo"], r["hi"]], [y, y], color=c, lw=3, alpha=0.6, transform=along, solid_capstyle="butt")
            ax.plot([r["share_opt"]], [y], marker="|", ms=12, mew=2, color=c, transform=along)
        ax.plot([], [], color="black", lw=3, alpha=0.6, marker="|", ms=12,
                label="fitted best share per budget (bar: its 95% interval)")
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.2g}"))
        ax.set_xlabel(share_name(a.final, share))
        ax.set_ylabel(column_name(a.target))
        ax.set_title("Compute allocation: accuracy vs the teacher's share, per budget")
        ax.legend(fontsize="x-small", loc="best")
    return fig


def _ci(ranking_row, stat: str = "spearman") -> str:
    lo, hi = interval(ranking_row, stat)
    return f"{ranking_row[stat]:.2f} [{lo:.2f}, {hi:.2f}]"


def teacher_colours(selection: pd.DataFrame) -> dict[str, tuple]:
    """One colour per teacher checkpoint (by its name in words), the same in every panel."""
    names = sorted(selection["teacher_name"].dropna().unique())
    palette = sns.color_palette("tab10" if len(names) <= 10 else "husl", max(1, len(names)))
    return dict(zip(names, palette))


def _teacher_panel(ax, a, metric: str, colours: dict[str, tuple], legend_size: str = "xx-small") -> None:
    """Accuracy vs `metric` at every evaluated student checkpoint: one colour and one least-squares line per
    teacher (R^2 in the legend; "n/a" with the reason where a line cannot be fitted, e.g. a teacher metric,
    constant within a teacher), and the across-teacher line of the final students (dashed, Spearman in the title)."""
    sel = a.selection["selection"]
    ranking = a.selection["ranking"].set_index("metric")
    data = sel[["teacher", "teacher_name", "run_key", "checkpoint_step", metric, a.target]].dropna(subset=[metric, a.target])
    source, column = CANDIDATES.get(metric, ("", metric))
    ax.set_xlabel(f"{metric} ({source} {column or a.target})", fontsize="x-small")
    ax.set_ylabel(column_name(a.target, short=True), fontsize="x-small")
    if data.empty:
        _message(ax, f"{metric}\n{ranking.at[metric, 'reason'] if metric in ranking.index else 'no values'}")
        return
    r2 = a.selection["r2"]
    r2 = r2[r2["metric"] == metric].set_index("teacher")
    for (teacher, name), rows in data.groupby(["teacher", "teacher_name"], sort=True):
        c = colours.get(name, _OTHER)
        fit = r2.loc[teacher] if teacher in r2.index else None
        fitted = fit is not None and np.isfinite(fit["r2"])
        reason = f" ({fit['reason']})" if fit is not None and fit["reason"] else ""
        label = f"{name}: R^2 {fit['r2']:.2f}" if fitted else f"{name}: R^2 n/a{reason}"
        rows = rows.sort_values(metric)
        ax.scatter(rows[metric], rows[a.target], s=16, alpha=0.8, color=c, label=label)
        if fitted:
            x = np.array([rows[metric].min(), rows[metric].max()])
            ax.plot(x, fit["intercept"] + fit["slope"] * x, color=c, lw=1.2)
    final = data.sort_values("checkpoint_step").groupby("run_key").tail(1)
    title = f"{metric} (n={len(final)} students)"
    if metric in ranking.index and ranking.at[metric, "status"] == "ok":
        r = ranking.loc[metric]
        slope, intercept = np.polyfit(final[metric], final[a.target], 1)
        x = np.linspace(final[metric].min(), final[metric].max(), 20)
        ax.plot(x, intercept + slope * x, color="black", lw=1, ls="--", label="across teachers (final students)")
        title += f"\nrho={_ci(r)}  LOTO skill={r['loto_skill']:.2f}"
    ax.set_title(title, fontsize="small")
    ax.legend(fontsize=legend_size, loc="best")


def metric_panels(a) -> Figure:
    """Every candidate metric in the same panel layout as the paper's figure (`loss_vs_accuracy`): accuracy vs
    the metric at every evaluated student checkpoint, one colour and line per teacher, R^2 per teacher in the
    legend, the across-teacher Spearman with its interval and the LOTO skill in the title."""
    metrics = list(a.selection["ranking"]["metric"])
    colours = teacher_colours(a.selection["selection"])
    ncols = min(4, max(1, len(metrics)))
    nrows = max(1, -(-len(metrics) // ncols))
    with style():
        fig, axes = new_figure(nrows, ncols, size=(5.0, 4.4))
        for ax, metric in zip(axes.flat, metrics):
            _teacher_panel(ax, a, metric, colours)
        for ax in list(axes.flat)[len(metrics):]:
            ax.set_visible(False)
    return fig


def loss_vs_accuracy(a, metric: str | None = None) -> Figure:
    """The paper's figure: the student's loss vs its accuracy at every evaluated checkpoint, one colour and one
    fitted line per teacher (named in words), R^2 per teacher in the legend. Default metric: the student's
    training loss (the paper's), else its held-out loss."""
    metric = metric or verdict(a.selection)["r2_metric"]
    with style():
        fig, axes = new_figure(size=(7.5, 5.5))
        _teacher_panel(axes[0, 0], a, metric, teacher_colours(a.selection["selection"]), legend_size="x-small")
    return fig


PARAM_WORDS = {"E": "E (irreducible error)", "k": "log10 k (scale)", "c": "c (exponent)"}


def bootstrap_params(a) -> Figure:
    """Bootstrap distributions of each fitted curve's parameters (E, k on a log axis, c); curves without a
    bootstrapped fit are left out (the report's fit table says why)."""
    fits = {g: f for g, f in a.curves.items() if isinstance(f, PowerLawFit) and f.boot.size}
    if not fits:
        return _empty("no bootstrapped fits (too few budgets, or --bootstrap 0)")
    with style():
        fig, axes = new_figure(len(fits), 3, size=(3.4, 2.6))
        for row, (group, fit) in zip(axes, fits.items()):
            nat = fit.natural(fit.boot)
            table = fit.intervals().set_index("param")
            d = a.diagnostics.get(group)
            for ax, (i, name) in zip(row, enumerate(fit.names)):
                values = nat[:, i][np.isfinite(nat[:, i])]
                log = name == "k"
                sns.histplot(np.log10(values) if log else values, bins=40, color=colour(group), ax=ax)
                for v, ls in ((table.at[name, "estimate"], "-"), (table.at[name, "lo"], ":"),
                              (table.at[name, "hi"], ":")):
                    ax.axvline(np.log10(v) if log else v, color="black", lw=1, ls=ls)
                ax.set_xlabel(PARAM_WORDS[name])
                ax.set_ylabel("bootstrap resamples")
                flag = "" if d is None or d.identified else " (not identified)"
                ax.set_title(f"{group_name(group)}{flag}: {name}", fontsize="small")
    return fig


def residuals(a) -> Figure:
    """Log residuals of each curve fit against compute (a trend means the form misses the data)."""
    fits = {g: f for g, f in a.curves.items() if isinstance(f, PowerLawFit)}
    if not fits:
        return _empty("no fitted curves (each needs 3 or more budgets)")
    with style():
        fig, axes = new_figure(1, len(fits), size=(3.6, 3.0))
        for ax, (group, fit) in zip(axes[0], fits.items()):
            r = fit.residuals()
            ax.scatter(r[fit.inputs[0]], r["log_residual"], s=12, alpha=0.6, color=colour(group))
            ax.axhline(0, color="black", lw=1)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(column_name(fit.inputs[0]))
            ax.set_ylabel("log error - log fitted error")
            ax.set_title(f"{group_name(group)}: residuals of the fit", fontsize="small")
    return fig


FIGURES = {"accuracy_vs_flops": compute_curves, "accuracy_vs_share": share_curves, "metric_panels": metric_panels,
           "student_loss_vs_accuracy": loss_vs_accuracy, "bootstrap_params": bootstrap_params,
           "residuals": residuals}



def all_figures(a, out_dir) -> tuple[list[Path], dict[str, str]]:
    """Draw and save the figures of the analysis' study kind (its question's: analysis.answers) into out_dir.
    Returns the PNG paths and the figures left out because they had nothing to draw (name -> why)."""
    names = answer_of(a.kind).figures or tuple(FIGURES)
    paths, left_out = [], {}
    for name in names:
        fig = FIGURES[name](a)
        if hasattr(fig, EMPTY):
            left_out[name] = getattr(fig, EMPTY)
        else:
            paths.append(save(fig, Path(out_dir) / name))
    return paths, left_out
