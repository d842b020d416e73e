"""Chapter 4's tables and figures: the corruptions (Figure 4), Tables 6-8 beside the report's and
PGD on the corruption-trained models (Figure 5), from the runs of ``experiments.corruption_runs``.

Example::

    seed_runs = corruption_seed_runs(params)
    metric_rows(seed_runs["table6"])
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fundus_lib.attacks.pgd import report_eps_to_pixels
from fundus_lib.config import Params
from fundus_lib.data.corruptions import CORRUPTIONS, corrupt
from fundus_lib.data.decode import decode_fundus
from fundus_lib.data.pipeline import FundusData
from fundus_lib.data.preprocess import crop_to_fundus, graham
from fundus_lib.evaluation.attacks import pgd_curve
from fundus_lib.evaluation.corruption import corrupted_test_metrics
from fundus_lib.evaluation.robustness import strongest_curve
from fundus_lib.experiments import corruption_runs, seeded
from fundus_lib.metrics import REPORT_METRICS
from fundus_lib.report.numbers import report_table
from fundus_lib.report.plots import image_grid
from fundus_lib.report.tables import REPORT_LABEL, duration, over_seeds
from fundus_lib.runs import Run, get_run


def corruption_seed_runs(params: Params, train: bool = True) -> dict[str, dict[str, list[Run]]]:
    """Per table, per row, the runs of every seed (Tables 6-8 and Figure 5 compare them); the two
    proposals (``improvements``) train one seed."""
    return {
        table: {
            name: [get_run(params, config, train=train) for config in seeds]
            for name, seeds in (
                seeded(params, rows, "corruption")
                if table != "improvements"
                else {name: [config] for name, config in rows.items()}
            ).items()
        }
        for table, rows in corruption_runs(params).items()
    }


def corruptions_figure(params: Params, data: FundusData):
    """Figure 4: the first test image under each corruption at levels 0 (clean) to 4, as
    photographed and after Graham preprocessing (seeded by ``params.corruption.seed``)."""
    row = data.rows("test")[0]
    decoded = decode_fundus(data.manifest.at[row, "path"], 96, allow_grayscale=True)
    square = crop_to_fundus(decoded.rgb, decoded.fov, 192)
    pictures, titles = [], []
    for kind in CORRUPTIONS:
        raw = [corrupt(square, kind, level, np.random.default_rng(params.corruption.seed)) for level in range(5)]
        pictures += raw + [graham(image, params.data.graham_circle) for image in raw]
        titles += [f"{kind}, level {level}" for level in range(5)] + ["after Graham"] * 5
    return image_grid(pictures, titles, ncols=5, cell_inches=2.0)


def metric_rows(table_runs: dict[str, list[Run]]) -> pd.DataFrame:
    """Per row (``level_range``) the clean test metrics, mean over seeds with their spread, and the
    first seed's training time."""
    means = over_seeds({name: [run.metrics("test") for run in seeds] for name, seeds in table_runs.items()})
    return pd.DataFrame(
        [
            {
                "level_range": name,
                **means.loc[name].drop("seeds"),
                "training_time": duration(seeds[0].train_seconds / 3600),
            }
            for name, seeds in table_runs.items()
        ]
    )


def beside(report_name: str, ours_rows: pd.DataFrame, ours: str) -> pd.DataFrame:
    """The report's table ``report_name`` and this run's rows, indexed by level range and who
    measured it: this run's order first, then the report's extra rows."""
    report = report_table(report_name).assign(measured_by=REPORT_LABEL)
    order: dict[str, int] = {}
    for name in [*ours_rows["level_range"], *report["level_range"]]:
        order.setdefault(name, len(order))
    both = pd.concat([report, ours_rows.assign(measured_by=ours)])
    both = both.assign(position=both["level_range"].map(order)).sort_values(["position", "measured_by"])
    return both.set_index(["level_range", "measured_by"]).drop(columns="position")


def table8_rows(clean_runs: dict[str, list[Run]], data: FundusData, params: Params) -> pd.DataFrame:
    """Table 8: per row the metrics on test images corrupted at ``params.corruption.test_levels``
    and the accuracy drop from the clean test accuracy, mean over seeds with their spread."""
    settings = params.corruption

    def corrupted_row(run: Run) -> dict:
        metrics = corrupted_test_metrics(run, data, settings.test_levels, settings.seed).iloc[0]
        return {**metrics, "accuracy_drop": run.metrics("test")["accuracy"] - metrics["accuracy"]}

    on_corrupted = {name: [corrupted_row(run) for run in seeds] for name, seeds in clean_runs.items()}
    table = over_seeds(on_corrupted, (*REPORT_METRICS, "accuracy_drop")).drop(columns="seeds")
    return table.rename_axis("level_range").reset_index()


def mean_pgd_curves(table_runs: dict[str, list[Run]], data: FundusData, params: Params) -> dict[str, pd.DataFrame]:
    """The report's PGD sweep per row: success rate and robust accuracy per eps, mean over seeds."""
    return {
        name: pd.concat([pgd_curve(run, data, params.attacks, progress=False) for run in seeds])
        .groupby("eps_255", sort=False)
        .mean()
        .reset_index()
        for name, seeds in table_runs.items()
    }


def figure5(
    curves: dict[str, pd.DataFrame], table_runs: dict[str, list[Run]], data: FundusData, params: Params, ours: str
):
    """Figure 5: PGD success rate (left, with the report's values converted to pixel units) and
    robust accuracy (right; dashed: under chapter 5's strongest white-box attack) against eps."""
    report_curves = report_table("pgd_success")
    fig, (ax, robust_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for (name, curve), colour in zip(curves.items(), plt.get_cmap("tab10").colors):
        ax.plot(curve["eps_255"], curve["success_rate"], marker="o", color=colour, label=f"{name} ({ours})")
        robust_ax.plot(curve["eps_255"], curve["robust_accuracy"], marker="o", color=colour, label=f"{name}, PGD-5")
        strongest = strongest_curve(table_runs[name], data, params.attacks.robustness)
        robust_ax.plot(strongest["eps_255"], strongest["robust_accuracy"], marker=".", linestyle="--", color=colour)
        report_name = "baseline" if name == "baseline" else f"corruption-trained {name}"
        points = report_curves[report_curves["model"] == report_name]
        pixels = points["eps_255_normalised"].map(lambda eps: report_eps_to_pixels(eps / 255) * 255)
        ax.plot(pixels, points["success_rate"], "x:", color=colour, markersize=7)
    ax.set(xlabel="eps x 255 (pixel units)", ylabel="success rate (the report's measure)", ylim=(-0.02, 1.02))
    robust_ax.set(
        xlabel="eps x 255 (pixel units)", ylabel="robust accuracy (dashed: the findings' measure)", ylim=(-0.02, 1.02)
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def reading_text(table8: pd.DataFrame, curves: dict[str, pd.DataFrame], params: Params) -> str:
    """Markdown list: each model's accuracy drop on corrupted images and its PGD robust accuracy at
    the middle eps of the sweep (the conclusions judge the differences)."""
    drops = table8.set_index("level_range")["accuracy_drop"]
    corrupted_names = [name for name in drops.index if name != "baseline"]
    robust_at = {name: curve.set_index("eps_255")["robust_accuracy"] for name, curve in curves.items()}
    middle_eps = sorted(params.attacks.eps_255)[len(params.attacks.eps_255) // 2]
    others = ", ".join(f"{robust_at[name][middle_eps]:.0%} ({name})" for name in robust_at if name != "baseline")
    return "\n".join(
        [
            f"- Robustness to corruption (mean over seeds): the baseline loses {drops['baseline']:.1%} accuracy on "
            "corrupted test images; the corruption-trained models lose "
            f"{', '.join(f'{drops[name]:.1%} ({name})' for name in corrupted_names)}.",
            f"- Robustness to PGD at eps {middle_eps}/255: robust accuracy {robust_at['baseline'][middle_eps]:.0%} on "
            f"the baseline; {others}.",
            "- Whether these differences are beyond what test sampling and training seeds explain is decided in the "
            "conclusions, with each difference's interval, its margin and the images and seeds behind it.",
        ]
    )
