"""Rebalancing the training set: oversampling and SMOTE on images (the report's §3).

- oversampling: every class is repeated up to the majority class's count (the report: 25,810 x 5
  images per epoch), whole copies first, then a seeded random share of the remainder;
- SMOTE (Chawla et al. 2002) in pixel space, as the report did: each synthetic image is
  ``x_i + u * (x_j - x_i)``, u uniform in [0, 1), x_j one of the k nearest same-class neighbours
  of x_i, until every class has the majority's count. The tests check it against
  imbalanced-learn's SMOTE. Generated images are cached beside the data cache, with the time
  their generation took (the report counts it in the training time).

Example::

    positions = oversample(labels, np.random.default_rng(0))   # indices into labels
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from sklearn.neighbors import NearestNeighbors
from tqdm import tqdm

from fundus_lib.files import write_atomic


def oversample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions into ``labels`` in which every present class appears max-count times (int64, sorted by class)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.max()
    parts = []
    for grade, count in zip(classes, counts):
        positions = np.flatnonzero(labels == grade)
        whole, rest = divmod(target, count)
        parts += [np.tile(positions, whole), rng.choice(positions, size=rest, replace=False)]
    return np.concatenate(parts).astype(np.int64)


def balanced_draw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """len(labels) positions into ``labels`` drawn with replacement so that every present class is
    equally likely (int64, in draw order): one epoch of class-balanced sampling at the usual length."""
    labels = np.asarray(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    weights = 1.0 / (len(classes) * counts[inverse])
    return rng.choice(len(labels), size=len(labels), replace=True, p=weights).astype(np.int64)


def smote_plan(features: np.ndarray, labels: np.ndarray, k: int, rng: np.random.Generator):
    """What SMOTE will generate, without generating it.

    features: (N, D) float; returns (base, neighbour, step, label) arrays with one entry per
    synthetic sample: synthetic = features[base] + step * (features[neighbour] - features[base]).
    Classes with a single sample are copied (step 0).
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.max()
    bases, neighbours, steps, grades = [], [], [], []
    for grade, count in zip(classes, counts):
        if count == target:
            continue
        positions = np.flatnonzero(labels == grade)
        n_new = target - count
        k_used = min(k, count - 1)
        if k_used == 0:
            chosen_base, chosen_neighbour = np.repeat(positions, n_new), np.repeat(positions, n_new)
        else:
            nearest = NearestNeighbors(n_neighbors=k_used + 1).fit(features[positions])
            neighbour_table = nearest.kneighbors(features[positions], return_distance=False)[:, 1:]
            picks = rng.integers(0, count * k_used, size=n_new)
            chosen_base = positions[picks // k_used]
            chosen_neighbour = positions[neighbour_table[picks // k_used, picks % k_used]]
        bases.append(chosen_base)
        neighbours.append(chosen_neighbour)
        steps.append(rng.random(n_new) if k_used else np.zeros(n_new))
        grades.append(np.full(n_new, grade))
    if not bases:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), empty
    return (np.concatenate(bases), np.concatenate(neighbours), np.concatenate(steps), np.concatenate(grades))


def smote_images(
    images: np.ndarray, labels: np.ndarray, folder: Path, k: int = 5, seed: int = 0, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, float]:
    """SMOTE on uint8 images (N, H, W, C): the synthetic images and labels, and the seconds it took.

    Cached in ``folder`` (``images.npy``, ``labels.npy``, ``smote.json``, written last); a finished
    cache is returned at once with the generation time it originally took.
    """
    folder = Path(folder)
    info = folder / "smote.json"
    if info.exists():
        stored = json.loads(info.read_text())
        return np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "labels.npy"), stored["seconds"]
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    features = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    base, neighbour, step, grades = smote_plan(features, labels, k, np.random.default_rng(seed))
    out = open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(len(base), *images.shape[1:]))
    for first in tqdm(range(0, len(base), 256), desc="SMOTE", unit="chunk", disable=not progress):
        chunk = slice(first, first + 256)
        a, b = features[base[chunk]], features[neighbour[chunk]]
        mixed = a + step[chunk, None].astype(np.float32) * (b - a)
        out[chunk] = np.rint(mixed).clip(0, 255).astype(np.uint8).reshape(-1, *images.shape[1:])
    out.flush()
    np.save(folder / "labels.npy", grades)
    seconds = time.perf_counter() - start
    write_atomic(info, json.dumps({"k": k, "seed": seed, "n": int(len(base)), "seconds": seconds}))
    return np.load(folder / "images.npy", mmap_mode="r"), grades, seconds
