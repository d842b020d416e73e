"""One cache for every evaluation of a finished run, keyed by its settings, its data and its code.

An evaluation's table is stored once in the run's folder, ``<run>/evaluations/<name>-<digest>.csv``,
so re-rendering a chapter (or a store copied from a GPU machine) repeats no attack and no
attribution. The digest hashes the evaluation's settings (sample sizes, eps, seeds, the data's
manifest hash) and its code version from ``CODE_VERSIONS``: when a fix changes what an
evaluation computes, bump its number there, and every store recomputes it at its next use while
the other evaluations are read back. Version 1 is the code the stores were filled with before
versions existed and adds nothing to the digest, so their results stay valid.

Example::

    table = cached(run, "pgd-outcomes", {"eps_255": [0, 1, 2], "data": data.manifest_hash}, compute)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Set

import pandas as pd
from pydantic import BaseModel

from fundus_lib.files import write_atomic
from fundus_lib.runs import Run

#: The code version of each evaluation: bump one when a change to its code changes its results.
CODE_VERSIONS = {
    "pgd-outcomes": 1,
    "external-pgd-outcomes": 1,
    "decision": 1,
    "corrupted-test-predictions": 1,
    "robustness-white-box": 1,
    "robustness-square": 1,
    "robustness-transfer": 1,
    "robustness-ladder": 1,
    "robustness-report-code": 1,
    "robustness-clinical": 1,
    "randomisation": 1,
    "label-randomisation": 1,
    "verdict-relevance-mass": 1,
    "attribution": 1,
    "ig-baselines": 1,
    "lesion-types": 1,
    "cue-reliance": 1,
    "cue-attribution": 1,
}


def cache_key(name: str, settings: dict, versions: dict[str, int] = CODE_VERSIONS) -> str:
    """The digest of an evaluation's settings and code version (12 hex characters)."""
    if name not in versions:
        raise KeyError(f"the evaluation {name!r} has no code version; add it to evaluation.cache.CODE_VERSIONS")
    keyed = settings if versions[name] == 1 else {**settings, "code_version": versions[name]}
    return hashlib.sha1(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached(
    run: Run,
    name: str,
    settings: dict,
    compute: Callable[[], pd.DataFrame],
    versions: dict[str, int] = CODE_VERSIONS,
    legacy: dict | None = None,
) -> pd.DataFrame:
    """``compute()``'s table, stored once per run, settings and code version in ``<run>/evaluations/``.

    legacy: the settings an older key was made of (e.g. every setting of a section, before the key
    was narrowed to those the evaluation reads): a table stored under it is copied to the new key
    instead of being computed again, so narrowing a key costs a store nothing."""
    folder = run.root / "evaluations"
    path = folder / f"{name}-{cache_key(name, settings, versions)}.csv"
    if path.exists():
        return pd.read_csv(path)
    older = None if legacy is None else folder / f"{name}-{cache_key(name, legacy, versions)}.csv"
    if older is not None and older.exists():
        write_atomic(path, older.read_text())
        return pd.read_csv(path)
    table = compute()
    folder.mkdir(exist_ok=True)
    write_atomic(path, table.to_csv(index=False))
    return table


def cached_reading(
    run: Run, name: str, section: BaseModel, reads: Set[str], extra: dict, compute: Callable[[], pd.DataFrame]
) -> pd.DataFrame:
    """``cached`` keyed by the fields ``reads`` of a params ``section`` that the evaluation reads, plus
    ``extra``: changing another field recomputes nothing. A table stored under the older key of every
    field of the section is taken over, so narrowing a key costs a store nothing."""
    key = {**section.model_dump(mode="json", include=set(reads)), **extra}
    return cached(run, name, key, compute, legacy={**section.model_dump(mode="json"), **extra})
