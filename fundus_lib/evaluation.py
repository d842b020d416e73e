"""Evaluations of finished runs beyond their test metrics: attacks on a fixed, seeded sample of
test images. Results are cached in the run's folder (``evaluations/``), keyed by the settings,
so re-running a chapter repeats no attack.

Example::

    curve = pgd_curve(run, data, params.attacks)           # success rate and robust accuracy per eps
    sizes = decision_attack_sizes(run, data, params.attacks)   # HopSkipJump perturbation sizes
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from fundus_lib.attacks import attack_success, hop_skip_jump, perturbation_sizes, predict_labels
from fundus_lib.config import AttackConfig
from fundus_lib.data.dataset import to_tensor
from fundus_lib.data.pipeline import FundusData
from fundus_lib.files import write_atomic
from fundus_lib.runs import Run


def cached(run: Run, name: str, settings: dict, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """``compute()``'s table, stored once per run and settings in ``<run>/evaluations/``."""
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = run.root / "evaluations" / f"{name}-{digest}.csv"
    if path.exists():
        return pd.read_csv(path)
    table = compute()
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, table.to_csv(index=False))
    return table


def test_sample(data: FundusData, n_images: int, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """A fixed, seeded sample of test images: (array rows, images float (N, 3, S, S) in [0, 1], labels (N,))."""
    rows = data.rows("test")
    chosen = np.sort(np.random.default_rng(seed).choice(rows, size=min(n_images, len(rows)), replace=False))
    images = torch.stack([to_tensor(np.array(data.cache.images[row])) for row in chosen])
    labels = torch.as_tensor(data.manifest.loc[chosen, "level"].to_numpy(), dtype=torch.int64)
    return chosen, images, labels


def pgd_curve(run: Run, data: FundusData, settings: AttackConfig, progress: bool = True) -> pd.DataFrame:
    """The report's PGD sweep on the run's best model: success rate and robust accuracy per eps."""
    def compute() -> pd.DataFrame:
        _, images, labels = test_sample(data, settings.n_images, settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        return attack_success(run.load_model(), images, labels, [eps / 255 for eps in settings.eps_255],
                              settings.steps, settings.batch_size, restarts=settings.restarts,
                              generator=generator, progress=progress)

    keys = settings.model_dump(exclude={"decision"}, mode="json")
    return cached(run, "pgd", {**keys, "data": data.manifest_hash}, compute)


def decision_attack_sizes(run: Run, data: FundusData, settings: AttackConfig) -> pd.DataFrame:
    """HopSkipJump on the correctly classified images of the attack sample (at most
    ``settings.decision.n_images``): per image its L2 and L-inf perturbation ([0, 1] pixel
    units; NaN where no adversarial was found within the query budget) and queries used."""
    def compute() -> pd.DataFrame:
        rows, images, labels = test_sample(data, settings.n_images, settings.seed)
        model = run.load_model()
        correct = (predict_labels(model, images) == labels).nonzero().squeeze(1)[: settings.decision.n_images]
        result = hop_skip_jump(model, images[correct], labels[correct], steps=settings.decision.steps,
                               max_queries=settings.decision.max_queries,
                               generator=torch.Generator().manual_seed(settings.seed))
        sizes = perturbation_sizes(images[correct], result.adversarials, result.success).per_image
        return sizes.assign(row=rows[correct.numpy()], success=result.success.numpy(), queries=result.queries.numpy())

    keys = settings.model_dump(mode="json")
    return cached(run, "decision", {**keys, "data": data.manifest_hash}, compute)

