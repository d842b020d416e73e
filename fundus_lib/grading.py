"""Grade a folder of photographs with a stored run: the chapter-2 baseline on images it never saw.

    fundus grade params/eyepacs-mini.yaml other/images other/trainLabels.csv --out grades.csv

The photographs (Kaggle layout: ``<patient>_<left|right>.jpeg`` and a labels csv with columns
``image,level``) go through the same decode, Graham filter and crop as the run's training data,
cached at the run's image size; the run's stored model grades every usable one with the run's
readout (its validation thresholds where it has them). Nothing is trained or tuned on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fundus_lib.config import EyepacsConfig, Params, run_config
from fundus_lib.data.dataset import ImageDataset
from fundus_lib.data.pipeline import FundusData, prepare_data
from fundus_lib.metrics import N_CLASSES, confusion, scores
from fundus_lib.runs import Run, get_run
from fundus_lib.train import predict


def photographs(params: Params, images_dir: Path, labels_csv: Path, image_size: int, progress: bool = True) -> FundusData:
    """The labelled photographs of a folder, prepared like the params' data at ``image_size``
    (labelled rows without a file are counted as outside the folder, not as skips)."""
    data = params.data.model_copy(update={
        "source": "eyepacs", "image_size": image_size,
        "eyepacs": EyepacsConfig(images_dir=Path(images_dir), labels_csv=Path(labels_csv), subset=True)})
    return prepare_data(params.model_copy(update={"data": data}), progress)


def grade_photographs(run: Run, data: FundusData, batch_size: int = 128) -> pd.DataFrame:
    """One row per usable photograph: image, its label (level) and the run's grade."""
    rows = np.sort(np.concatenate([data.rows(split) for split in ("train", "valid", "test")]))  # not the skipped
    levels = data.manifest.loc[rows, "level"].to_numpy()
    probabilities = predict(run.load_model(), ImageDataset(data.cache.images, levels, rows), torch.device("cpu"),
                            batch_size, amp=False)
    return pd.DataFrame({"image": data.manifest.loc[rows, "image"].to_numpy(), "level": levels,
                         "grade": probabilities.argmax(axis=1)})


def grade_folder(params: Params, images_dir: Path, labels_csv: Path, progress: bool = True
                 ) -> tuple[pd.DataFrame, dict[str, float], pd.DataFrame]:
    """The chapter-2 baseline of ``params`` (from the store: never trained here) on a folder:
    (grades per photograph, accuracy / balanced accuracy / quadratic kappa, skipped images)."""
    config = run_config(params, params.baselines[0])
    run = get_run(params, config, train=False, progress=progress)
    data = photographs(params, images_dir, labels_csv, config.image_size, progress)
    grades = grade_photographs(run, data, params.runtime.eval_batch_size)
    return grades, scores(grades["level"], grades["grade"]), data.skipped


def confusion_frame(levels, grades) -> pd.DataFrame:
    """The confusion matrix as a frame: labels (rows) against grades (columns), counts."""
    grade_names = pd.Index(range(N_CLASSES))
    return pd.DataFrame(confusion(levels, grades, N_CLASSES), index=grade_names.rename("label"),
                        columns=grade_names.rename("grade"))
