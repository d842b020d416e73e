"""The run store: finished training runs, keyed by their configuration and their data.

A run's key is a hash of its :class:`~fundus_lib.config.RunConfig` and the data manifest's hash,
so asking for a run that exists returns it without training, a half-finished one resumes from
its checkpoint, and any change of settings or data makes a new run. A GPU machine can fill the
store (``fundus train``) and any machine can render the book from it.

A run folder (``runs/<key>/``) holds ``config.json``, the checkpoints of :mod:`fundus_lib.training.loop`,
``predictions.csv`` (per image of the valid and test splits: label, prediction, probabilities)
and, written last, ``record.json``: history, best epoch, metrics and confusion matrices of the
best epoch's weights on valid and test, training time, the data and the machine.

Example::

    run = get_run(params, run_config(params, params.baselines[0]))
    run.metrics("test")["kappa"]
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from fundus_lib.config import Params, RunConfig, RuntimeConfig, resolve_path
from fundus_lib.data.dataset import FundusDataset
from fundus_lib.data.pipeline import FundusData, prepare_data
from fundus_lib.errors import UserError
from fundus_lib.files import write_atomic
from fundus_lib.metrics import confusion
from fundus_lib.models import FundusNet, inference_model
from fundus_lib.paths import runs_dir
from fundus_lib.report.provenance import hardware
from fundus_lib.training.loop import (
    BEST_WEIGHTS,
    CHECKPOINT,
    Processes,
    build_model,
    evaluate,
    fit,
    load_checkpoint,
    load_weights,
    predict,
    resolve_device,
    start_processes,
    uses_cpu_bfloat16,
)
from fundus_lib.training.readout import ThresholdReadout, expected_grade, fit_thresholds, threshold_grades
from fundus_lib.weights import pretrained_weights_file
from fundus_lib.workers import run_threads, torch_threads

#: Bump when a change to training or evaluation makes earlier runs incomparable.
RUN_FORMAT = 1
RECORD = "record.json"


class MissingRun(UserError, LookupError):
    """A run is not in the store and training was not allowed."""


class RunStoreError(UserError, RuntimeError):
    """A run folder is broken (an unreadable record, missing weights) or the store cannot be written."""


def _read_json(path: Path) -> dict:
    """A json file of a run folder; an unreadable one is a RunStoreError naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunStoreError(
            f"{path} is unreadable or corrupt ({exc}): delete the run folder {path.parent} to train the run again"
        ) from None


def run_key(config: RunConfig, manifest_hash: str, weights_sha1: str | None = None) -> str:
    """16 hex digits identifying a run: its configuration, its data, the store's format and, for a
    pretrained run, the content hash of its ImageNet weight file (another file is another run)."""
    content = {"format": RUN_FORMAT, "config": config.identity(), "data": manifest_hash}
    if weights_sha1 is not None:
        content["weights"] = weights_sha1
    return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=16)
def _file_sha1(path: Path, size: int, mtime_ns: int) -> str:
    """sha1 of a file, hashed again when its size or modification time changes."""
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha1(config: RunConfig, runtime: RuntimeConfig) -> str | None:
    """The content hash of the ImageNet weight file a pretrained run starts from (None otherwise)."""
    if not config.pretrained:
        return None
    path = pretrained_weights_file(config.model, resolve_path(runtime.weights_dir))
    stat = path.stat()
    return _file_sha1(path, stat.st_size, stat.st_mtime_ns)


@dataclass
class Run:
    """A finished run, read from its folder."""

    root: Path
    config: RunConfig
    record: dict

    @classmethod
    def load(cls, root: str | Path) -> Run:
        root = Path(root)
        record = _read_json(root / RECORD)
        if not (root / BEST_WEIGHTS).is_file():
            raise RunStoreError(
                f"{root / BEST_WEIGHTS} is missing although {RECORD} says the run finished: "
                f"delete the run folder {root} to train the run again"
            )
        if record.get("key") != root.name:  # e.g. another run's record.json copied in
            raise RunStoreError(
                f"{root / RECORD} is the record of run {record.get('key')!r}, not of this folder's run "
                f"{root.name!r} (copied from another run folder?): it is not reported as this run; "
                f"delete the run folder {root} to train the run again"
            )
        try:
            return cls(root, RunConfig.model_validate(record["config"]), record)
        except (KeyError, TypeError, ValueError) as exc:
            raise RunStoreError(
                f"{root / RECORD} is not a record of this project ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}): delete the run folder {root} to train the run again"
            ) from None

    @property
    def key(self) -> str:
        return self.root.name

    @property
    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.record["history"]).set_index("epoch")

    def metrics(self, split: str = "test") -> dict[str, float]:
        return self.record["metrics"][split]

    def confusion(self, split: str = "test") -> np.ndarray:
        return np.array(self.record["confusion"][split])

    @property
    def train_seconds(self) -> float:
        """Wall time of the epochs run (training and validation)."""
        return self.record["train_seconds"]

    @property
    def total_seconds(self) -> float:
        """Training time plus data generation (SMOTE), as the report's Table 5 counts it."""
        return self.record["train_seconds"] + self.record["preparation_seconds"]

    def predictions(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "predictions.csv", dtype={"patient": str})

    def load_model(self, device: str | torch.device = "cpu", fold: bool = True) -> FundusNet | ThresholdReadout:
        """The best epoch's model for inference (eval mode, ``inference_model``; ``fold=False``: the
        model as trained, BatchNorm layers kept, for what needs train mode); with the threshold
        readout, wrapped so that its output's argmax is the grade the run's tables report."""
        model = build_model(self.config.model_copy(update={"pretrained": False}))
        load_weights(model, self.root / BEST_WEIGHTS)
        if fold:
            model = inference_model(model)
        if self.record.get("thresholds"):
            model = ThresholdReadout(model, self.record["thresholds"])
        return model.to(device).eval()


def run_data(
    params: Params, config: RunConfig, progress: bool = True, processes: Processes = Processes()
) -> FundusData:
    """The data of a run: the params' data section at the run's image size.

    Under torchrun the first process generates and caches; the others wait, then open the cache.
    """
    data_config = params.data.model_copy(update={"image_size": config.image_size})
    if not processes.main:
        dist.barrier()
    data = prepare_data(params.model_copy(update={"data": data_config}), progress and processes.main)
    if processes.main and processes.world > 1:
        dist.barrier()
    return data


def _finish(config: RunConfig, data: FundusData, root: Path, params: Params) -> None:
    """Evaluate the best weights on valid and test; write predictions.csv and, last, record.json."""
    device = resolve_device(params.runtime.device)
    model = build_model(config.model_copy(update={"pretrained": False}))
    load_weights(model, root / BEST_WEIGHTS)
    model = inference_model(model).to(device)
    checkpoint = load_checkpoint(root / CHECKPOINT)
    metrics, matrices, tables = {}, {}, []
    datasets = {split: FundusDataset(data, split) for split in ("valid", "test")}
    outputs = {
        split: predict(
            model, dataset, device, params.runtime.eval_batch_size, params.runtime.loader_workers, params.runtime.amp
        )
        for split, dataset in datasets.items()
    }
    thresholds = (
        fit_thresholds(expected_grade(outputs["valid"]), datasets["valid"].labels).tolist()
        if config.readout == "thresholds"
        else None
    )
    for split, dataset in datasets.items():
        probabilities = outputs[split]
        grades = (
            threshold_grades(expected_grade(probabilities), thresholds) if thresholds else probabilities.argmax(axis=1)
        )
        metrics[split] = evaluate(probabilities, dataset.labels, grades)
        matrices[split] = confusion(dataset.labels, grades).tolist() if len(dataset) else []
        rows = data.manifest.loc[dataset.rows, ["image", "patient", "side", "level"]].assign(split=split)
        rows["prediction"] = grades if len(dataset) else []
        for grade in range(probabilities.shape[1]):
            rows[f"p{grade}"] = probabilities[:, grade]
        tables.append(rows)
    write_atomic(root / "predictions.csv", pd.concat(tables).to_csv(index=False))
    record = {
        "key": root.name,
        "format": RUN_FORMAT,
        "config": config.model_dump(mode="json"),
        "data": {
            "manifest_hash": data.manifest_hash,
            "source": data.config.source,
            "cache": data.cache.root.name,
            "split_sizes": {split: len(data.rows(split)) for split in ("train", "valid", "test")},
        },
        "history": checkpoint["history"],
        "best_epoch": checkpoint["best_epoch"],
        "epochs_run": checkpoint["epoch"],
        "train_seconds": checkpoint["train_seconds"],
        "preparation_seconds": checkpoint["preparation_seconds"],
        "metrics": metrics,
        "confusion": matrices,
        "thresholds": thresholds,
        "runtime": {
            "device": str(device),
            "processes": int(dist.get_world_size()) if dist.is_initialized() else 1,
            "amp": params.runtime.amp,
            "cpu_bfloat16": uses_cpu_bfloat16(params.runtime),
            "micro_batch_size": params.runtime.micro_batch_size,
            **hardware(),
        },
        "finished_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_atomic(root / RECORD, json.dumps(record, indent=1), durable=True)


def get_run(params: Params, config: RunConfig, train: bool = True, progress: bool = True) -> Run:
    """The finished run of ``config`` on the params' data: from the store, else trained now.

    train=False raises MissingRun instead of training (to render a book from a filled store).
    Under torchrun every process trains; the first one evaluates and writes the record. A run
    that starts from another (``config.init_from``) gets that run first.
    """
    processes = start_processes(resolve_device(params.runtime.device))
    data = run_data(params, config, progress, processes)
    root = run_folder(params, config, data)
    if (root / RECORD).exists():
        return Run.load(root)
    if not train:
        raise MissingRun(
            f"run {root.name} ({config.model}, {config.image_size} px) is not in the store {runs_dir()}; "
            "train it with `fundus train` or allow training"
        )
    initial_weights = (
        get_run(params, config.init_from, train, progress).root / BEST_WEIGHTS if config.init_from else None
    )
    if processes.main:
        try:
            root.mkdir(parents=True, exist_ok=True)
            write_atomic(root / "config.json", json.dumps(config.model_dump(mode="json"), indent=1))
        except OSError as exc:
            raise RunStoreError(
                f"cannot write to the run store {root.parent} ({exc.strerror}): point FUNDUS_RUNS_DIR "
                "at a writable folder, or render from the store with --from-store"
            ) from None
    with torch_threads(run_threads(params.runtime)):  # alone or side by side: the same numbers
        fit(config, data, root, params.runtime, progress, initial_weights)
        if processes.main:
            _finish(config, data, root, params)
    if processes.world > 1:
        dist.barrier()
    return Run.load(root)


def run_folder(params: Params, config: RunConfig, data: FundusData) -> Path:
    """The store folder of ``config`` on ``data`` (it holds a record once the run has finished)."""
    return runs_dir() / run_key(config, data.manifest_hash, weights_sha1(config, params.runtime))


def list_runs(root: str | Path | None = None) -> pd.DataFrame:
    """One row per run folder in the store: key, model, size, epochs, status, test metrics, time.

    A broken folder (an unreadable config or record, missing weights) is listed with status
    ``broken: <what is wrong>``; the others are listed as usual.
    """
    rows = []
    for folder in sorted(Path(root or runs_dir()).glob("*/config.json")):
        row = {"key": folder.parent.name}
        try:
            config = _read_json(folder)
            row.update(model=config["model"], image_size=config["image_size"], epochs=config["epochs"])
            record = Run.load(folder.parent).record if (folder.parent / RECORD).exists() else None
        except (RunStoreError, KeyError, TypeError) as exc:
            rows.append({**row, "status": f"broken: {exc}"})
            continue
        test = record["metrics"]["test"] if record else {}
        rows.append(
            {
                **row,
                "status": "finished" if record else "unfinished",
                "test_kappa": test.get("kappa"),
                "test_balanced_accuracy": test.get("balanced_accuracy"),
                "train_minutes": record["train_seconds"] / 60 if record else None,
            }
        )
    return pd.DataFrame(rows)
