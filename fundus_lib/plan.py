"""What a params file will cost before it runs: training runs, image passes, cache size, time.

``fundus plan params/eyepacs-512.yaml`` prints, per chapter, the runs it trains and the image
passes they take (an image through a forward and backward pass; a PGD step of adversarial
training counts as one more), the preprocessed caches' size against the free disk space, and the
time on this machine extrapolated from its measured training throughput per model and image size.

Example::

    plan = training_plan(load_params("params/eyepacs-512.yaml"))
    plan.groupby("chapter")["passes"].sum()
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pandas as pd
import torch

from fundus_lib.config import Params, RunConfig, resolve_path
from fundus_lib.experiments import all_runs, seeds_phrase
from fundus_lib.paths import data_dir
from fundus_lib.report.numbers import report_table
from fundus_lib.training.loop import _batch_loss, build_model, build_optimizer, resolve_device, training_autocast
from fundus_lib.training.losses import build_loss

#: Chapter of a run, from the two-digit prefix of its label.
CHAPTERS = {
    "02": "02_baselines",
    "03": "03_balancing",
    "04": "04_corruption",
    "05": "05_adversarial",
    "06": "06_attribution",
}


def labelled_counts(params: Params) -> tuple[np.ndarray, str]:
    """Images per grade 0-4 the params file will read, and where the counts come from: the labels
    csv when it is on this machine (first ``max_images`` rows), else the report's Table 1 (the
    Kaggle training set), or the generator's patients under that balance for synthetic data."""
    table1 = report_table("table1")["images"].to_numpy()
    if params.data.source == "synthetic":
        total = 2 * params.data.synthetic.n_patients
        return np.round(table1 / table1.sum() * total).astype(int), "the generator (two eyes per patient)"
    source = params.data.eyepacs
    labels_csv = resolve_path(source.labels_csv)
    if not labels_csv.is_file():
        return table1, f"the report's Table 1 ({labels_csv} is not on this machine)"
    levels = pd.read_csv(labels_csv, usecols=["level"])["level"]
    if source.max_images:
        levels = levels.iloc[: source.max_images]
    return np.bincount(levels.to_numpy(), minlength=5)[:5], str(labels_csv)


def epoch_images(config: RunConfig, train_counts: np.ndarray) -> int:
    """Images one epoch of ``config`` trains on: oversampling and SMOTE fill every grade up to the
    largest (5 x its count), a plain epoch is the train split."""
    if config.sampling in ("oversample", "smote"):
        return int(len(train_counts) * train_counts.max())
    return int(train_counts.sum())


def image_passes(config: RunConfig, train_counts: np.ndarray) -> int:
    """Forward-and-backward image passes of a whole run (each PGD step of adversarial training one more)."""
    per_image = 1 + (config.adversarial.steps if config.adversarial else 0)
    return config.epochs * epoch_images(config, train_counts) * per_image


def training_plan(params: Params) -> pd.DataFrame:
    """One row per training run: chapter, label, model, image size, batch size, epochs, passes."""
    counts, _ = labelled_counts(params)
    train_share = 1 - params.data.split.valid - params.data.split.test
    train_counts = np.floor(counts * train_share)
    rows = [
        {
            "chapter": CHAPTERS.get(label[:2], label[:2]),
            "label": label,
            "model": config.model,
            "image_size": config.image_size,
            "batch_size": config.batch_size,
            "epochs": config.epochs,
            "passes": image_passes(config, train_counts),
        }
        for label, (_, config) in all_runs(params).items()
    ]
    return pd.DataFrame(rows)


def cache_bytes(params: Params) -> tuple[int, int]:
    """(caches, bytes): the preprocessed cache and each corrupted or pre-Graham variant the runs
    train on, every one images x size x size x 3 bytes."""
    counts, _ = labelled_counts(params)
    variants = {
        ("squares",) if scheme.on_the_fly else (scheme.levels, scheme.seed, scheme.clean_share)
        for _, config in all_runs(params).values()
        if (scheme := config.corruption) is not None
    }
    caches = 1 + len(variants)
    return caches, caches * int(counts.sum()) * params.data.image_size**2 * 3


def measured_rate(params: Params, config: RunConfig, steps: int = 3, batch: int = 4) -> float:
    """Training image passes per second of ``config``'s model at its image size on this machine
    (random images, a batch of at most ``batch``, the params' runtime: device, bfloat16 / AMP),
    after one warm-up step; plain steps (``image_passes`` counts a PGD step as a pass)."""
    device = resolve_device(params.runtime.device)
    config = config.model_copy(update={"pretrained": False, "adversarial": None})
    model = build_model(config).to(device).train()
    optimizer = build_optimizer(config, model)
    loss_fn = build_loss("cross_entropy")
    size = min(batch, config.batch_size)
    images = torch.rand(size, 3, config.image_size, config.image_size, device=device)
    labels = torch.arange(size, device=device) % 5
    elapsed = 0.0
    for step in range(steps + 1):
        started = time.perf_counter()
        with training_autocast(device, params.runtime):
            loss = _batch_loss(model, model, images, labels, loss_fn, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed += (time.perf_counter() - started) if step else 0.0
    return steps * size / elapsed


def _fmt_bytes(count: float) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


def _fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def plan_report(params: Params, params_file: str, progress: bool = True) -> str:
    """The plan as text: per chapter runs, image passes and time here; caches against free space."""
    plan = training_plan(params)
    counts, source = labelled_counts(params)
    configs: dict[tuple[str, int], RunConfig] = {}
    for _, config in all_runs(params).values():
        configs.setdefault((config.model, config.image_size), config)
    rates = {}
    for (model, size), config in configs.items():
        if progress:
            print(f"measuring {model} at {size} px ...", flush=True)
        rates[(model, size)] = measured_rate(params, config)
    plan["seconds"] = [row.passes / rates[(row.model, row.image_size)] for row in plan.itertuples()]
    device = resolve_device(params.runtime.device)
    lines = [
        f"plan for {params_file} ({params.name}): {len(plan)} training runs, {seeds_phrase(params)} seed(s) per "
        f"compared configuration; {int(counts.sum()):,} labelled images (from {source})",
        f"times: measured training throughput on this machine ({device}), training only "
        "(evaluation, attacks and attributions come on top)",
        "",
        f"{'chapter':<16}{'runs':>6}{'image passes':>16}{'time here':>12}",
    ]
    for chapter, group in plan.groupby("chapter"):
        lines.append(
            f"{chapter:<16}{len(group):>6}{group['passes'].sum() / 1e6:>14.2f} M"
            f"{_fmt_hours(group['seconds'].sum()):>12}"
        )
    lines.append(
        f"{'all':<16}{len(plan):>6}{plan['passes'].sum() / 1e6:>14.2f} M{_fmt_hours(plan['seconds'].sum()):>12}"
    )
    lines += ["", "throughput measured here (image passes per second):"]
    lines += [f"  {model} at {size} px: {rate:,.1f}/s" for (model, size), rate in sorted(rates.items())]
    caches, size = cache_bytes(params)
    folder = data_dir()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    free = shutil.disk_usage(existing).free
    lines += [
        "",
        f"caches: {caches} x {int(counts.sum()):,} images x {params.data.image_size} x "
        f"{params.data.image_size} x 3 bytes = {_fmt_bytes(size)}; free under {existing}: {_fmt_bytes(free)}"
        + ("" if free > size else "  <- NOT ENOUGH SPACE"),
    ]
    return "\n".join(lines)
