"""A finished run's predictions on corrupted test images (chapter 4's test levels), cached."""

from __future__ import annotations

import pandas as pd
import torch

from fundus_lib.data.dataset import FundusDataset
from fundus_lib.data.pipeline import FundusData, data_variant
from fundus_lib.evaluation.cache import cached
from fundus_lib.runs import Run
from fundus_lib.training.loop import evaluate, predict


def corrupted_test_predictions(run: Run, data: FundusData, levels: tuple[int, int], seed: int) -> pd.DataFrame:
    """The run's best model on the test split with every image corrupted (a random type and a level
    in ``levels``, seeded): per test image its manifest ``row``, label and probabilities p0-p4."""

    def compute() -> pd.DataFrame:
        corrupted = data_variant(data, False, corruption_levels=tuple(levels), corruption_seed=seed)
        dataset = FundusDataset(corrupted, "test")
        probabilities = predict(run.load_model(), dataset, torch.device("cpu"))
        table = pd.DataFrame({"row": dataset.rows, "label": dataset.labels})
        return table.join(pd.DataFrame(probabilities, columns=[f"p{grade}" for grade in range(probabilities.shape[1])]))

    return cached(
        run, "corrupted-test-predictions", {"levels": list(levels), "seed": seed, "data": data.manifest_hash}, compute
    )


def corrupted_test_metrics(run: Run, data: FundusData, levels: tuple[int, int], seed: int) -> pd.DataFrame:
    """The same as one row with accuracy, balanced_accuracy, kappa and loss."""
    table = corrupted_test_predictions(run, data, levels, seed)
    probabilities = table.filter(regex=r"^p\d$").to_numpy()
    return pd.DataFrame([evaluate(probabilities, table["label"].to_numpy())])
