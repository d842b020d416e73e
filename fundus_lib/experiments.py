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
    return {**{f"02 baselines: {label}": config for label, config in baseline_runs(params).items()},
            **{f"03 balancing: {name}": config for name, config in balancing_runs(params).items()},
            **{f"05 adversarial: {name}": config for name, config in adversarial_runs(params).items()}}


def balancing_runs(params: Params) -> dict[str, RunConfig]:
    """Table 5: every balancing method on the chapter's model row, keyed by the method's name.

    A ``restart`` row fine-tunes from the first row's run (plain cross-entropy), as the report's
    "oversampling + restart" started from its baseline's weights.
    """
    settings = params.balancing
    base = run_config(params, settings.model).model_dump()
    runs: dict[str, RunConfig] = {}
    for method in settings.methods:
        changes = {"loss": method.loss, "gamma": method.gamma, "beta": method.beta, "sampling": method.sampling,
                   "smote_k": settings.smote_k}
        changes.update({key: value for key, value in (("dropout", method.dropout), ("epochs", method.epochs),
                                                       ("batch_size", method.batch_size)) if value is not None})
        if method.restart:
            changes["init_from"] = runs[settings.methods[0].name]
        runs[method.name] = RunConfig.model_validate({**base, **changes})
    return runs


def adversarial_runs(params: Params) -> dict[str, RunConfig]:
    """Table 9: the baseline and the adversarially trained model on chapter 5's model row
    (trained from scratch, or fine-tuned from the baseline with ``fine_tune_epochs``)."""
    settings = params.adversarial
    baseline = run_config(params, settings.model)
    changes = {"adversarial": settings.training}
    if settings.fine_tune_epochs:
        changes.update(init_from=baseline, epochs=settings.fine_tune_epochs)
    return {"baseline": baseline, "adversarially trained": baseline.model_copy(update=changes)}
