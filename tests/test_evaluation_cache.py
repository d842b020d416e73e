"""The evaluation cache: an unchanged evaluation is read back, one whose code version was bumped is
recomputed, version 1 keeps the digests of stores filled before versions existed, and an
evaluation without a version is refused."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pandas as pd
import pytest

from fundus_lib.evaluation.cache import CODE_VERSIONS, cache_key, cached


def test_a_bumped_code_version_recomputes_and_an_unchanged_one_is_reused(tmp_path):
    run, settings, calls = SimpleNamespace(root=tmp_path), {"eps_255": [0, 1], "data": "abc"}, []

    def compute():
        calls.append(1)
        return pd.DataFrame({"value": [len(calls)]})

    first = cached(run, "pgd-outcomes", settings, compute)
    again = cached(run, "pgd-outcomes", settings, compute)
    assert len(calls) == 1 and again.equals(first)
    bumped = {**CODE_VERSIONS, "pgd-outcomes": 2}
    fixed = cached(run, "pgd-outcomes", settings, compute, versions=bumped)
    assert len(calls) == 2 and fixed["value"].tolist() == [2]
    assert cached(run, "pgd-outcomes", settings, compute, versions=bumped)["value"].tolist() == [2]
    assert cached(run, "pgd-outcomes", settings, compute)["value"].tolist() == [1] and len(calls) == 2
    assert len(list((tmp_path / "evaluations").glob("pgd-outcomes-*.csv"))) == 2


def test_version_one_keeps_the_digests_of_stores_filled_before_versions():
    settings = {"n_images": 24, "seed": 0}
    before = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert CODE_VERSIONS["attribution"] == 1 and cache_key("attribution", settings) == before
    assert cache_key("attribution", settings, {"attribution": 2}) != before


def test_an_evaluation_without_a_code_version_is_refused(tmp_path):
    with pytest.raises(KeyError, match="no code version; add it to evaluation.cache.CODE_VERSIONS"):
        cached(SimpleNamespace(root=tmp_path), "new-evaluation", {}, pd.DataFrame)


def test_a_narrowed_key_takes_over_the_table_of_its_legacy_key(tmp_path):
    run, calls = SimpleNamespace(root=tmp_path), []

    def compute():
        calls.append(1)
        return pd.DataFrame({"value": [0.125 * len(calls)]})

    full = {"n_images": 24, "verdict_images": 200, "seed": 0}
    stored = cached(run, "attribution", full, compute)
    narrow = {"n_images": 24, "seed": 0}
    assert cached(run, "attribution", narrow, compute, legacy=full).equals(stored) and len(calls) == 1
    changed = {**full, "verdict_images": 100}  # a setting the evaluation does not read changed
    assert cached(run, "attribution", narrow, compute, legacy=changed).equals(stored) and len(calls) == 1
    assert cached(run, "attribution", {"n_images": 40, "seed": 0}, compute, legacy=changed)["value"].tolist() == [0.25]


def test_attribution_keys_hold_only_the_settings_an_evaluation_reads(tmp_path):
    from fundus_lib.config import AttributionConfig
    from fundus_lib.evaluation.attribution import cached_attribution

    run, calls = SimpleNamespace(root=tmp_path), []

    def compute():
        calls.append(1)
        return pd.DataFrame({"value": [len(calls)]})

    settings = AttributionConfig()
    for changed in (settings, settings.model_copy(update={"verdict_images": 7, "sanity_cascade": "block"})):
        cached_attribution(run, "attribution", changed, {"n_images"}, {"data": "abc"}, compute)
    assert len(calls) == 1
    for changed in ({"n_images": 3}, {"ig_steps": 20}):
        cached_attribution(
            run, "attribution", settings.model_copy(update=changed), {"n_images"}, {"data": "abc"}, compute
        )
    assert len(calls) == 3


def test_robustness_keys_hold_only_the_settings_an_evaluation_reads(tmp_path):
    from fundus_lib.config import RobustnessConfig
    from fundus_lib.evaluation.robustness import READS, _cached

    assert set().union(*READS.values()) <= set(RobustnessConfig.model_fields)
    run, data, calls = SimpleNamespace(root=tmp_path), SimpleNamespace(manifest_hash="abc"), []

    def compute():
        calls.append(1)
        return pd.DataFrame({"value": [len(calls)]})

    settings = RobustnessConfig()
    for changed in (settings, settings.model_copy(update={"square_queries": 500, "clinical_per_grade": 3})):
        _cached(run, "robustness-white-box", changed, data, compute)
    assert len(calls) == 1  # Square's budget and the clinical sample are not the white-box attacks' settings
    _cached(run, "robustness-square", settings.model_copy(update={"square_queries": 500}), data, compute)
    _cached(run, "robustness-white-box", settings.model_copy(update={"steps": 10}), data, compute)
    assert len(calls) == 3


def test_a_robustness_table_under_the_key_of_every_setting_is_taken_over(tmp_path):
    from fundus_lib.config import RobustnessConfig
    from fundus_lib.evaluation.robustness import LIBRARY, _cached

    run, data, settings = SimpleNamespace(root=tmp_path), SimpleNamespace(manifest_hash="abc"), RobustnessConfig()
    every = {**settings.model_dump(mode="json"), "data": "abc", "library": LIBRARY}
    stored = cached(run, "robustness-square", every, lambda: pd.DataFrame({"value": [0.5]}))
    assert _cached(run, "robustness-square", settings, data, pd.DataFrame).equals(stored)
