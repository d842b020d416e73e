"""The training loop every chapter uses.

``fit`` trains one run into a folder: per-epoch validation, best-epoch selection on a chosen
validation metric, an atomic checkpoint after every epoch (an interrupted run resumes from it and
ends with the same weights as an uninterrupted one), early stopping, mixed precision and
channels-last on CUDA, and data-parallel training when started by ``torchrun``.

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
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from fundus_lib.config import RunConfig, RuntimeConfig, resolve_path
from fundus_lib.data.augment import build_augmentation
from fundus_lib.data.dataset import FundusDataset
from fundus_lib.data.pipeline import FundusData
from fundus_lib.errors import UserError
from fundus_lib.metrics import confusion, scores
from fundus_lib.models import FundusNet, create_model, pretrained_weights_file

CHECKPOINT = "last.pt"
BEST_WEIGHTS = "best.pt"
#: Weight of the auxiliary head's loss for inception_v3 (torchvision's reference recipe).
AUX_LOSS_WEIGHT = 0.4


class CheckpointError(UserError, RuntimeError):
    """A checkpoint does not belong to this run, model or number of classes."""


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
    """Batch indices of one epoch: a seeded permutation cut into full batches of ``batch_size``;
    process ``rank`` of ``world`` gets its contiguous slice of each batch (slices differ by at
    most one image when the batch does not divide evenly)."""

    def __init__(self, n: int, batch_size: int, seed: int, processes: Processes = Processes()):
        if batch_size < processes.world:
            raise ValueError(f"batch size {batch_size} is smaller than the {processes.world} processes")
        if n < batch_size:
            raise ValueError(f"the training split has {n} images, fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed, self.processes = n, batch_size, seed, processes

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist()
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


def classification_loss(outputs, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; inception_v3's auxiliary head (training mode) adds 0.4 x its own."""
    if isinstance(outputs, tuple):  # torchvision's InceptionOutputs(logits, aux_logits)
        logits, aux = outputs
        return nn.functional.cross_entropy(logits, labels) + AUX_LOSS_WEIGHT * nn.functional.cross_entropy(aux, labels)
    return nn.functional.cross_entropy(outputs, labels)


# --- checkpoints -------------------------------------------------------------------------------------


def save_atomic(state: dict, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict saved by this project (``weights_only``); a mismatch is a clear error."""
    state = torch.load(path, map_location="cpu", weights_only=True)
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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --- evaluation ------------------------------------------------------------------------------------------


@torch.no_grad()
def predict(model: nn.Module, dataset, device: torch.device, batch_size: int = 128, workers: int = 0,
            amp: bool = True) -> np.ndarray:
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


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The report's metrics plus the mean cross-entropy of probabilities (N, C) against labels."""
    predictions = probabilities.argmax(axis=1)
    result = scores(labels, predictions, probabilities.shape[1])
    picked = probabilities[np.arange(len(labels)), labels]
    result["loss"] = float(-np.log(np.clip(picked, 1e-12, 1)).mean()) if len(labels) else float("nan")
    return result


# --- the loop ----------------------------------------------------------------------------------------------


def _is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric == "loss" else value > best


def _train_epoch(model, loader, optimizer, scaler, device, runtime, bar, batch_size: int, world: int) -> float:
    """One pass over the loader. Under torchrun each process's mean loss is weighted by its share
    of the batch, so the averaged gradients are those of the whole batch's mean loss."""
    model.train()
    total, count = 0.0, 0
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.float16) if runtime.amp and cuda else nullcontext()
    memory = torch.channels_last if runtime.channels_last and cuda else torch.contiguous_format
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=memory)
        labels = labels.to(device, non_blocking=True)
        with autocast:
            loss = classification_loss(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss * (len(labels) * world / batch_size)).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * len(labels)
        count += len(labels)
        bar.update()
        bar.set_postfix(loss=f"{total / count:.3f}")
    return total / max(count, 1)


def fit(config: RunConfig, data: FundusData, run_dir: Path, runtime: RuntimeConfig, progress: bool = True) -> None:
    """Train ``config`` on ``data`` into ``run_dir``, resuming from its checkpoint if there is one."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(runtime.device)
    processes = start_processes(device)
    torch.manual_seed(config.seed)  # the initial weights
    model = build_model(config, resolve_path(runtime.weights_dir)).to(device)
    if runtime.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config, model)
    schedule = build_schedule(config, optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp and device.type == "cuda")
    state = {"epoch": 0, "history": [], "best_score": None, "best_epoch": None, "stale_epochs": 0, "train_seconds": 0.0}
    checkpoint = run_dir / CHECKPOINT
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved["config"] != config.model_dump(mode="json"):
            raise CheckpointError(f"{checkpoint} belongs to another run configuration")
        load_weights(model, checkpoint)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        state = {key: saved[key] for key in state}
    trainable = nn.parallel.DistributedDataParallel(model) if processes.world > 1 else model
    augment = build_augmentation(config.augment) if config.augment else None
    train_set = FundusDataset(data, "train", transform=augment)
    valid_set = FundusDataset(data, "valid")
    for epoch in range(state["epoch"], config.epochs):
        if state["stale_epochs"] >= (config.patience or math.inf):
            break
        seed = epoch_seed(config.seed, epoch)
        torch.manual_seed(seed)
        batches = EpochBatches(len(train_set), config.batch_size, seed, processes)
        loader = DataLoader(train_set, batch_sampler=batches, num_workers=runtime.loader_workers,
                            generator=torch.Generator().manual_seed(seed * 7919 + processes.rank),
                            pin_memory=device.type == "cuda")
        started = time.perf_counter()
        with tqdm(total=len(batches), desc=f"{config.model} epoch {epoch + 1}/{config.epochs}", unit="batch",
                  disable=not (progress and processes.main), leave=False) as bar:
            train_loss = _train_epoch(trainable, loader, optimizer, scaler, device, runtime, bar,
                                      config.batch_size, processes.world)
        schedule.step()
        if processes.main:
            probabilities = predict(model, valid_set, device, runtime.eval_batch_size, runtime.loader_workers, runtime.amp)
            metrics = evaluate(probabilities, valid_set.labels)
            state["train_seconds"] += time.perf_counter() - started
            state["history"].append({"epoch": epoch + 1, "train_loss": train_loss,
                                     **{f"valid_{key}": value for key, value in metrics.items()}})
            if _is_better(config.select_on, metrics[config.select_on], state["best_score"]):
                state.update(best_score=metrics[config.select_on], best_epoch=epoch + 1, stale_epochs=0)
                save_atomic({"model": model.state_dict()}, run_dir / BEST_WEIGHTS)
            else:
                state["stale_epochs"] += 1
            state["epoch"] = epoch + 1
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                         "scaler": scaler.state_dict(), "config": config.model_dump(mode="json"), **state}, checkpoint)
        if processes.world > 1:
            shared = [state]
            dist.broadcast_object_list(shared, src=0)
            state = shared[0]
