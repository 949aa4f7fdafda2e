"""Notebook setup and figures: one ``setup()`` call per notebook, one ``save_fig(fig_id)`` for every figure.

``setup`` makes every notebook behave the same wherever it is opened (JupyterLab in ``notebooks/``, papermill or
nbval from the repository root): the working directory is the repository root, so the paths in ``params/*.yaml``
resolve; one seed reaches ``random``, numpy and torch; thread counts are fixed; figures are PNG; numbers print to 3
decimals. ``save_fig`` writes ``<figures_dir>/<fig_id>.png`` and ``.pdf`` (PDF without a creation date, so
regenerating an unchanged figure changes no bytes). The figure helpers below draw the paper's figures from the
kit's own artifacts; ``notebooks/06_paper_figures.ipynb`` introduces them. Heavy imports (matplotlib, seaborn,
scikit-learn, pandas, torch) are local to the functions that use them, so importing this module stays cheap.
"""
from __future__ import annotations

import os
import random
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from asd_lib import logs
from asd_lib import params as P
from asd_lib.params import ROOT  # the kit's folder (params.find_root)

_STATE: dict[str, Any] = {"figures_dir": ROOT / "figures"}


def setup(seed: int = 0, figures_dir: str | os.PathLike = "figures", threads: int | None = None,
          quiet: bool = True) -> Path:
    """Prepare a notebook: cwd = repository root, seeds, threads, plot style, save_fig folder; returns the root."""
    try:
        from IPython import get_ipython  # optional: the except below runs without it

        ip = get_ipython()
    except ImportError:  # pragma: no cover
        ip = None
    if ip is not None:  # papermill -f or an edited parameters cell: refuse what the runner would refuse
        P.check_namespace(ip.user_ns)
    os.chdir(ROOT)
    logs.configure()  # the library's messages, at $ASD_KIT_LOG's level
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    fig_dir = Path(figures_dir)
    _STATE["figures_dir"] = fig_dir if fig_dir.is_absolute() else ROOT / fig_dir
    random.seed(seed)
    np.random.seed(seed)
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None
    if "torch" in sys.modules:  # seed torch only where the notebook uses it (importing it costs seconds)
        import torch

        torch.manual_seed(seed)
        if threads:
            torch.set_num_threads(threads)
    try:
        import pandas as pd

        pd.set_option("display.precision", 3)
        pd.set_option("display.width", 120)
        pd.set_option("display.max_columns", 30)
    except ImportError:  # pragma: no cover
        pass
    import matplotlib

    matplotlib.rcParams.update({"figure.dpi": 72, "savefig.dpi": 150, "figure.figsize": (7.0, 3.5),
                                "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                                "axes.spines.right": False, "svg.hashsalt": "asd-kit"})
    if ip is not None:
        if matplotlib.get_backend().lower() == "agg":  # MPLBACKEND=Agg (the Makefile's) would hide every figure
            ip.run_line_magic("matplotlib", "inline")
        ip.run_line_magic("config", "InlineBackend.figure_formats = ['png']")
    if quiet:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*weight_norm.*")
        warnings.filterwarnings("ignore", message="n_quantiles .* is greater than")  # tiny training sets
    return ROOT


def figures_dir() -> Path:
    """The folder save_fig writes to (set by :func:`setup`)."""
    return Path(_STATE["figures_dir"])


def save_fig(fig_id: str, fig=None, tight: bool = True, formats: Sequence[str] = ("png", "pdf"),
             dpi: int = 150) -> list[Path]:
    """Write the current (or given) figure to ``<figures_dir>/<fig_id>.{png,pdf}`` atomically; return the paths."""
    import matplotlib.pyplot as plt

    if not fig_id or any(c in fig_id for c in "/\\ "):
        raise ValueError(f"fig_id {fig_id!r} must be a plain file stem such as 'roc_curves' (no slashes or spaces)")
    fig = fig or plt.gcf()
    out_dir = figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    if tight and fig.get_layout_engine() is None:  # a figure made with layout='constrained' keeps its own
        fig.tight_layout()
    paths = []
    for fmt in formats:
        path = out_dir / f"{fig_id}.{fmt}"
        tmp = out_dir / f".{fig_id}.tmp{os.getpid()}.{fmt}"
        meta = {"CreationDate": None} if fmt == "pdf" else ({"Software": None} if fmt == "png" else None)
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta, bbox_inches="tight" if tight else None)
        os.replace(tmp, path)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------------
# the paper's figures, drawn from the kit's artifacts (06_paper_figures)


def pipeline_figure(models: Sequence[str], scorers: Sequence[str], normalisation: str = "rank / n",
                    stages: Sequence[str] | None = None):
    """The paper's Figure 1 drawn from a system's own parameters: models -> scorers -> normalise -> mean -> min."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(10, 0.9 + 0.55 * max(len(models), len(scorers), 3)))
    ax.set_axis_off()
    cols = {"audio": 0.07, "model": 0.245, "scorer": 0.42, "norm": 0.595, "mean": 0.77, "min": 0.935}
    half = 0.062  # half the width of a box; columns are 0.175 apart

    def box(x: float, y: float, text: str, color: str) -> None:
        ax.add_patch(FancyBboxPatch((x - half, y - 0.045), 2 * half, 0.09, boxstyle="round,pad=0.008",
                                    fc=color, ec="0.3", lw=0.8, transform=ax.transAxes))
        ax.text(x, y, text, ha="center", va="center", fontsize=8, transform=ax.transAxes)

    def arrow(x0: float, y0: float, x1: float, y1: float) -> None:
        ax.annotate("", xy=(x1 - half - 0.004, y1), xytext=(x0 + half + 0.004, y0), xycoords="axes fraction",
                    arrowprops=dict(arrowstyle="->", color="0.4", lw=0.7))

    ys_m = np.linspace(0.85, 0.15, len(models)) if len(models) > 1 else [0.5]
    ys_s = np.linspace(0.85, 0.15, len(scorers)) if len(scorers) > 1 else [0.5]
    box(cols["audio"], 0.5, "clip (ch0)", "#eeeeee")
    for y, m in zip(ys_m, models):
        box(cols["model"], y, m, "#cfe2f3")
        arrow(cols["audio"], 0.5, cols["model"], y)
        for ys in ys_s:
            arrow(cols["model"], y, cols["scorer"], ys)
    for ys, s in zip(ys_s, scorers):
        box(cols["scorer"], ys, s.upper(), "#fce5cd")
        box(cols["norm"], ys, normalisation, "#d9ead3")
        box(cols["mean"], ys, "mean over\nmodels", "#d9ead3")
        arrow(cols["scorer"], ys, cols["norm"], ys)
        arrow(cols["norm"], ys, cols["mean"], ys)
        arrow(cols["mean"], ys, cols["min"], 0.5)
    box(cols["min"], 0.5, "min over\nscorers", "#f4cccc")
    title = "Pipeline as the kit runs it"
    if stages:
        title += " (notebooks " + ", ".join(stages) + ")"
    ax.set_title(title, fontsize=9)
    return fig


def score_distributions(df, score: str = "score", machines: Sequence[str] | None = None, col_wrap: int = 4):
    """Histograms of scores, normal vs anomaly, one panel per machine, line style per domain.

    ``df`` columns: machine, domain ('source'|'target'), label ('normal'|'anomaly'), and ``score``.
    """
    import matplotlib.pyplot as plt

    machines = list(machines or sorted(df["machine"].unique()))
    n = len(machines)
    rows = int(np.ceil(n / col_wrap))
    fig, axes = plt.subplots(rows, min(n, col_wrap), figsize=(3.0 * min(n, col_wrap), 2.4 * rows), squeeze=False)
    colors = {"normal": "tab:blue", "anomaly": "tab:red"}
    styles = {"source": "-", "target": "--"}
    for ax, m in zip(axes.flat, machines):
        sub = df[df["machine"] == m]
        bins = np.histogram_bin_edges(sub[score], bins=20)
        for (dom, lab), g in sub.groupby(["domain", "label"]):
            ax.hist(g[score], bins=bins, histtype="step", color=colors.get(lab, "k"), ls=styles.get(dom, ":"),
                    label=f"{dom} {lab}", density=True)
        ax.set_title(m, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    axes.flat[0].legend(fontsize=6)
    return fig


def roc_curves(df, score: str = "score", machines: Sequence[str] | None = None, max_fpr: float = 0.1):
    """ROC curve per machine and domain (negatives = that domain's normals, positives = all anomalies)."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    machines = list(machines or sorted(df["machine"].unique()))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, dom in zip(axes, ("source", "target")):
        for m in machines:
            sub = df[(df["machine"] == m) & ((df["domain"] == dom) | (df["label"] == "anomaly"))]
            y = (sub["label"] == "anomaly").to_numpy().astype(int)
            if len(np.unique(y)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, sub[score])
            ax.plot(fpr, tpr, lw=1, label=m)
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.6, ls=":")
        ax.axvspan(0, max_fpr, color="0.9", zorder=0)
        ax.set_title(f"{dom} normals vs all anomalies", fontsize=9)
        ax.set_xlabel("false positive rate")
    axes[0].set_ylabel("true positive rate")
    axes[1].legend(fontsize=6, loc="lower right")
    return fig


def embedding_map(emb: np.ndarray, classes: Sequence[str], domains: Sequence[str], title: str = ""):
    """Embeddings (N, D) projected to 2-D with PCA: colour = class, marker = domain (circle source, triangle
    target). The legend sits beside the plot: the classes (up to 20) and, always, the domain key."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from sklearn.decomposition import PCA

    xy = PCA(n_components=2, random_state=0).fit_transform(np.asarray(emb, dtype=np.float64))
    fig, ax = plt.subplots(figsize=(8.5, 4.5), layout="constrained")
    uniq = list(dict.fromkeys(classes))
    cmap = plt.get_cmap("tab20", max(len(uniq), 1))
    classes = np.asarray(classes)
    domains = np.asarray(domains)
    for i, c in enumerate(uniq):
        named = False  # one legend entry per class, from whichever domain has it first
        for dom, marker in (("source", "o"), ("target", "^")):
            sel = (classes == c) & (domains == dom)
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=12 if dom == "source" else 30, marker=marker,
                           color=cmap(i), alpha=0.7, label=None if named else c)
                named = True
    ax.set_title(title or "embeddings (PCA)", fontsize=9)
    handles, labels = ax.get_legend_handles_labels() if len(uniq) <= 20 else ([], [])
    key = [Line2D([], [], marker=m, ls="", color="grey", label=f"{d} domain") for d, m in (("source", "o"),
                                                                                         ("target", "^"))]
    ax.legend(handles + key, labels + [k.get_label() for k in key], fontsize=7, frameon=False, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), ncol=1 if len(handles) <= 14 else 2)
    return fig


def bars(df, x: str, y: str, hue: str | None = None, title: str = "", ylabel: str = "", ref: float | None = 0.5,
         errorbar: str | None = None):
    """Grouped bar chart (seaborn) with an optional reference line (chance = 0.5).

    Several rows per bar (e.g. one per seed) are averaged; ``errorbar='sd'`` draws their standard deviation.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    dodge = bool(hue) and int(df.groupby(x)[hue].nunique().max()) > 1  # side by side only where a bar shares its x
    slots = df[x].nunique() * (df[hue].nunique() if dodge else 1)
    width = min(16.0, max(5.0, 0.3 * slots + 2.0))
    fig, ax = plt.subplots(figsize=(width, 3.8))
    sns.barplot(data=df, x=x, y=y, hue=hue, ax=ax, errorbar=errorbar, capsize=0.15 if errorbar else 0.0, dodge=dodge)
    if ref is not None:
        ax.axhline(ref, color="0.5", lw=0.7, ls=":")
    low = float(df[y].min())
    if low > 0.3:  # scores near chance: start the axis a little below the lowest bar so differences are visible
        ax.set_ylim(bottom=float(np.floor((low - 0.05) * 20) / 20))
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel or y)
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelrotation=35, labelsize=7)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    if hue:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig
