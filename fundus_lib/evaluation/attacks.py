"""The report's PGD sweep on a finished run (Figures 5-6), on its test sample and on the external
photographs, and HopSkipJump's perturbation sizes; each result cached (``evaluation.cache``).

Example::

    curve = pgd_curve(run, data, params.attacks)           # success rate and robust accuracy per eps
    sizes = decision_attack_sizes(run, data, params.attacks, rows)
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch

from fundus_lib.attacks.decision import hop_skip_jump, perturbation_sizes
from fundus_lib.attacks.pgd import attack_predictions, success_table
from fundus_lib.config import AttackConfig
from fundus_lib.data.dataset import to_tensor
from fundus_lib.data.pipeline import FundusData
from fundus_lib.evaluation.cache import cached
from fundus_lib.evaluation.samples import other_grade_rows, sample_images, test_grades, test_sample
from fundus_lib.runs import Run


def pgd_outcomes(run: Run, data: FundusData, settings: AttackConfig, progress: bool = True) -> pd.DataFrame:
    """The report's PGD sweep on the run's best model, per image of the attack sample: one row per
    (eps, image) with the manifest ``row``, label, clean and attacked prediction (``attack_predictions``)."""

    def compute() -> pd.DataFrame:
        rows, images, labels = test_sample(data, settings.n_images, settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        outcomes = attack_predictions(
            run.load_model(),
            images,
            labels,
            [eps / 255 for eps in settings.eps_255],
            settings.steps,
            settings.batch_size,
            restarts=settings.restarts,
            generator=generator,
            progress=progress,
        )
        return outcomes.assign(row=rows[outcomes["image"].to_numpy()])

    keys = settings.model_dump(exclude={"decision", "robustness"}, mode="json")
    return cached(run, "pgd-outcomes", {**keys, "data": data.manifest_hash}, compute)


def pgd_curve(run: Run, data: FundusData, settings: AttackConfig, progress: bool = True) -> pd.DataFrame:
    """The report's PGD sweep on the run's best model: success rate and robust accuracy per eps."""
    return success_table(pgd_outcomes(run, data, settings, progress))


def external_pgd_curve(params, run: Run, settings: AttackConfig, progress: bool = True) -> pd.DataFrame:
    """The report's PGD sweep on a seeded sample of ``settings.n_images`` photographs of the external
    test set (``params.data.external``, none of them trained or tuned on): success rate and robust
    accuracy per eps, as ``pgd_curve`` on the run's own test images."""
    from fundus_lib.config import resolve_path
    from fundus_lib.evaluation.grading import unseen_photographs

    cache, manifest = unseen_photographs(params, run, resolve_path(params.data.external), progress=False)
    usable = manifest.index[manifest["status"] == "ok"].to_numpy()

    def compute() -> pd.DataFrame:
        rng = np.random.default_rng(settings.seed)
        rows = np.sort(rng.choice(usable, size=min(settings.n_images, len(usable)), replace=False))
        images = torch.stack([to_tensor(np.array(cache.images[row])) for row in rows])
        labels = torch.tensor(manifest.loc[rows, "level"].to_numpy(), dtype=torch.int64)
        return attack_predictions(
            run.load_model(),
            images,
            labels,
            [eps / 255 for eps in settings.eps_255],
            settings.steps,
            settings.batch_size,
            restarts=settings.restarts,
            generator=torch.Generator().manual_seed(settings.seed),
            progress=progress,
        )

    keys = settings.model_dump(exclude={"decision", "robustness"}, mode="json")
    external = hashlib.sha1("".join(manifest.loc[usable, "sha1"]).encode()).hexdigest()
    return success_table(cached(run, "external-pgd-outcomes", {**keys, "external": external}, compute))


def decision_attack_sizes(run: Run, data: FundusData, settings: AttackConfig, rows: np.ndarray) -> pd.DataFrame:
    """HopSkipJump on the test images of manifest ``rows`` (chapter 5: those every compared model
    grades correctly, so both models are attacked on the same images): per image its L2 and L-inf
    perturbation ([0, 1] pixel units; NaN where no adversarial was found within the query budget),
    queries used and ``l2_<k>``, the best L2 after iteration k (k = 0: the start), to show whether
    the budget converges. Each attack starts from a test image that the model grades otherwise
    (else uniform noise): on real photographs a model grades noise like most images, grade 0, so
    noise rarely starts an attack on a correctly graded grade-0 image."""

    def compute() -> pd.DataFrame:
        if len(rows) == 0:
            return pd.DataFrame(
                {column: pd.Series(dtype=float) for column in ("l2", "linf", "row", "queries", "l2_0")}
                | {"success": pd.Series(dtype=bool)}
            )
        images, labels = sample_images(data, rows)
        starts, _ = sample_images(data, other_grade_rows(data, rows, test_grades(run, data), settings.seed))
        history: list[torch.Tensor] = []
        result = hop_skip_jump(
            run.load_model(),
            images,
            labels,
            steps=settings.decision.steps,
            max_queries=settings.decision.max_queries,
            starts=starts,
            initial_evals=settings.decision.initial_evals,
            max_evals=settings.decision.max_evals,
            direction_grid_px=settings.decision.direction_grid_px,
            generator=torch.Generator().manual_seed(settings.seed),
            history=history,
        )
        sizes = perturbation_sizes(images, result.adversarials, result.success).per_image
        trace = pd.DataFrame(torch.stack(history, dim=1).numpy(), columns=[f"l2_{k}" for k in range(len(history))])
        return pd.concat(
            [sizes.assign(row=rows, success=result.success.numpy(), queries=result.queries.numpy()), trace], axis=1
        )

    keys = settings.model_dump(exclude={"robustness"}, mode="json")
    return cached(
        run,
        "decision",
        {
            **keys,
            "rows": [int(row) for row in rows],
            "data": data.manifest_hash,
            "starts": "a test image the model grades otherwise",
        },
        compute,
    )
