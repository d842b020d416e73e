"""Shared fixtures: a private data folder per test session, and the real EyePACS sample."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

from fundus_lib.paths import project_root


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory):
    """Generated data, caches and runs of the tests go to a temporary folder, not ./data."""
    os.environ["FUNDUS_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    os.environ["FUNDUS_RUNS_DIR"] = str(tmp_path_factory.mktemp("runs"))
    yield


def require(module: str):
    """Import a test-only reference library: skipped where it is not installed, a failure in CI
    (where `make test` installs it), so a cross-check can never vanish silently there."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


def _real_dir() -> Path:
    return Path(os.environ.get("FUNDUS_REAL_SAMPLE", project_root().parent / "shared" / "data" / "fundus_real"))


@pytest.fixture(scope="session")
def real_sample() -> Path:
    """../shared/data/fundus_real: 503 real labelled EyePACS photographs (images/ + labels.csv).

    Present on every developer machine and in CI (where its absence is a failure); elsewhere the
    tests that need it are skipped with the reason.
    """
    folder = _real_dir()
    if not (folder / "labels.csv").is_file():
        message = f"the real EyePACS sample is missing at {folder} (set FUNDUS_REAL_SAMPLE)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def idrid_grading() -> Path:
    """../shared/data/idrid_grading: IDRiD's 516 graded photographs in IDRiD's own layout (skipped where absent)."""
    folder = Path(os.environ.get("FUNDUS_IDRID_GRADING", project_root().parent / "shared" / "data" / "idrid_grading"))
    if not (folder / "labels" / "train.csv").is_file():
        pytest.skip(f"IDRiD's grading set is missing at {folder} (set FUNDUS_IDRID_GRADING)")
    return folder


# The same examples on every run, so a property test cannot pass today and fail tomorrow.
settings.register_profile("reproducible", derandomize=True, deadline=None, database=None)
settings.load_profile("reproducible")


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless-capable Chromium (`make test` installs Debian's package); a failure in CI when absent."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    message = "no Chromium on PATH (Debian: apt-get install chromium; `make test` installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
