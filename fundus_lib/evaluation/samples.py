"""The fixed, seeded samples of test images that evaluations run on (attacks, attributions, sanity
checks), so that every model of a comparison sees the same images.
"""

from __future__ import annotations

import numpy as np
import torch

from fundus_lib.config import AttributionConfig
from fundus_lib.data.dataset import to_tensor
from fundus_lib.data.pipeline import FundusData
from fundus_lib.data.synthetic import load_specs
from fundus_lib.runs import Run


def test_sample_rows(data: FundusData, n_images: int, seed: int) -> np.ndarray:
    """The array rows of a fixed, seeded sample of at most ``n_images`` test images, sorted."""
    rows = data.rows("test")
    return np.sort(np.random.default_rng(seed).choice(rows, size=min(n_images, len(rows)), replace=False))


def test_sample(data: FundusData, n_images: int, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """A fixed, seeded sample of test images: (array rows, images float (N, 3, S, S) in [0, 1], labels (N,))."""
    chosen = test_sample_rows(data, n_images, seed)
    images = torch.stack([to_tensor(np.array(data.cache.images[row])) for row in chosen])
    # torch.tensor copies: the array pandas returns may be read-only, which as_tensor warns about
    labels = torch.tensor(data.manifest.loc[chosen, "level"].to_numpy(), dtype=torch.int64)
    return chosen, images, labels


def test_grades(run: Run, data: FundusData) -> np.ndarray:
    """The run's grade of each test image (the run's own evaluation), in ``data.rows("test")`` order."""
    predictions = run.predictions().query("split == 'test'").set_index("image")["prediction"]
    return predictions.loc[data.manifest.loc[data.rows("test"), "image"]].to_numpy()


def other_grade_rows(data: FundusData, rows: np.ndarray, grades: np.ndarray, seed: int) -> np.ndarray:
    """For each manifest row (a correctly graded image: its grade is its label), a seeded random
    test row that is graded otherwise (``grades``: a grade per test row, ``data.rows("test")``
    order); the row itself where no test image is."""
    generator = np.random.default_rng(seed)
    test = data.rows("test")
    chosen = []
    for row, level in zip(rows, data.manifest.loc[rows, "level"].to_numpy()):
        others = test[grades != level]
        chosen.append(generator.choice(others) if len(others) else row)
    return np.array(chosen, dtype=int)


def lesion_sample(data: FundusData, n_images: int, seed: int) -> np.ndarray:
    """Array rows of a fixed, seeded sample of test images whose mask holds a lesion (codes 1-5)."""
    if data.cache.masks is None:
        raise ValueError("lesion scores need lesion masks (the synthetic data)")
    rows = data.rows("test")
    masks = np.asarray(data.cache.masks[rows])
    with_lesion = rows[((masks >= 1) & (masks <= 5)).any(axis=(1, 2))]
    return np.sort(np.random.default_rng(seed).choice(with_lesion, size=min(n_images, len(with_lesion)), replace=False))


def sample_images(data: FundusData, rows, true_grade: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) in [0, 1] and their labels, or with ``true_grade`` the class an attribution
    explains: on synthetic data the generator's grade (``label_noise`` moved some labels off it)."""
    images = torch.stack([to_tensor(np.array(data.cache.images[row])) for row in rows])
    labels = data.manifest.loc[rows, "level"].to_numpy()
    if true_grade and data.config.source == "synthetic":
        grades = {spec.image: spec.grade for spec in load_specs(data.images_dir.parent)}
        labels = np.array([grades[image] for image in data.manifest.loc[rows, "image"]])
    return images, torch.as_tensor(labels, dtype=torch.int64)


def sanity_rows(data: FundusData, settings: AttributionConfig) -> np.ndarray:
    """The sanity checks' images: the first ``settings.sanity_images`` of the lesion sample (of the
    test sample on data without lesion masks)."""
    rows = (
        lesion_sample(data, settings.n_images, settings.seed)
        if data.cache.masks is not None
        else test_sample_rows(data, settings.n_images, settings.seed)
    )
    return rows[: settings.sanity_images]
