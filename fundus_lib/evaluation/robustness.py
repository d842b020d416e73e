"""Chapter 5's robustness evaluation of finished runs (APGD-CE, APGD-T, Square from
``attacks.library``; the steps ladder, transfer, the report's code, the clinical view), each cached
in the run's folder (``evaluation.cache``), so a store filled on a GPU machine repeats no attack when
a CPU machine renders the book; and the measures over their outcomes (robust accuracy and kappa per
attack and eps, the per-image worst case).

Example::

    outcomes = sweep_outcomes(run, data, params.attacks.robustness)   # APGD-CE, APGD-T, Square per eps
    robustness_table(outcomes)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from fundus_lib.attacks.library import apgd_ce, attack_outcomes, library_attacks, pgd_attack
from fundus_lib.attacks.pgd import pgd, predict_labels, report_eps_to_pixels, targeted_pgd
from fundus_lib.attacks.report_code import report_code_pgd
from fundus_lib.config import RobustnessConfig
from fundus_lib.data.pipeline import FundusData
from fundus_lib.evaluation.cache import cached_reading
from fundus_lib.evaluation.samples import sample_images, test_sample
from fundus_lib.metrics import confusion, quadratic_kappa
from fundus_lib.runs import Run
from fundus_lib.statistics import WORST_CASE

LIBRARY = "pyautoattack 0.2.0"


#: The settings every attack on the robustness sample reads (which images, its seed).
SAMPLE_SETTINGS = frozenset({"n_images", "seed"})
#: The APGD settings (steps and restarts of APGD-CE and APGD-T, and of the ladder's top rung).
APGD_SETTINGS = frozenset({"steps", "restarts"})
#: Per evaluation the settings it reads: changing another one (e.g. Square's budget) recomputes nothing else.
READS = {
    "robustness-white-box": SAMPLE_SETTINGS | APGD_SETTINGS | {"eps_255"},
    "robustness-square": SAMPLE_SETTINGS | {"eps_255", "square_queries"},
    "robustness-transfer": SAMPLE_SETTINGS | APGD_SETTINGS | {"check_eps_255"},
    "robustness-ladder": SAMPLE_SETTINGS | APGD_SETTINGS | {"check_eps_255", "ladder_steps", "ladder_restarts"},
    "robustness-report-code": SAMPLE_SETTINGS,
    "robustness-clinical": APGD_SETTINGS
    | {"seed", "clinical_per_grade", "clinical_eps_255", "ladder_steps", "ladder_restarts"},
}


def _cached(run: Run, name: str, settings: RobustnessConfig, data: FundusData, compute, **more) -> pd.DataFrame:
    """``cached_reading`` keyed by the settings evaluation ``name`` reads (``READS``)."""
    return cached_reading(
        run, name, settings, READS[name], {"data": data.manifest_hash, "library": LIBRARY, **more}, compute
    )


def white_box_outcomes(run: Run, data: FundusData, settings: RobustnessConfig, progress: bool = True) -> pd.DataFrame:
    """APGD-CE and APGD-T at every eps of ``settings.eps_255`` on the seeded robustness sample:
    ``attack_outcomes``' rows plus the manifest ``row``."""

    def compute() -> pd.DataFrame:
        attacks = library_attacks(settings.steps, settings.restarts, None, settings.seed)
        return _sample_outcomes(run, data, settings, attacks, progress)

    return _cached(run, "robustness-white-box", settings, data, compute)


def square_outcomes(run: Run, data: FundusData, settings: RobustnessConfig, progress: bool = True) -> pd.DataFrame:
    """Square (black-box, ``settings.square_queries`` queries) like ``white_box_outcomes``."""

    def compute() -> pd.DataFrame:
        attacks = {
            "square": library_attacks(settings.steps, settings.restarts, settings.square_queries, settings.seed)[
                "square"
            ]
        }
        return _sample_outcomes(run, data, settings, attacks, progress)

    return _cached(run, "robustness-square", settings, data, compute)


def _sample_outcomes(
    run: Run,
    data: FundusData,
    settings: RobustnessConfig,
    attacks: dict,
    progress: bool,
    eps_255: tuple[float, ...] | None = None,
    source: Run | None = None,
) -> pd.DataFrame:
    """``attacks`` at ``eps_255`` (default: the sweep's) on the robustness sample, with the manifest ``row``."""
    rows, images, labels = test_sample(data, settings.n_images, settings.seed)
    eps_list = [eps / 255 for eps in (settings.eps_255 if eps_255 is None else eps_255)]
    outcomes = attack_outcomes(
        run.load_model(),
        images,
        labels,
        eps_list,
        attacks,
        progress=progress,
        source=None if source is None else source.load_model(),
    )
    return outcomes.assign(row=rows[outcomes["image"].to_numpy()])


def sweep_outcomes(
    run: Run, data: FundusData, settings: RobustnessConfig, with_square: bool = True, progress: bool = True
) -> pd.DataFrame:
    """The eps sweep: ``white_box_outcomes`` and (``with_square``) ``square_outcomes``."""
    white_box = white_box_outcomes(run, data, settings, progress)
    return (
        pd.concat([white_box, square_outcomes(run, data, settings, progress)], ignore_index=True)
        if with_square
        else white_box
    )


def strongest_outcomes(run: Run, data: FundusData, settings: RobustnessConfig, progress: bool = True) -> pd.DataFrame:
    """Per (eps, image) of the sweep the worst case of the white-box attacks (``worst_case``):
    the findings' attack."""
    return worst_case(white_box_outcomes(run, data, settings, progress))


def strongest_curve(runs: list[Run], data: FundusData, settings: RobustnessConfig) -> pd.DataFrame:
    """Robust accuracy under ``strongest_outcomes`` per eps (``eps_255``, pixel units), the mean
    over the seeds' ``runs``."""
    tables = [
        robustness_table(strongest_outcomes(run, data, settings, progress=False), with_worst_case=False) for run in runs
    ]
    return pd.concat(tables).groupby("eps_255", as_index=False)["robust_accuracy"].mean()


def transfer_outcomes(
    run: Run, source: Run, data: FundusData, settings: RobustnessConfig, progress: bool = True
) -> pd.DataFrame:
    """APGD-CE crafted on ``source`` (another seed of the same configuration) at the check eps,
    graded by ``run``'s model, on the robustness sample."""

    def compute() -> pd.DataFrame:
        attack = {
            "transfer apgd-ce": library_attacks(settings.steps, settings.restarts, None, settings.seed)["apgd-ce"]
        }
        return _sample_outcomes(run, data, settings, attack, progress, (settings.check_eps_255,), source)

    return _cached(run, "robustness-transfer", settings, data, compute, source=source.root.name)


def ladder_rungs(settings: RobustnessConfig) -> dict[str, object]:
    """The more-steps check's attacks, weakest first: the report's 5-step PGD, PGD with
    ``ladder_steps``, the same with ``ladder_restarts`` restarts, then APGD-CE with the sweep's
    steps and restarts."""
    steps, restarts = settings.ladder_steps, settings.ladder_restarts
    return {
        "PGD 5 steps (the report)": pgd_attack(5, seed=settings.seed),
        f"PGD {steps} steps": pgd_attack(steps, seed=settings.seed),
        f"PGD {steps} steps x {restarts} restarts": pgd_attack(steps, restarts, settings.seed),
        f"APGD-CE {settings.steps} steps": library_attacks(settings.steps, settings.restarts, None, settings.seed)[
            "apgd-ce"
        ],
    }


def ladder_outcomes(run: Run, data: FundusData, settings: RobustnessConfig, progress: bool = True) -> pd.DataFrame:
    """Every rung of ``ladder_rungs`` at the check eps on the robustness sample."""

    def compute() -> pd.DataFrame:
        return _sample_outcomes(run, data, settings, ladder_rungs(settings), progress, (settings.check_eps_255,))

    return _cached(run, "robustness-ladder", settings, data, compute)


def report_code_outcomes(
    run: Run, data: FundusData, settings: RobustnessConfig, eps_255_normalised, steps: int = 5
) -> pd.DataFrame:
    """The report's attack as its code ran it beside the fixed one, at the report's eps
    (normalised units), on the robustness sample: per (variant, eps, image) the clean and attacked
    grades. Variants: ``as shipped`` (eval mode, as its success-rate script), ``as shipped, train
    mode`` (as its adversarial training attacked), ``fixed`` (this project's PGD, eval mode, eps
    converted to pixel units: eps x mean ImageNet std)."""

    def compute() -> pd.DataFrame:
        rows, images, labels = test_sample(data, settings.n_images, settings.seed)
        model, trainable = run.load_model(), run.load_model(fold=False)
        clean = predict_labels(model, images).numpy()
        records = []
        for eps in eps_255_normalised:
            generator = torch.Generator().manual_seed(settings.seed)
            variants = {
                "as shipped": report_code_pgd(model, images, labels, eps / 255, steps, generator=generator),
                "as shipped, train mode": report_code_pgd(
                    trainable,
                    images,
                    labels,
                    eps / 255,
                    steps,
                    train_mode=True,
                    generator=torch.Generator().manual_seed(settings.seed),
                ),
                "fixed": pgd(
                    model,
                    images,
                    labels,
                    report_eps_to_pixels(eps / 255),
                    steps=steps,
                    generator=torch.Generator().manual_seed(settings.seed),
                ),
            }
            for variant, adversarials in variants.items():
                records.append(
                    pd.DataFrame(
                        {
                            "variant": variant,
                            "eps_255_normalised": eps,
                            "row": rows,
                            "label": labels.numpy(),
                            "clean": clean,
                            "attacked": predict_labels(model, adversarials).numpy(),
                        }
                    )
                )
        return pd.concat(records, ignore_index=True)

    return _cached(run, "robustness-report-code", settings, data, compute, eps=list(eps_255_normalised), steps=steps)


def clinical_rows(data: FundusData, settings: RobustnessConfig) -> np.ndarray:
    """Up to ``clinical_per_grade`` seeded test rows of each grade, sorted."""
    test = data.rows("test")
    grades = data.manifest.loc[test, "level"].to_numpy()
    generator = np.random.default_rng(settings.seed)
    chosen = [
        generator.choice(
            test[grades == grade], size=min(settings.clinical_per_grade, int((grades == grade).sum())), replace=False
        )
        for grade in np.unique(grades)
    ]
    return np.sort(np.concatenate(chosen))


def clinical_outcomes(run: Run, data: FundusData, settings: RobustnessConfig) -> pd.DataFrame:
    """The clinical view at ``clinical_eps_255`` (pixel units) on a per-grade sample: rows per
    (attack, image) with ``row``, ``label``, ``clean`` and ``attacked``. Attacks: ``to grade 4``
    (targeted PGD on the grade-0 images), ``to grade 0`` (targeted PGD on the referable ones,
    grade 2 or more: a missed referral) and ``apgd-ce`` (untargeted, on the referable ones)."""

    def compute() -> pd.DataFrame:
        rows = clinical_rows(data, settings)
        images, labels = sample_images(data, rows)
        model, eps = run.load_model(), settings.clinical_eps_255 / 255
        clean = predict_labels(model, images)
        healthy, sick = labels == 0, torch.as_tensor(referable(labels.numpy()))

        def targeted(chosen, grade):
            return targeted_pgd(
                model,
                images[chosen],
                grade,
                eps,
                settings.ladder_steps,
                settings.ladder_restarts,
                torch.Generator().manual_seed(settings.seed),
            )

        attacks = {
            "to grade 4": (healthy, lambda chosen: targeted(chosen, 4)),
            "to grade 0": (sick, lambda chosen: targeted(chosen, 0)),
            "apgd-ce": (
                sick,
                lambda chosen: apgd_ce(
                    model, images[chosen], labels[chosen], eps, settings.steps, settings.restarts, settings.seed
                ),
            ),
        }
        tables = [
            pd.DataFrame(
                {
                    "attack": name,
                    "row": rows[chosen.numpy()],
                    "label": labels[chosen].numpy(),
                    "clean": clean[chosen].numpy(),
                    "attacked": predict_labels(model, attack(chosen)).numpy(),
                }
            )
            for name, (chosen, attack) in attacks.items()
            if chosen.any()
        ]
        return (
            pd.concat(tables, ignore_index=True)
            if tables
            else pd.DataFrame(columns=["attack", "row", "label", "clean", "attacked"])
        )

    return _cached(run, "robustness-clinical", settings, data, compute)


WHITE_BOX = ("apgd-ce", "apgd-t")


def worst_case(outcomes: pd.DataFrame, attacks: Sequence[str] = WHITE_BOX) -> pd.DataFrame:
    """Per (eps, image) the worst case over ``attacks``: the first of them (in the given order) that
    misgrades the image, else the correct grade; rows as ``attack_outcomes``' with attack ``WORST_CASE``."""
    chosen = outcomes[outcomes["attack"].isin(attacks)]
    if chosen.empty:
        raise ValueError(
            f"none of the attacks {list(attacks)} is in the outcomes ({sorted(outcomes['attack'].unique())})"
        )
    order = {name: position for position, name in enumerate(attacks)}
    ranked = chosen.assign(wrong=chosen["attacked"] != chosen["label"], order=chosen["attack"].map(order))
    ranked = ranked.sort_values(["eps", "image", "wrong", "order"], ascending=[True, True, False, True], kind="stable")
    return ranked.drop_duplicates(["eps", "image"]).drop(columns=["wrong", "order"]).assign(attack=WORST_CASE)


def robustness_table(outcomes: pd.DataFrame, with_worst_case: bool = True) -> pd.DataFrame:
    """Per attack and eps: robust_accuracy (share graded correctly under attack), robust_kappa
    (quadratic kappa of the attacked grades), success_rate (the report's: share whose grade changed)
    and n (images); with ``with_worst_case``, also the per-image worst case over the white-box attacks."""
    if with_worst_case and outcomes["attack"].isin(WHITE_BOX).any():
        outcomes = pd.concat([outcomes, worst_case(outcomes, [a for a in WHITE_BOX if a in set(outcomes["attack"])])])
    rows = []
    for (name, eps), group in outcomes.groupby(["attack", "eps"], sort=False):
        rows.append(
            {
                "attack": name,
                "eps": eps,
                "eps_255": eps * 255,
                "robust_accuracy": float((group["attacked"] == group["label"]).mean()),
                "robust_kappa": quadratic_kappa(confusion(group["label"], group["attacked"])),
                "success_rate": float((group["attacked"] != group["clean"]).mean()),
                "n": len(group),
            }
        )
    return pd.DataFrame(rows)


def referable(grades) -> np.ndarray:
    """Referable diabetic retinopathy: grade 2 (moderate) or more."""
    return np.asarray(grades) >= 2
