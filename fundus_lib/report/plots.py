"""Figure helpers shared by the chapters. Each returns a closed matplotlib Figure (shown once
when it is a cell's last expression).

Example::

    image_grid([original, preprocessed], titles=["original", "Graham"], ncols=2)
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from fundus_lib.data.synthetic import LESION_CODES

#: RGB colour per lesion code of the synthetic masks.
LESION_COLOURS = {
    1: (255, 40, 40),  # microaneurysm
    2: (255, 0, 255),  # haemorrhage
    3: (255, 230, 0),  # hard exudate
    4: (0, 220, 255),  # cotton-wool spot
    5: (0, 255, 60),  # neovascularisation
    6: (80, 80, 255),  # spurious cue
    7: (255, 140, 0),  # distractor
}


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int = 5,
    cell_inches: float = 2.4,
    suptitle: str | None = None,
) -> plt.Figure:
    """Images (uint8 or [0, 1] float, (H, W, 3)) in a grid with optional titles."""
    nrows = max(1, -(-len(images) // ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(cell_inches * ncols, cell_inches * nrows + 0.3 * bool(suptitle)), squeeze=False
    )
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < len(images):
            ax.imshow(images[index])
            if titles is not None:
                ax.set_title(titles[index], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    plt.close(fig)
    return fig


def overlay_lesions(image: np.ndarray, mask: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """uint8 (H, W, 3): ``image`` with each lesion pixel tinted in its code's colour."""
    out = image.astype(np.float32).copy()
    for code, colour in LESION_COLOURS.items():
        where = mask == code
        out[where] = (1 - alpha) * out[where] + alpha * np.array(colour, dtype=np.float32)
    return out.clip(0, 255).astype(np.uint8)


def lesion_legend(fig: plt.Figure, codes: Sequence[int] = tuple(LESION_COLOURS)) -> plt.Figure:
    """Add a legend of lesion colours below the figure."""
    handles = [Patch(color=np.array(LESION_COLOURS[code]) / 255, label=LESION_CODES[code]) for code in codes]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.12)
    return fig


def confusion_heatmaps(matrices: dict[str, np.ndarray], cell_inches: float = 3.4) -> plt.Figure:
    """Row-normalised confusion matrices side by side (title -> (5, 5) counts), with counts shown."""
    import seaborn as sns

    from fundus_lib.metrics import row_normalised

    fig, axes = plt.subplots(1, len(matrices), figsize=(cell_inches * len(matrices), cell_inches), squeeze=False)
    for ax, (title, matrix) in zip(axes.flat, matrices.items()):
        shares = row_normalised(np.asarray(matrix))
        labels = np.vectorize(lambda share, count: f"{share:.0%}\n({count})")(shares, np.asarray(matrix))
        sns.heatmap(
            shares,
            vmin=0,
            vmax=1,
            cmap="Blues",
            annot=labels,
            fmt="",
            cbar=False,
            ax=ax,
            annot_kws={"fontsize": 7},
            square=True,
        )
        ax.set(title=title, xlabel="predicted grade", ylabel="true grade")
    fig.tight_layout()
    plt.close(fig)
    return fig


def learning_curves(histories: dict, metrics: Sequence[str], best: dict | None = None) -> plt.Figure:
    """Validation metrics per epoch, one panel per metric, one line per run (label -> history);
    ``best`` (label -> epoch) circles the kept epoch of each run."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for label, history in histories.items():
            (line,) = ax.plot(history.index, history[metric], marker=".", label=label)
            if best and label in best:
                ax.plot(
                    best[label],
                    history.loc[best[label], metric],
                    "o",
                    markersize=10,
                    fillstyle="none",
                    color=line.get_color(),
                )
        ax.set(xlabel="epoch", title=metric.replace("_", " "))
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def prediction_shares(shares) -> plt.Figure:
    """Horizontal stacked bars: for each row (a method), the share of predictions per grade (columns 0-4)."""
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(shares) + 1.2))
    left = np.zeros(len(shares))
    colours = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, shares.shape[1]))
    for grade, colour in zip(shares.columns, colours):
        ax.barh(shares.index.astype(str), shares[grade], left=left, color=colour, label=f"grade {grade}")
        left += shares[grade].to_numpy()
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="share of test predictions")
    ax.legend(
        ncol=shares.shape[1], fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(shares) < 6 else -0.08)
    )
    fig.tight_layout()
    plt.close(fig)
    return fig


#: Colour per verdict (statistics' three-way rule), shared by the conclusions' table and figure.
VERDICT_COLOURS = {
    "reproduced": "#2e8b57",
    "smaller than reported": "#5b7db1",
    "contradicted": "#c0392b",
    "inconclusive": "#d4a017",
    "not tested": "#999999",
}


def findings_forest(comparisons) -> plt.Figure:
    """Every tested difference in one picture, one line per comparison (a frame with columns where,
    comparison, estimate, low, high, threshold, report, verdict): this run's estimate with its 95 %
    interval (coloured by verdict), the report's value of the same difference (cross, where it
    published one) and the margin the rule holds it to (grey tick)."""
    count = len(comparisons)
    fig, ax = plt.subplots(figsize=(7.2, 0.24 * count + 1.3))
    positions = np.arange(count)
    colours = [VERDICT_COLOURS.get(verdict, "#999999") for verdict in comparisons["verdict"]]
    ax.errorbar(
        comparisons["estimate"],
        positions,
        fmt="none",
        ecolor=colours,
        elinewidth=1.6,
        xerr=[comparisons["estimate"] - comparisons["low"], comparisons["high"] - comparisons["estimate"]],
    )
    ax.scatter(comparisons["estimate"], positions, c=colours, s=18, zorder=3, label="this run: mean, 95 % interval")
    ax.scatter(comparisons["report"], positions, marker="x", color="black", s=22, zorder=4, label="the report")
    ax.scatter(comparisons["threshold"], positions, marker="|", color="grey", s=90, zorder=2, label="margin")
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_yticks(
        positions,
        [f"{where}: {label}" for where, label in zip(comparisons["where"], comparisons["comparison"])],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.set_xlabel("difference (treatment − reference), in the units of its measure")
    handles = ax.get_legend_handles_labels()[0] + [
        Patch(color=colour, label=verdict) for verdict, colour in VERDICT_COLOURS.items() if verdict != "not tested"
    ]
    ax.legend(
        handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.9 / (0.24 * count + 1.3)), ncol=3
    )
    fig.tight_layout()
    plt.close(fig)
    return fig


def randomisation_curves(checks, threshold: float) -> plt.Figure:
    """Cascading randomisation (a frame with columns model, method, layers, rank_correlation): per
    model one panel, per method the median rank correlation with the trained model's maps as
    layers are re-initialised from the output down; the pass threshold as a dashed line."""
    models = list(dict.fromkeys(checks["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.2), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        for method, curve in checks[checks["model"] == model].groupby("method", sort=False):
            ax.plot(curve["layers"], curve["rank_correlation"], marker="o", markersize=3, label=method)
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("layers re-initialised (from the output)")
    axes[0][0].set_ylabel("rank correlation with the trained maps")
    axes[0][0].set_ylim(-0.1, 1.05)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    plt.close(fig)
    return fig


def build_minutes(chapters) -> plt.Figure:
    """Horizontal stacked bars, one per chapter: minutes training its runs and minutes executing
    (``build_record.chapters_frame``: chapter, training, executing in seconds)."""
    fig, ax = plt.subplots(figsize=(7.5, 0.4 * len(chapters) + 1.3))
    names = chapters["chapter"].astype(str)
    training, executing = chapters["training"] / 60, chapters["executing"] / 60
    ax.barh(names, training, color="#4c72b0", label="training its runs")
    ax.barh(names, executing, left=training, color="#dd8452", label="executing the chapter")
    ax.invert_yaxis()
    ax.set(xlabel="minutes")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.close(fig)
    return fig
