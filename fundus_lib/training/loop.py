"""The training loop every chapter uses.

``fit`` trains one run into a folder: per-epoch validation, best-epoch selection on a chosen
validation metric, an atomic checkpoint after every epoch (an interrupted run resumes from it and
ends with the same weights as an uninterrupted one), early stopping, mixed precision and
channels-last memory format (faster on CUDA and on CPUs with oneDNN), and data-parallel training
when started by ``torchrun``.

Determinism: everything random in epoch e (the batch order, augmentation in the loader workers,
dropout) is seeded from (seed, e) at the start of the epoch, so resuming at an epoch boundary
replays the same epochs. Batches are cut from one permutation per epoch; under torchrun each
process takes its slice of every batch, so the processes together see the same batches as one
process would (BatchNorm statistics are per process, as with the report's DataParallel).

Files in the run folder: ``last.pt`` (checkpoint), ``best.pt`` (the best epoch's weights).

Example::

    fit(run_config(params, params.baselines[0]), data, Path("runs/x"), params.runtime)
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler
from tqdm import tqdm

from fundus_lib.attacks.adversarial_training import adversarial_loss
from fundus_lib.config import RunConfig, RuntimeConfig, resolve_path
from fundus_lib.data.augment import CorruptThenGraham, RandomCorruption, build_augmentation
from fundus_lib.data.dataset import FundusDataset, ImageDataset, permuted_labels
from fundus_lib.data.pipeline import FundusData, data_variant
from fundus_lib.errors import UserError
from fundus_lib.files import require_free_space, sweep_temporaries, write_with
from fundus_lib.metrics import scores
from fundus_lib.models import FundusNet, create_model, early_layers, inference_model
from fundus_lib.training.losses import build_loss
from fundus_lib.training.sampling import balanced_draw, oversample, smote_images
from fundus_lib.weights import pretrained_weights_file

CHECKPOINT = "last.pt"
BEST_WEIGHTS = "best.pt"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, not one this project wrote, or of another run, model or
    number of classes."""


class BatchSizeError(UserError, ValueError):
    """A batch is larger than the training set."""


# --- devices and processes ----------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the process's CUDA device when there is one (LOCAL_RANK under torchrun), else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


@dataclass(frozen=True)
class Processes:
    """This process's place among the data-parallel processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_processes(device: torch.device) -> Processes:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on CUDA, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return Processes()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size())


# --- seeding and batches ------------------------------------------------------------------------


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in one epoch."""
    return seed * 1_000_003 + epoch


class EpochBatches(Sampler[list[int]]):
    """Batches of one epoch: the dataset ``positions`` (e.g. all of them, or an oversampled list)
    in a seeded random order, cut into full batches of ``batch_size``; process ``rank`` of
    ``world`` gets its contiguous slice of each batch (slices differ by at most one image when
    the batch does not divide evenly)."""

    def __init__(self, positions, batch_size: int, seed: int, processes: Processes = Processes()):
        positions = np.asarray(positions)
        if batch_size < processes.world:
            raise ValueError(f"batch size {batch_size} is smaller than the {processes.world} processes")
        if len(positions) < batch_size:
            raise BatchSizeError(
                f"the training set has {len(positions)} images, fewer than one batch of {batch_size}: "
                "lower this row's batch_size in the params file, or use more data"
            )
        self.positions, self.batch_size, self.seed, self.processes = positions, batch_size, seed, processes

    def __len__(self) -> int:
        return len(self.positions) // self.batch_size

    def __iter__(self):
        shuffle = torch.randperm(len(self.positions), generator=torch.Generator().manual_seed(self.seed)).numpy()
        order = self.positions[shuffle].tolist()
        rank, world = self.processes.rank, self.processes.world
        start, stop = rank * self.batch_size // world, (rank + 1) * self.batch_size // world
        for first in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[first + start : first + stop]


# --- model, loss, optimiser ------------------------------------------------------------------------


def build_model(config: RunConfig, weights_dir: Path | None = None, num_classes: int = 5) -> FundusNet:
    """The run's model; with ``config.pretrained``, ImageNet weights from ``weights_dir`` (or torch's cache)."""
    weights = pretrained_weights_file(config.model, weights_dir or Path("weights")) if config.pretrained else None
    return create_model(config.model, num_classes=num_classes, dropout=config.dropout, weights=weights)


def build_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def build_schedule(config: RunConfig, optimizer: torch.optim.Optimizer):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


# --- checkpoints -------------------------------------------------------------------------------------


def _tensor_bytes(value) -> int:
    """Bytes of the tensors in a (nested) state dict: about the size of its checkpoint file."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(map(_tensor_bytes, value.values()))
    if isinstance(value, (list, tuple)):
        return sum(map(_tensor_bytes, value))
    return 0


def save_atomic(state: dict, path: Path) -> None:
    """Save a checkpoint durably (fsynced before its rename) after checking the disk has room for it."""
    require_free_space(path.parent, _tensor_bytes(state), f"the checkpoint {path.name}")
    write_with(path, lambda handle: torch.save(state, handle), durable=True)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint or weights file written by this project, read with ``weights_only`` (no code in a
    file ever runs). A missing, empty, truncated or corrupt file, or one that holds other Python
    objects, is a CheckpointError that names it and says what to do."""
    path = Path(path)
    remedy = f"delete the run folder {path.parent} to train the run again"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {remedy}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} is not a checkpoint this project wrote (the safe loader refused it; nothing in "
            f"it ran): {remedy}, or replace the file by one fundus wrote"
        ) from None
    except Exception as exc:  # torch reports a cut or garbled file as RuntimeError, EOFError, KeyError, ...
        reason = str(exc).split(".")[0] or type(exc).__name__
        raise CheckpointError(f"{path} is empty, truncated or corrupt ({reason}): {remedy}") from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not a checkpoint this project wrote (it holds a {type(state).__name__}): {remedy}"
        )
    return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict saved by this project (``weights_only``); a mismatch is a clear error."""
    state = load_checkpoint(path)
    state = state.get("model", state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(key for key in set(own) & set(state) if own[key].shape != state[key].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} is not a checkpoint of this model ({getattr(model, 'name', type(model).__name__)}) or of "
            f"this number of classes: missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
        )
    model.load_state_dict(state)


# --- evaluation ------------------------------------------------------------------------------------------


@torch.no_grad()
def predict(
    model: nn.Module, dataset, device: torch.device, batch_size: int = 128, workers: int = 0, amp: bool = True
) -> np.ndarray:
    """Class probabilities float32 (N, classes) of a dataset of (image, label) items, in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda" else nullcontext()
    chunks = []
    for images, *_ in loader:
        with autocast:
            logits = model(images.to(device, non_blocking=True))
        chunks.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, 5), np.float32)


def evaluate(probabilities: np.ndarray, labels: np.ndarray, predictions: np.ndarray | None = None) -> dict[str, float]:
    """The report's metrics of ``predictions`` (default: the argmax of probabilities (N, C)) plus the
    mean cross-entropy of the probabilities against labels."""
    predictions = probabilities.argmax(axis=1) if predictions is None else predictions
    result = scores(labels, predictions, probabilities.shape[1])
    picked = probabilities[np.arange(len(labels)), labels]
    result["loss"] = float(-np.log(np.clip(picked, 1e-12, 1)).mean()) if len(labels) else float("nan")
    return result


# --- the loop ----------------------------------------------------------------------------------------------


def _is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric == "loss" else value > best


def _batch_loss(trainable: nn.Module, model: nn.Module, images, labels, loss_fn, config: RunConfig) -> torch.Tensor:
    """The batch's training loss: plain, or the report's clean + PGD mixture (``config.adversarial``)."""
    scheme = config.adversarial
    if scheme is None:
        return loss_fn(trainable(images), labels)
    alpha = scheme.alpha_255 / 255 if scheme.alpha_255 else None
    return adversarial_loss(
        trainable, images, labels, loss_fn, scheme.eps_255 / 255, alpha, scheme.steps, scheme.weight, attack_model=model
    )


def training_autocast(device: torch.device, runtime: RuntimeConfig):
    """Mixed precision of a training step: float16 on CUDA (``runtime.amp``), bfloat16 on the CPU
    (``runtime.cpu_bfloat16``), else none."""
    if device.type == "cuda" and runtime.amp:
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cpu" and uses_cpu_bfloat16(runtime):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def uses_cpu_bfloat16(runtime: RuntimeConfig, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether CPU training steps run under bfloat16 autocast: ``runtime.cpu_bfloat16`` (``native_bfloat16``)."""
    return native_bfloat16(runtime.cpu_bfloat16, cpuinfo)


def native_bfloat16(setting: bool | str, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """A bfloat16 setting resolved: ``auto`` means the CPU has native bfloat16 arithmetic (the
    ``amx_bf16`` or ``avx512_bf16`` flag; elsewhere bfloat16 is emulated and slower than float32)."""
    if setting != "auto":
        return bool(setting)
    try:
        flags = set(cpuinfo.read_text(errors="replace").split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def _train_epoch(
    trainable, model, loader, loss_fn, optimizer, scaler, device, runtime, bar, config: RunConfig, world: int
) -> float:
    """One pass over the loader. Under torchrun each process's mean loss is weighted by its share
    of the batch, so the averaged gradients are those of the whole batch's mean loss; with
    ``runtime.micro_batch_size`` each part's mean loss is weighted by its share in the same way."""
    trainable.train()
    total, count = 0.0, 0
    autocast = training_autocast(device, runtime)
    memory = torch.channels_last if runtime.channels_last else torch.contiguous_format
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=memory)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        part_size = runtime.micro_batch_size or len(labels)
        parts = list(zip(images.split(part_size), labels.split(part_size)))
        for number, (part_images, part_labels) in enumerate(parts, start=1):
            # Under torchrun, gradients are averaged across processes once, after the last part.
            synchronised = nullcontext() if world == 1 or number == len(parts) else trainable.no_sync()
            with synchronised:
                with autocast:
                    loss = _batch_loss(trainable, model, part_images, part_labels, loss_fn, config)
                scaler.scale(loss * (len(part_labels) * world / config.batch_size)).backward()
            total += loss.item() * len(part_labels)
        scaler.step(optimizer)
        scaler.update()
        count += len(labels)
        bar.update()
        bar.set_postfix(loss=f"{total / count:.3f}")
    return total / max(count, 1)


@dataclass
class TrainingSet:
    """What one run trains on.

    dataset: the training images (real, plus SMOTE's synthetic ones); positions(epoch): the
    dataset positions of that epoch (all of them, or an oversampled list); class_counts: real
    training images per grade; preparation_seconds: time spent generating data (SMOTE).
    """

    dataset: Dataset
    positions: Callable[[int], np.ndarray]
    class_counts: np.ndarray
    preparation_seconds: float = 0.0


def _training_images(config: RunConfig, data: FundusData, progress: bool) -> FundusDataset:
    """The train split as the run sees it: clean, from a corrupted cache, or corrupted on the fly."""
    augment = build_augmentation(config.augment) if config.augment else None
    scheme = config.corruption
    if scheme is None:
        return FundusDataset(data, "train", transform=augment)
    if scheme.on_the_fly:
        squares = data_variant(data, progress, graham=False)
        corruption = RandomCorruption(scheme.levels, scheme.clean_share)
        transform = CorruptThenGraham(corruption, data.config.graham_circle, augment)
        return FundusDataset(squares, "train", transform=transform)
    corrupted = data_variant(
        data, progress, corruption_levels=scheme.levels, corruption_seed=scheme.seed, clean_share=scheme.clean_share
    )
    return FundusDataset(corrupted, "train", transform=augment)


def training_set(config: RunConfig, data: FundusData, progress: bool = True) -> TrainingSet:
    """The run's training data: the train split (corrupted as ``config.corruption`` says),
    rebalanced as ``config.sampling`` says."""
    augment = build_augmentation(config.augment) if config.augment else None
    real = _training_images(config, data, progress)
    if config.shuffled_labels:
        real.labels = permuted_labels(real.labels, config.seed)
    counts = np.bincount(real.labels, minlength=5)
    if config.sampling == "oversample":
        oversampled = lambda epoch: oversample(real.labels, np.random.default_rng(epoch_seed(config.seed, epoch)))  # noqa: E731
        return TrainingSet(real, oversampled, counts)
    if config.sampling == "smote":
        folder = data.cache.root / f"smote-k{config.smote_k}-seed{config.seed}-{data.manifest_hash[:12]}"
        images, labels, seconds = smote_images(
            data.cache.images[real.rows], real.labels, folder, config.smote_k, config.seed, progress
        )
        dataset = ConcatDataset([real, ImageDataset(images, labels, transform=augment)])
        return TrainingSet(dataset, lambda epoch: np.arange(len(dataset)), counts, seconds)

    def positions(epoch: int) -> np.ndarray:
        if epoch < config.balanced_epochs:
            return balanced_draw(real.labels, np.random.default_rng(epoch_seed(config.seed, epoch)))
        return np.arange(len(real))

    return TrainingSet(real, positions, counts)


def _restore(path: Path, config: RunConfig, model, optimizer, schedule, scaler) -> dict:
    """Load a checkpoint into the training objects; returns its training state."""
    saved = load_checkpoint(path)
    if "config" not in saved or any(key not in saved for key in ("optimizer", "schedule", "scaler", *_STATE)):
        raise CheckpointError(
            f"{path} is not a training checkpoint of this project (weights only?): "
            f"delete the run folder {path.parent} to train the run again"
        )
    if saved["config"] != config.identity():
        raise CheckpointError(f"{path} belongs to another run configuration")
    load_weights(model, path)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    scaler.load_state_dict(saved["scaler"])
    return {key: saved[key] for key in _STATE}


_STATE = {
    "epoch": 0,
    "history": [],
    "best_score": None,
    "best_epoch": None,
    "stale_epochs": 0,
    "train_seconds": 0.0,
    "preparation_seconds": 0.0,
}


def fit(
    config: RunConfig,
    data: FundusData,
    run_dir: Path,
    runtime: RuntimeConfig,
    progress: bool = True,
    initial_weights: Path | None = None,
) -> None:
    """Train ``config`` on ``data`` into ``run_dir``, resuming from its checkpoint if there is one.

    initial_weights: a weights file to start from instead of the model's initialisation
    (fine-tuning, e.g. the report's "oversampling + restart").
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(run_dir)  # half-written checkpoints of a killed run or a full disk
    device = resolve_device(runtime.device)
    processes = start_processes(device)
    torch.manual_seed(config.seed)  # the initial weights
    model = build_model(config, resolve_path(runtime.weights_dir))
    if initial_weights is not None:
        load_weights(model, initial_weights)
    model.to(device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config, model)
    schedule = build_schedule(config, optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp and device.type == "cuda")
    checkpoint = run_dir / CHECKPOINT
    state = (
        _restore(checkpoint, config, model, optimizer, schedule, scaler)
        if checkpoint.exists()
        else {key: (list(value) if isinstance(value, list) else value) for key, value in _STATE.items()}
    )
    early = early_layers(model, config.frozen_blocks) if config.frozen_blocks and config.frozen_epochs else []
    if early and processes.world > 1:
        raise ValueError(
            "frozen_blocks with torchrun: DistributedDataParallel needs a fixed set of trained "
            "parameters; set train.frozen_epochs: 0 for a multi-GPU run"
        )
    trainable = nn.parallel.DistributedDataParallel(model) if processes.world > 1 else model
    training = training_set(config, data, progress and processes.main)
    state["preparation_seconds"] = state["preparation_seconds"] or training.preparation_seconds
    loss_fn = build_loss(config.loss, training.class_counts, config.gamma, config.beta)
    valid_set = FundusDataset(data, "valid")
    for epoch in range(state["epoch"], config.epochs):
        if state["stale_epochs"] >= (config.patience or math.inf):
            break
        for layer in early:
            layer.requires_grad_(epoch >= config.frozen_epochs)
        seed = epoch_seed(config.seed, epoch)
        torch.manual_seed(seed)
        batches = EpochBatches(training.positions(epoch), config.batch_size, seed, processes)
        loader = DataLoader(
            training.dataset,
            batch_sampler=batches,
            num_workers=runtime.loader_workers,
            generator=torch.Generator().manual_seed(seed * 7919 + processes.rank),
            pin_memory=device.type == "cuda",
        )
        started = time.perf_counter()
        with tqdm(
            total=len(batches),
            desc=f"{config.model} epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not (progress and processes.main),
            leave=False,
        ) as bar:
            train_loss = _train_epoch(
                trainable, model, loader, loss_fn, optimizer, scaler, device, runtime, bar, config, processes.world
            )
        schedule.step()
        if processes.main:
            probabilities = predict(
                inference_model(model), valid_set, device, runtime.eval_batch_size, runtime.loader_workers, runtime.amp
            )
            metrics = evaluate(probabilities, valid_set.labels)
            state["train_seconds"] += time.perf_counter() - started
            state["history"].append(
                {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    **{f"valid_{key}": value for key, value in metrics.items()},
                }
            )
            if _is_better(config.select_on, metrics[config.select_on], state["best_score"]):
                state.update(best_score=metrics[config.select_on], best_epoch=epoch + 1, stale_epochs=0)
                save_atomic({"model": model.state_dict()}, run_dir / BEST_WEIGHTS)
            else:
                state["stale_epochs"] += 1
            state["epoch"] = epoch + 1
            save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict(),
                    "config": config.identity(),
                    **state,
                },
                checkpoint,
            )
        if processes.world > 1:
            shared = [state]
            dist.broadcast_object_list(shared, src=0)
            state = shared[0]
