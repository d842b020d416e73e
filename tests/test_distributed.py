"""Data-parallel training: 2 processes on CPU (gloo) under torchrun against one process.

The two processes split every batch and average their gradients, so they follow one process's
trajectory; they are not bitwise equal because BatchNorm statistics are per process (as with
the report's DataParallel). The test asserts that the two-process weights are far closer to the
one-process weights than a second one-process run with another seed is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fundus_lib.config import load_params, run_config
from fundus_lib.paths import project_root
from fundus_lib.runs import get_run

SETTINGS = {
    "train": {"epochs": 3, "augment": False, "dropout": 0.0},
    "runtime": {"loader_workers": 0},
    "baselines": [{"model": "small-cnn", "image_size": 48, "batch_size": 16}],
}


def distance(first: dict, second: dict) -> float:
    """Relative L2 distance between two state dicts (floating-point tensors)."""
    keys = [key for key, value in first.items() if value.is_floating_point()]
    difference = sum(float((first[key] - second[key]).pow(2).sum()) for key in keys)
    size = sum(float(first[key].pow(2).sum()) for key in keys)
    return (difference / size) ** 0.5


def weights(run) -> dict:
    return torch.load(Path(run.root) / "last.pt", map_location="cpu", weights_only=True)["model"]


@pytest.mark.slow
def test_two_processes_follow_one_process(tmp_path, monkeypatch):
    params_file = tmp_path / "ddp.yaml"
    raw = yaml.safe_load((project_root() / "params" / "smoke.yaml").read_text())
    raw.update(SETTINGS)
    params_file.write_text(yaml.safe_dump(raw))
    params = load_params(params_file)
    config = run_config(params, params.baselines[0])

    environment = {**os.environ, "FUNDUS_RUNS_DIR": str(tmp_path / "ddp-runs")}
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "fundus_lib.cli",
            "train",
            str(params_file),
            "--only",
            "02 baselines",
            "--quiet",
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    monkeypatch.setenv("FUNDUS_RUNS_DIR", str(tmp_path / "ddp-runs"))
    two = get_run(params, config, train=False)
    assert two.record["runtime"]["processes"] == 2
    monkeypatch.setenv("FUNDUS_RUNS_DIR", str(tmp_path / "single-runs"))
    one = get_run(params, config, progress=False)
    other_seed = get_run(params, config.model_copy(update={"seed": config.seed + 1}), progress=False)

    assert one.key == two.key  # the same run, trained two ways
    close, far = distance(weights(two), weights(one)), distance(weights(other_seed), weights(one))
    print(f"relative weight distance: two processes {close:.5f}, another seed {far:.5f}")
    assert close < 0.15 * far, f"two processes {close:.4f} vs another seed {far:.4f}"
