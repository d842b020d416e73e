"""The training runs each chapter needs, derived from a params file.

Notebooks and ``fundus train`` ask this module for the same runs, so a GPU machine can fill the
run store for every chapter and any machine can then render the book from it.

Example::

    for label, config in all_runs(params).items():
        get_run(params, config)
"""

from __future__ import annotations

from fundus_lib.config import CorruptionTraining, DataConfig, ModelRow, Params, RunConfig, run_config


def row_label(row: ModelRow) -> str:
    """Short name of a table row, e.g. ``resnet18 256 px``, ``efficientnet-lite0 128 px, from scratch``
    (a row that sets its own ``pretrained`` says which weights it starts from)."""
    weights = {None: "", True: ", ImageNet", False: ", from scratch"}[row.pretrained]
    return f"{row.model} {row.image_size} px{weights}"


def baseline_runs(params: Params) -> dict[str, RunConfig]:
    """Table 4: every configured model on the imbalanced data, cross-entropy, in params order."""
    return {row_label(row): run_config(params, row) for row in params.baselines}


def seed_count(params: Params, section: str | None = None) -> int:
    """How many training seeds a compared configuration trains: the ``seeds`` of chapter
    ``section`` ("balancing" or "corruption") where it sets its own, else ``params.seeds``."""
    own = getattr(params, section).seeds if section else None
    return params.seeds if own is None else own


def training_seeds(params: Params, section: str | None = None) -> list[int]:
    """The training seeds of a compared configuration: seed, seed + 1, ... (``seed_count``)."""
    return [params.seed + offset for offset in range(seed_count(params, section))]


def seeds_phrase(params: Params) -> str:
    """The training seeds per compared configuration, e.g. ``3`` or ``3 (chapter 3: 5, chapter 4: 5)``."""
    own = {"3": seed_count(params, "balancing"), "4": seed_count(params, "corruption")}
    other = ", ".join(f"chapter {chapter}: {count}" for chapter, count in own.items() if count != params.seeds)
    return f"{params.seeds} ({other})" if other else str(params.seeds)


def with_seed(config: RunConfig, seed: int) -> RunConfig:
    """The same run with another training seed; a run it starts from gets the same seed (the
    fine-tuned seed k continues the baseline's seed k). The first seed leaves the config unchanged."""
    update: dict = {"seed": seed}
    if config.init_from is not None:
        update["init_from"] = with_seed(config.init_from, seed)
    return config.model_copy(update=update)


def seeded(params: Params, configs: dict[str, RunConfig], section: str | None = None) -> dict[str, list[RunConfig]]:
    """Each configuration once per training seed (of chapter ``section``: ``seed_count``)."""
    seeds = training_seeds(params, section)
    return {name: [with_seed(config, seed) for seed in seeds] for name, config in configs.items()}


def compared_baselines(params: Params) -> dict[str, RunConfig]:
    """The Table-4 rows a finding compares: a model trained at more than one image size from the same
    weights (larger images help), and a model at one size from ImageNet and from scratch (transfer helps)."""
    baselines = baseline_runs(params)

    def count(key) -> dict:
        groups: dict = {}
        for config in baselines.values():
            groups.setdefault(key(config), set()).add(config)
        return groups

    sizes = count(lambda config: (config.model, config.pretrained))
    weights = count(lambda config: (config.model, config.image_size))
    return {
        label: config
        for label, config in baselines.items()
        if len(sizes[config.model, config.pretrained]) > 1 or len(weights[config.model, config.image_size]) > 1
    }


def compared_seeds(params: Params) -> dict[str, list[RunConfig]]:
    """Every run a finding compares, keyed like ``all_runs``, once per training seed of its chapter."""
    baselines = {f"02 baselines: {label}": config for label, config in compared_baselines(params).items()}
    balancing = {f"03 balancing: {name}": config for name, config in balancing_runs(params).items()}
    corruption = {
        f"04 corruption: {table}, {name}": config
        for table, rows in corruption_runs(params).items()
        if table != "improvements"
        for name, config in rows.items()
    }
    adversarial = {f"05 adversarial: {name}": config for name, config in adversarial_runs(params).items()}
    return (
        seeded(params, baselines)
        | seeded(params, balancing, "balancing")
        | seeded(params, corruption, "corruption")
        | seeded(params, adversarial)
    )


def all_runs(params: Params) -> dict[str, tuple[Params, RunConfig]]:
    """Every run of every chapter, keyed ``<chapter>: <label>`` (``, seed k`` for the seeds after
    the first of a compared run), with the params whose data it uses."""
    runs = {f"02 baselines: {label}": config for label, config in baseline_runs(params).items()}
    runs |= {f"03 balancing: {name}": config for name, config in balancing_runs(params).items()}
    runs |= {
        f"04 corruption: {table}, {name}": config
        for table, rows in corruption_runs(params).items()
        for name, config in rows.items()
    }
    runs |= {f"05 adversarial: {name}": config for name, config in adversarial_runs(params).items()}
    runs |= {
        f"{label}, seed {config.seed}": config
        for label, seeds in compared_seeds(params).items()
        for config in seeds[1:]
    }
    runs["06 attribution: baseline, shuffled labels"] = shuffled_label_run(params)
    every = {label: (params, config) for label, config in runs.items()}
    if has_spurious_experiment(params):
        cue_params = spurious_params(params)
        every |= {
            f"06 spurious cue: {name}" + (f", seed {config.seed}" if position else ""): (cue_params, config)
            for name, seeds in spurious_runs(params).items()
            for position, config in enumerate(seeds)
        }
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
        changes = {
            "loss": method.loss,
            "gamma": method.gamma,
            "beta": method.beta,
            "sampling": method.sampling,
            "smote_k": settings.smote_k,
        }
        changes.update(
            {
                key: value
                for key, value in (
                    ("dropout", method.dropout),
                    ("epochs", method.epochs),
                    ("batch_size", method.batch_size),
                )
                if value is not None
            }
        )
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


def shuffled_label_run(params: Params) -> RunConfig:
    """Chapter 6's data-randomisation check: Table 9's baseline trained on permuted labels."""
    return adversarial_runs(params)["baseline"].model_copy(update={"shuffled_labels": True})


def has_spurious_experiment(params: Params) -> bool:
    """The spurious-cue experiment needs the synthetic data (it plants the cue) and a cue strength."""
    return params.data.source == "synthetic" and params.attribution.spurious_cue > 0


def spurious_params(params: Params) -> Params:
    """The params with the synthetic data regenerated with the spurious cue and the distractor switched on."""
    synthetic = params.data.synthetic.model_copy(
        update={"spurious_cue": params.attribution.spurious_cue, "distractor": params.attribution.distractor}
    )
    return params.model_copy(update={"data": params.data.model_copy(update={"synthetic": synthetic})})


def data_sections(params: Params) -> list[DataConfig]:
    """The data sections the runs of ``all_runs`` read: the params' own, and the cue data of the
    spurious-cue experiment where it runs."""
    return [params.data] + ([spurious_params(params).data] if has_spurious_experiment(params) else [])


def spurious_runs(params: Params) -> dict[str, list[RunConfig]]:
    """The spurious-cue experiment's baseline and adversarially trained runs, once per training
    seed (on ``spurious_params``' data; paired by seed in chapter 6's verdict)."""
    return seeded(params, adversarial_runs(spurious_params(params)))


def level_label(levels: tuple[int, int]) -> str:
    """``(1, 1)`` -> ``1``, ``(1, 3)`` -> ``1-3`` (the report's row names)."""
    return str(levels[0]) if levels[0] == levels[1] else f"{levels[0]}-{levels[1]}"


def corruption_runs(params: Params) -> dict[str, dict[str, RunConfig]]:
    """Tables 6 and 7 and the report's two proposals, on chapter 4's model row.

    ``table6``: the clean baseline and one model per level range (imbalanced data);
    ``table7``: the same on the oversampled set; ``improvements``: mixed clean + corrupted images
    and corruption on the fly, at the widest level range. Corrupted models train without
    augmentation, as the report's ("No other data augmentation is added").
    """
    settings = params.corruption
    baseline = run_config(params, settings.model)

    def corrupted(base: RunConfig, levels, **options) -> RunConfig:
        scheme = CorruptionTraining(levels=levels, seed=settings.seed, **options)
        return base.model_copy(update={"corruption": scheme, "augment": None})

    tables = {
        "table6": {"baseline": baseline}
        | {level_label(levels): corrupted(baseline, levels) for levels in settings.level_ranges}
    }
    if settings.oversampled:
        oversampled = baseline.model_copy(
            update={"sampling": "oversample", "epochs": settings.oversampled_epochs or baseline.epochs}
        )
        tables["table7"] = {"baseline": oversampled} | {
            level_label(levels): corrupted(oversampled, levels) for levels in settings.level_ranges
        }
    if settings.improvements:
        widest = settings.level_ranges[-1]
        tables["improvements"] = {
            f"mixed clean + corrupted {level_label(widest)}": corrupted(
                baseline, widest, clean_share=settings.clean_share
            ),
            f"on the fly {level_label(widest)}": corrupted(baseline, widest, on_the_fly=True),
        }
    return tables
