"""Where the project keeps generated data, caches and runs (never inside git).

Defaults live under the project root (the folder holding ``pyproject.toml``); the environment
variables ``FUNDUS_DATA_DIR`` and ``FUNDUS_RUNS_DIR`` move them elsewhere, e.g. to a scratch disk.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The nearest folder at or above the working directory that holds ``pyproject.toml``."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "fundus_lib").is_dir():
            return folder
    return here


def data_dir() -> Path:
    """Generated datasets and preprocessed caches: ``$FUNDUS_DATA_DIR`` or ``<root>/data``."""
    return Path(os.environ.get("FUNDUS_DATA_DIR", project_root() / "data")).expanduser().resolve()


def runs_dir() -> Path:
    """The run store: ``$FUNDUS_RUNS_DIR`` or ``<root>/runs``."""
    return Path(os.environ.get("FUNDUS_RUNS_DIR", project_root() / "runs")).expanduser().resolve()
