"""The training runs each chapter needs, derived from a params file.

Notebooks and ``fundus train`` ask this module for the same runs, so a GPU machine can fill the
run store for every chapter and any machine can then render the book from it.

Example::

    for label, config in all_runs(params).items():
        get_run(params, config)
"""

from __future__ import annotations

from fundus_lib.config import ModelRow, Params, RunConfig, run_config


def row_label(row: ModelRow) -> str:
    """Short name of a table row, e.g. ``resnet18 256 px``."""
    return f"{row.model} {row.image_size} px"


def baseline_runs(params: Params) -> dict[str, RunConfig]:
    """Table 4: every configured model on the imbalanced data, cross-entropy, in params order."""
    return {row_label(row): run_config(params, row) for row in params.baselines}


def all_runs(params: Params) -> dict[str, RunConfig]:
    """Every run of every chapter, keyed ``<chapter>: <label>``."""
    return {f"02 baselines: {label}": config for label, config in baseline_runs(params).items()}
