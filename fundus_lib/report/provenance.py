"""The provenance block at the end of every chapter: what produced these numbers.

Example::

    provenance(params_file, params, data)   # a two-column frame: item, value
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from fundus_lib.config import Params
from fundus_lib.paths import project_root

PACKAGES = (
    "fundus-robustness",
    "torch",
    "torchvision",
    "numpy",
    "opencv-python-headless",
    "pillow",
    "scikit-learn",
    "pandas",
    "captum",
    "efficientnet-pytorch",
    "papermill",
    "jupyter-book",
)


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=project_root(), capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() or "unknown"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _accelerators() -> str:
    import torch

    if not torch.cuda.is_available():
        return "none (CPU)"
    return ", ".join(torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count()))


def hardware() -> dict[str, str]:
    """The machine: CPU model and count, GPUs, OS."""
    return {
        "cpu": f"{_cpu_model()} x {os.cpu_count()}",
        "gpu": _accelerators(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def provenance(params_file: str | Path, params: Params, data=None, runs: dict | None = None) -> pd.DataFrame:
    """A two-column frame (item, value): params, data identity, runs, code version, packages, hardware, time.

    data: a FundusData; runs: label -> Run (their store keys, data hashes and training devices).
    """
    rows = {
        "params file": str(params_file),
        "params name": params.name,
        "seed": params.seed,
        "code version (git)": git_commit(),
    }
    if data is not None:
        rows.update(
            {"data source": params.data.source, "data manifest hash": data.manifest_hash, "cache": data.cache.root.name}
        )
    for label, run in (runs or {}).items():
        rows[f"run {label}"] = (
            f"{run.key} (data {run.record['data']['manifest_hash'][:12]}, trained on {run.record['runtime']['device']})"
        )
    rows.update(hardware())
    rows.update({f"package {name}": _package_version(name) for name in PACKAGES})
    rows["executed at"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return pd.DataFrame({"item": list(rows), "value": [str(value) for value in rows.values()]}).set_index("item")
