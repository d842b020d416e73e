"""Patient-level, grade-stratified, seeded train / valid / test split.

Both eyes of a patient always land in the same split (the report split per image, so a
patient's two eyes, whose grades are strongly correlated, could sit on both sides). Patients
are stratified by their worse eye's grade; within each grade they are shuffled with the seed
and cut into test, valid and train by the configured shares.

Example::

    manifest["split"] = assign_split(manifest, SplitConfig(valid=0.15, test=0.15, seed=0))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fundus_lib.config import SplitConfig

SPLITS = ("train", "valid", "test")


def assign_split(manifest: pd.DataFrame, config: SplitConfig) -> pd.Series:
    """Split name per manifest row ("train", "valid", "test"; "" for rows not usable).

    manifest: needs columns patient, level and status ("ok" rows are split).
    """
    usable = manifest["status"] == "ok"
    patient_grade = manifest[usable].groupby("patient")["level"].max()
    rng = np.random.default_rng(config.seed)
    split_of_patient: dict[str, str] = {}
    for grade in sorted(patient_grade.unique()):
        patients = np.array(sorted(patient_grade.index[patient_grade == grade]))
        rng.shuffle(patients)
        n_test = round(len(patients) * config.test)
        n_valid = round(len(patients) * config.valid)
        for position, patient in enumerate(patients):
            split_of_patient[patient] = (
                "test" if position < n_test else "valid" if position < n_test + n_valid else "train"
            )
    return manifest["patient"].map(split_of_patient).where(usable, "").fillna("").rename("split")
