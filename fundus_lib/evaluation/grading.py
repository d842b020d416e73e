"""Grade a folder of photographs with a stored run: the chapter-2 baseline on images it never saw.

    fundus grade params/eyepacs-mini.yaml ../shared/data/idrid_grading         # IDRiD's layout, detected
    fundus grade params/eyepacs-mini.yaml other/images other/trainLabels.csv   # Kaggle's layout
    fundus grade params/eyepacs-mini.yaml clinic/photos clinic/grades.csv --image-column file --grade-column dr

The photographs (any layout of :mod:`fundus_lib.data.layouts`) go through the same decode, Graham
filter and crop as the run's training data, cached at the run's image size, with skips recorded;
byte-identical photographs are resolved as in training (:mod:`fundus_lib.data.duplicates`), and a
photograph byte-identical to one the run trained or was tuned on (its train and valid splits) is
excluded (it is not external). The run's
stored model grades every usable one with the run's readout (its validation thresholds where it
has them). Nothing is trained or tuned on them.

:func:`external_measures` gives what a screening reader looks for, with bootstrap intervals over
the photographs: accuracy, balanced accuracy, quadratic kappa, and referable-DR (grade >= 2)
sensitivity and specificity; :func:`confusion_frame` and :func:`per_grade` the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fundus_lib.config import Params, run_config
from fundus_lib.data.cache import Cache, CacheSettings, build_cache, cache_key
from fundus_lib.data.dataset import ImageDataset
from fundus_lib.data.duplicates import exclude_seen, resolve_duplicates
from fundus_lib.data.layouts import read_folder
from fundus_lib.metrics import N_CLASSES, accuracy, balanced_accuracy, confusion, quadratic_kappa
from fundus_lib.paths import data_dir
from fundus_lib.runs import Run, get_run, run_data
from fundus_lib.statistics import resampled_intervals
from fundus_lib.training.loop import predict

#: Referable diabetic retinopathy: ICDR grade 2 (moderate) or worse.
REFERABLE = 2


def photographs(
    params: Params,
    folder: Path,
    labels_csv: Path | None = None,
    image_size: int | None = None,
    progress: bool = True,
    **layout,
) -> tuple[Cache, pd.DataFrame]:
    """The cache of a folder's labelled photographs, prepared like the params' data at ``image_size``,
    and its manifest with byte-identical photographs resolved. ``labels_csv``: the folder is then
    the images folder (Kaggle's or the generic layout); ``layout``: read_folder's layout, image_column,
    grade_column."""
    if labels_csv is not None:
        layout.setdefault("images_dir", folder)
    items = read_folder(folder, labels_csv=labels_csv, **layout)
    data = params.data
    settings = CacheSettings(image_size or data.image_size, data.graham_circle, data.allow_grayscale)
    cache = build_cache(items, data_dir() / "cache" / cache_key(items, settings), settings, data.workers, progress)
    return cache, resolve_duplicates(cache.manifest)


def grade_photographs(run: Run, cache: Cache, manifest: pd.DataFrame, batch_size: int = 128) -> pd.DataFrame:
    """One row per usable photograph of ``manifest``: image, its label (level) and the run's grade."""
    rows = manifest.index[manifest["status"] == "ok"].to_numpy()
    levels = manifest.loc[rows, "level"].to_numpy()
    probabilities = predict(
        run.load_model(), ImageDataset(cache.images, levels, rows), torch.device("cpu"), batch_size, amp=False
    )
    return pd.DataFrame(
        {"image": manifest.loc[rows, "image"].to_numpy(), "level": levels, "grade": probabilities.argmax(axis=1)}
    )


def unseen_photographs(
    params: Params, run: Run, folder: Path, labels_csv: Path | None = None, progress: bool = True, **layout
) -> tuple[Cache, pd.DataFrame]:
    """A folder's photographs at ``run``'s image size, those it trained or was tuned on excluded (a
    photograph byte-identical to one of its train or valid split): the cache and its manifest with
    every skip and its reason."""
    cache, manifest = photographs(params, Path(folder), labels_csv, run.config.image_size, progress, **layout)
    seen = run_data(params, run.config, progress).manifest
    return cache, exclude_seen(manifest, seen[seen["split"].isin(["train", "valid"])])


def grade_unseen(
    params: Params, run: Run, folder: Path, labels_csv: Path | None = None, progress: bool = True, **layout
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``run``'s grades of a folder's photographs that it never trained or was tuned on
    (``unseen_photographs``): (grades per photograph, the manifest with every skip and its reason)."""
    cache, manifest = unseen_photographs(params, run, folder, labels_csv, progress, **layout)
    return grade_photographs(run, cache, manifest, params.runtime.eval_batch_size), manifest


def grade_folder(
    params: Params, folder: Path, labels_csv: Path | None = None, progress: bool = True, **layout
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The chapter-2 baseline of ``params`` (from the store: never trained here) on a folder:
    (grades per photograph, :func:`external_measures`, skipped photographs with their reasons)."""
    run = get_run(params, run_config(params, params.baselines[0]), train=False, progress=progress)
    grades, manifest = grade_unseen(params, run, folder, labels_csv, progress, **layout)
    skipped = manifest.loc[manifest["status"] != "ok", ["image", "path", "reason"]]
    return grades, external_measures(grades["level"], grades["grade"]), skipped


def _measures(matrix: np.ndarray) -> list[float]:
    referable, healthy = matrix[REFERABLE:], matrix[:REFERABLE]
    sensitivity = referable[:, REFERABLE:].sum() / referable.sum() if referable.sum() else float("nan")
    specificity = healthy[:, :REFERABLE].sum() / healthy.sum() if healthy.sum() else float("nan")
    return [accuracy(matrix), balanced_accuracy(matrix), quadratic_kappa(matrix), sensitivity, specificity]


MEASURES = ["accuracy", "balanced_accuracy", "kappa", "referable_sensitivity", "referable_specificity"]


def external_measures(levels, grades) -> pd.DataFrame:
    """Accuracy, balanced accuracy, quadratic kappa and referable-DR (grade >= 2) sensitivity and
    specificity of ``grades`` against ``levels``: one row each, columns value, low, high (percentile
    bootstrap over the photographs, ``statistics.resampled_intervals``) and n (photographs counted)."""
    levels, grades = np.asarray(levels, dtype=np.int64), np.asarray(grades, dtype=np.int64)
    values = _measures(confusion(levels, grades))
    low, high = (
        resampled_intervals(len(levels), lambda draw: _measures(confusion(levels[draw], grades[draw])))
        if len(levels)
        else (np.full(len(MEASURES), np.nan),) * 2
    )
    counts = [len(levels)] * 3 + [int((levels >= REFERABLE).sum()), int((levels < REFERABLE).sum())]
    return pd.DataFrame(
        {"value": values, "low": low, "high": high, "n": counts}, index=pd.Index(MEASURES, name="measure")
    )


def per_grade(levels) -> pd.Series:
    """Photographs per label grade 0-4."""
    return pd.Series(
        np.bincount(np.asarray(levels, dtype=np.int64), minlength=N_CLASSES),
        index=pd.Index(range(N_CLASSES), name="grade"),
        name="photographs",
    )


def confusion_frame(levels, grades) -> pd.DataFrame:
    """The confusion matrix as a frame: labels (rows) against grades (columns), counts."""
    grade_names = pd.Index(range(N_CLASSES))
    return pd.DataFrame(
        confusion(levels, grades, N_CLASSES), index=grade_names.rename("label"), columns=grade_names.rename("grade")
    )


def external_grades(params: Params, runs: dict[str, Run], progress: bool = False) -> dict[str, pd.DataFrame]:
    """Each run's grades of the external test set ``params.data.external`` (label -> grades); empty
    without one. The runs keep the readout fitted on their own validation split: nothing is tuned."""
    from fundus_lib.config import resolve_path

    if params.data.external is None:
        return {}
    folder = resolve_path(params.data.external)
    return {label: grade_unseen(params, run, folder, progress=progress)[0] for label, run in runs.items()}


def external_table(runs: dict[str, Run], grades: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per run: its EyePACS test kappa beside the external set's kappa, referable-DR
    sensitivity and specificity, each with its bootstrap interval over the external photographs."""
    rows = {}
    for label, graded in grades.items():
        measures = external_measures(graded["level"], graded["grade"])
        rows[label] = {
            "EyePACS test kappa": runs[label].metrics("test")["kappa"],
            "photographs": len(graded),
            **{
                name: f"{row.value:.3f} [{row.low:.3f}, {row.high:.3f}]"
                for name, row in measures.loc[["kappa", "referable_sensitivity", "referable_specificity"]].iterrows()
            },
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")
