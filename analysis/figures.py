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

from analysis.fits import PowerLawFit
from analysis.correlate import CANDIDATES

PALETTE = {"salt": "#1f77b4", "vjepa": "#d62728", "pixel": "#2ca02c"}
_OTHER = "#7f7f7f"
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.1),
         "figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight", "axes.titlesize": "medium",
         "legend.frameon": False, "pdf.fonttype": 42}


def colour(group: str) -> str:
    return PALETTE.get(group, _OTHER)


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


def compute_curves(a) -> Figure:
    """Accuracy vs total FLOPs per curve: runs, fitted curve with its 95% band, Pareto frontier."""
    with style():
        fig, axes = new_figure(size=(7, 4.5))
        ax = axes[0, 0]
        for group, rows in a.final.groupby("group"):
            c = colour(group)
            ax.scatter(rows["flops_total"], rows[a.target], s=12, alpha=0.35, color=c, label=f"{group} runs")
            fit = a.curves.get(group)
            if isinstance(fit, PowerLawFit):
                x = np.geomspace(rows["flops_total"].min(), rows["flops_total"].max() * 2, 100)
                band = fit.band(x)
                ax.plot(x, 1 - band["estimate"], color=c, lw=1.8,
                        label=f"{group} fit: E={fit.params['E']:.3f}, c={fit.params['c']:.2f}")
                ax.fill_between(x, 1 - band["lo"], 1 - band["hi"], color=c, alpha=0.15, lw=0)
        front = a.table[a.table["pareto"]].sort_values("flops_total")
        for group, rows in front.groupby("group"):
            ax.plot(rows["flops_total"], rows["accuracy"], marker="D", ms=6, mfc="none", mec="black",
                    color=colour(group), lw=1, ls="--", drawstyle="steps-post")
        ax.plot([], [], marker="D", mfc="none", mec="black", ls="--", color="black", label="Pareto frontier")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("total FLOPs (teacher + student)")
        ax.set_ylabel(a.target)
        ax.set_title("Accuracy vs compute (fits: 1 - acc = E + k C^-c, 95% bootstrap band)")
        ax.legend(fontsize="x-small", loc="lower right")
    return fig


def share_curves(a) -> Figure:
    """Accuracy vs teacher share, one line per budget, with the fitted optimum and its interval."""
    with style():
        fig, axes = new_figure(size=(7, 4.5))
        ax = axes[0, 0]
        share = a.shares["share_column"].iloc[0] if len(a.shares) else "teacher_share"
        rows = a.final[a.final["group"] == "salt"].copy()
        if rows.empty or share not in rows:
            _message(ax, "no SALT runs with a teacher share")
            return fig
        rows[share] = pd.to_numeric(rows[share], errors="coerce")
        budgets = sorted(rows["budget"].unique())
        colours = dict(zip(budgets, sns.color_palette("viridis", len(budgets))))
        sns.lineplot(data=rows, x=share, y=a.target, hue="budget", palette=colours, marker="o", errorbar="sd",
                     ax=ax, legend="full")
        for _, r in a.shares.iterrows():
            c = colours.get(r["budget"], _OTHER)
            ax.axvline(r["share_opt"], color=c, lw=1, ls=":")
            if np.isfinite(r["lo"]):
                ax.axvspan(r["lo"], r["hi"], color=c, alpha=0.08, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel(f"{share} (dotted: fitted optimum, shaded: 95% interval)")
        ax.set_ylabel(a.target)
        ax.set_title("Compute allocation: accuracy vs teacher share per budget")
    return fig


def _ci(ranking_row, stat: str) -> str:
    lo, hi = ranking_row[f"{stat}_bca_lo"], ranking_row[f"{stat}_bca_hi"]
    return f"{ranking_row[stat]:.2f} [{lo:.2f}, {hi:.2f}]"


def metric_panels(a) -> Figure:
    """One panel per candidate metric vs the student's accuracy: points, least-squares line, rho and tau
    with BCa intervals in the title; a metric without a number says why."""
    ranking = a.selection["ranking"].set_index("metric")
    final = a.selection["selection"]
    final = final.sort_values("checkpoint_step").groupby("run_key").tail(1)
    metrics = list(ranking.index)
    ncols = 4
    nrows = max(1, -(-len(metrics) // ncols))
    with style():
        fig, axes = new_figure(nrows, ncols, size=(3.6, 3.2))
        for ax, metric in zip(axes.flat, metrics):
            r = ranking.loc[metric]
            if r["status"] != "ok":
                _message(ax, f"{metric}\n{r['reason']}")
                continue
            data = final[[metric, a.target]].dropna()
            ax.scatter(data[metric], data[a.target], s=14, alpha=0.6, color=colour("salt"))
            slope, intercept = np.polyfit(data[metric], data[a.target], 1)
            x = np.linspace(data[metric].min(), data[metric].max(), 20)
            ax.plot(x, intercept + slope * x, color="black", lw=1)
            ax.set_title(f"{metric} (n={int(r['n'])})\nrho={_ci(r, 'spearman')}\ntau={_ci(r, 'kendall')}",
                         fontsize="x-small")
            ax.set_xlabel(CANDIDATES.get(metric, ("", metric))[1] or a.target, fontsize="x-small")
            ax.set_ylabel(a.target, fontsize="x-small")
        for ax in list(axes.flat)[len(metrics):]:
            ax.set_visible(False)
    return fig


def loss_vs_accuracy(a, metric: str = "student_loss") -> Figure:
    """Student loss vs accuracy at every evaluated checkpoint, one colour per teacher, within-teacher R^2."""
    sel = a.selection["selection"]
    with style():
        fig, axes = new_figure(size=(6.5, 4.5))
        ax = axes[0, 0]
        data = sel[["teacher", metric, a.target]].dropna()
        if data.empty:
            _message(ax, f"no {metric} values")
            return fig
        teachers = data["teacher"].nunique()
        sns.scatterplot(data=data, x=metric, y=a.target, hue="teacher", palette="viridis", s=18, ax=ax,
                        legend=teachers <= 12)
        r2 = a.selection["r2"]
        r2 = r2[(r2["metric"] == metric) & r2["r2"].notna()]
        summary = (f"within-teacher R^2: median {r2['r2'].median():.3f} over {len(r2)} teacher(s)" if len(r2)
                   else "within-teacher R^2: too few points per teacher")
        ax.set_title(f"{metric} vs accuracy, coloured by teacher\n{summary}")
        if teachers <= 12:
            ax.legend(fontsize="xx-small", title="teacher", title_fontsize="x-small")
    return fig


def bootstrap_params(a) -> Figure:
    """Bootstrap distributions of each curve's parameters (E, k on a log axis, c)."""
    fits = {g: f for g, f in a.curves.items() if isinstance(f, PowerLawFit) and f.boot.size}
    with style():
        fig, axes = new_figure(max(1, len(fits)), 3, size=(3.4, 2.6))
        if not fits:
            _message(axes[0, 0], "no bootstrapped fits")
            return fig
        for row, (group, fit) in zip(axes, fits.items()):
            nat = fit.natural(fit.boot)
            table = fit.intervals().set_index("param")
            for ax, (i, name) in zip(row, enumerate(fit.names)):
                values = nat[:, i][np.isfinite(nat[:, i])]
                log = name == "k"
                sns.histplot(np.log10(values) if log else values, bins=40, color=colour(group), ax=ax)
                for v, ls in ((table.at[name, "estimate"], "-"), (table.at[name, "lo"], ":"),
                              (table.at[name, "hi"], ":")):
                    ax.axvline(np.log10(v) if log else v, color="black", lw=1, ls=ls)
                ax.set_xlabel(f"log10 {name}" if log else name)
                ax.set_title(f"{group}: {name}", fontsize="small")
    return fig


def residuals(a) -> Figure:
    """Log residuals of each curve fit against compute (a trend means the form misses the data)."""
    fits = {g: f for g, f in a.curves.items() if isinstance(f, PowerLawFit)}
    with style():
        fig, axes = new_figure(1, max(1, len(fits)), size=(3.6, 3.0))
        if not fits:
            _message(axes[0, 0], "no fits")
            return fig
        for ax, (group, fit) in zip(axes[0], fits.items()):
            r = fit.residuals()
            ax.scatter(r[fit.inputs[0]], r["log_residual"], s=12, alpha=0.6, color=colour(group))
            ax.axhline(0, color="black", lw=1)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(fit.inputs[0])
            ax.set_ylabel("log error - log fitted")
            ax.set_title(f"{group} residuals", fontsize="small")
    return fig


FIGURES = {"accuracy_vs_flops": compute_curves, "accuracy_vs_share": share_curves, "metric_panels": metric_panels,
           "student_loss_vs_accuracy": loss_vs_accuracy, "bootstrap_params": bootstrap_params,
           "residuals": residuals}


def all_figures(a, out_dir) -> list[Path]:
    """Draw and save every figure of FIGURES into out_dir; returns the PNG paths."""
    return [save(draw(a), Path(out_dir) / name) for name, draw in FIGURES.items()]
