"""The patient-level, stratified, seeded split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fundus_lib.config import SplitConfig
from fundus_lib.data.split import assign_split


def manifest(n_patients=2000, seed=0):
    rng = np.random.default_rng(seed)
    grades = rng.choice(5, size=n_patients, p=[0.735, 0.069, 0.151, 0.025, 0.02])
    rows = []
    for patient, grade in enumerate(grades):
        other = int(np.clip(grade + rng.choice([-1, 0, 0, 0, 1]), 0, 4))
        rows += [
            {"patient": str(patient), "side": "left", "level": int(grade), "status": "ok"},
            {"patient": str(patient), "side": "right", "level": other, "status": "ok"},
        ]
    return pd.DataFrame(rows)


def test_both_eyes_of_a_patient_share_the_split():
    frame = manifest()
    frame["split"] = assign_split(frame, SplitConfig())
    assert frame.groupby("patient")["split"].nunique().max() == 1


def test_shares_and_stratification():
    frame = manifest()
    config = SplitConfig(valid=0.2, test=0.1)
    frame["split"] = assign_split(frame, config)
    patients = frame.groupby("patient").agg(split=("split", "first"), grade=("level", "max"))
    shares = patients["split"].value_counts(normalize=True)
    assert shares["valid"] == pytest.approx(0.2, abs=0.01) and shares["test"] == pytest.approx(0.1, abs=0.01)
    for grade, group in patients.groupby("grade"):
        assert (group["split"] == "test").mean() == pytest.approx(0.1, abs=1.5 / len(group) + 0.01), grade


def test_seeded_and_seed_sensitive():
    frame = manifest()
    first = assign_split(frame, SplitConfig(seed=3))
    assert first.equals(assign_split(frame, SplitConfig(seed=3)))
    assert not first.equals(assign_split(frame, SplitConfig(seed=4)))


def test_order_of_rows_does_not_matter():
    frame = manifest(300)
    shuffled = frame.sample(frac=1, random_state=1)
    assert assign_split(frame, SplitConfig()).equals(assign_split(shuffled, SplitConfig()).sort_index())


def test_skipped_rows_get_no_split_and_do_not_count():
    frame = manifest(200)
    frame.loc[[0, 5, 9], "status"] = "skipped"
    split = assign_split(frame, SplitConfig())
    assert (split[[0, 5, 9]] == "").all()
    assert (split.drop([0, 5, 9]) != "").all()


def test_test_share_zero_gives_no_test_split():
    frame = manifest(200)
    assert "test" not in set(assign_split(frame, SplitConfig(valid=0.3, test=0.0)))
