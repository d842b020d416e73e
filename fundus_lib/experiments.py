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


def all_runs(params: Params) -> dict[str, tuple[Params, RunConfig]]:
    """Every run of every chapter, keyed ``<chapter>: <label>``, with the params whose data it uses."""
    runs = {f"02 baselines: {label}": config for label, config in baseline_runs(params).items()}
    runs |= {f"03 balancing: {name}": config for name, config in balancing_runs(params).items()}
    runs |= {f"05 adversarial: {name}": config for name, config in adversarial_runs(params).items()}
    every = {label: (params, config) for label, config in runs.items()}
    if has_spurious_experiment(params):
        cue_params = spurious_params(params)
        every |= {f"06 spurious cue: {name}": (cue_params, config) for name, config in adversarial_runs(cue_params).items()}
    return every


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


def has_spurious_experiment(params: Params) -> bool:
    """The spurious-cue experiment needs the synthetic data (it plants the cue) and a cue strength."""
    return params.data.source == "synthetic" and params.attribution.spurious_cue > 0


def spurious_params(params: Params) -> Params:
    """The params with the synthetic data regenerated with the spurious cue switched on."""
    synthetic = params.data.synthetic.model_copy(update={"spurious_cue": params.attribution.spurious_cue})
    return params.model_copy(update={"data": params.data.model_copy(update={"synthetic": synthetic})})
