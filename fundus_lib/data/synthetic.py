"""Procedural fundus photographs with diabetic-retinopathy lesions and ground truth.

The embedded default dataset: EyePACS-like colour fundus photographs of both eyes of each
patient, graded 0-4 (ICDR), each with a lesion mask, written in the Kaggle layout.

Conventions used throughout:

- Images are RGB uint8 (H, W, 3) with H = round(2/3 W), like EyePACS' 3:2 frames.
- Geometry is in units of the fundus radius R (in px: ``field_scale * H / 2``), with the origin at
  the fundus centre, x to the right and y down, so nothing depends on the image width.
- Anatomy (optic disc, macula, vessel tree) is built for a right eye (disc on the right, the
  nasal side) and mirrored for a left eye; lesions are placed in the mirrored frame; an
  "inverted" image (taken through an indirect ophthalmoscope) is the result turned by 180 degrees,
  mask included. The spurious cue is drawn last, at a fixed place relative to the fundus centre.
- All randomness of one image comes from ``spec.seed`` (lesions, texture, noise: independent
  streams) and ``spec.anatomy_seed`` (shared by the patient's two eyes), so ``render_eye`` is a
  pure function and ``dataclasses.replace(spec, cue=False)`` changes only the cue's pixels.

Example::

    specs = sample_specs(SyntheticConfig(n_patients=10, seed=0))
    rgb, mask = render_eye(specs[0], width=576, difficulty=1.0)
    generate_dataset(Path("data/synthetic/demo"), SyntheticConfig(n_patients=10, seed=0))
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from fundus_lib.config import SyntheticConfig
from fundus_lib.files import exclusive, write_atomic
from fundus_lib.workers import exit_with_parent

#: Bump whenever a change alters the rendered images, the specs or the files written.
GENERATOR_VERSION = "1"

#: Lesion mask codes; 0 = no lesion. Where lesions overlap, the higher code (drawn later) wins.
LESION_CODES: dict[int, str] = {
    1: "microaneurysm",
    2: "haemorrhage",
    3: "hard exudate",
    4: "cotton-wool spot",
    5: "neovascularisation",
    6: "spurious cue",
}

N_GRADES = 5
_SHIFT = 4  # cv2 drawing: sub-pixel coordinates with 4 fractional bits
_ONE = 1 << _SHIFT
_MAX_MH_STEPS = 500


@dataclass(frozen=True)
class EyeSpec:
    """Everything needed to render one eye deterministically.

    image: Kaggle name ``<patient>_<side>``; patient: 1..n; side: "left" | "right";
    grade: the true ICDR grade 0-4 (the lesions follow it); label: the grader's label after
    label noise (what trainLabels.csv holds); cue: the spurious cue is drawn;
    seed: all per-image randomness; anatomy_seed: the anatomy, shared by both eyes.
    Acquisition: brightness (exposure gain, ~0.6-1.5), contrast (gain around mid-grey,
    ~0.7-1.4), gamma (~0.7-1.4), cast_r/g/b (per-channel gains, ~0.8-1.2), blur (defocus, Gaussian
    sigma in units of R), noise (sensor noise std in grey levels), inverted (turned by 180
    degrees), field_scale (fundus radius / half the image height; > 1 = field cut at top and
    bottom), offset_x/offset_y (fundus centre's shift from the image centre, units of R).
    """

    image: str
    patient: int
    side: str
    grade: int
    label: int
    cue: bool
    seed: int
    anatomy_seed: int
    brightness: float
    contrast: float
    gamma: float
    cast_r: float
    cast_g: float
    cast_b: float
    blur: float
    noise: float
    inverted: bool
    field_scale: float
    offset_x: float
    offset_y: float


# --------------------------------------------------------------------------- specs: grades, labels


def _quota_grades(balance: np.ndarray, n: int) -> np.ndarray:
    """Exactly round(share * n) grades per class (largest remainders fix the sum), in grade order."""
    exact = balance * n
    counts = np.floor(exact + 0.5).astype(int)
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    while counts.sum() != n:
        step = 1 if counts.sum() < n else -1
        grade = next(g for g in (order if step > 0 else order[::-1]) if counts[g] + step >= 0)
        counts[grade] += step
    return np.repeat(np.arange(N_GRADES), counts)


def _mh_step_matrix(balance: np.ndarray) -> np.ndarray:
    """(5, 5) transition matrix of one Metropolis-Hastings step targeting ``balance``.

    Proposal: grade -1 or +1 with probability 1/2 each (outside 0-4: stay); acceptance
    min(1, p_new / p_old). Rows of grades with share 0 stay put.
    """
    step = np.zeros((N_GRADES, N_GRADES))
    for grade in range(N_GRADES):
        for new in (grade - 1, grade + 1):
            if 0 <= new < N_GRADES and balance[grade] > 0:
                step[grade, new] = 0.5 * min(1.0, balance[new] / balance[grade])
        step[grade, grade] = 1.0 - step[grade].sum()
    return step


def _move_kernel(balance: np.ndarray, move_probability: float) -> np.ndarray:
    """(5, 5) transition matrix that keeps ``balance`` and moves a grade with ``move_probability``.

    A mixture of n - 1 and n Metropolis-Hastings steps (each keeps the marginal), with n the
    fewest steps that move often enough. Under the report's balance one step moves only 18 % of
    grades (grade 0 is rarely left), so 10 % label noise is a mixture of 0 and 1 step (always a
    neighbouring grade) and 25 % eye disagreement needs about 4 steps. Targets beyond what the
    chain can reach (it approaches independent draws) get the nearest reachable value.
    """
    step = _mh_step_matrix(balance)
    previous, current = np.eye(N_GRADES), step
    for _ in range(_MAX_MH_STEPS):
        stay_before, stay_now = balance @ np.diag(previous), balance @ np.diag(current)
        if 1 - stay_now >= move_probability:
            weight = (move_probability - (1 - stay_before)) / max(stay_before - stay_now, 1e-12)
            return (1 - weight) * previous + weight * current
        previous, current = current, current @ step
    return previous


def _apply_kernel(grades: np.ndarray, kernel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw a new grade for each entry of ``grades`` from the kernel's row: int (n,)."""
    cdf = np.cumsum(kernel, axis=1)
    cdf[:, -1] = 1.0
    return (rng.random(len(grades))[:, None] >= cdf[grades]).sum(axis=1)


def _patient_grades(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True grades (n_patients,) of the left and right eyes.

    The first eye (left or right at random) gets exact quotas; the second eye is the first moved
    by a marginal-preserving MH kernel, so both eyes are marginally ``class_balance`` and they
    agree with probability ``eye_agreement`` (on average).
    """
    balance = np.asarray(cfg.class_balance, dtype=float) / sum(cfg.class_balance)
    first = rng.permutation(_quota_grades(balance, cfg.n_patients))
    second = _apply_kernel(first, _move_kernel(balance, 1 - cfg.eye_agreement), rng)
    first_is_left = rng.random(cfg.n_patients) < 0.5
    return np.where(first_is_left, first, second), np.where(first_is_left, second, first)


def _acquisition(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Camera and acquisition parameters of n images (see EyeSpec), rounded for a clean csv."""
    incomplete = rng.random(n) < 0.3
    out_of_focus = rng.random(n) < 0.12
    values = {
        "brightness": np.exp(np.clip(rng.normal(0, 0.18, n), -0.5, 0.4)),
        "contrast": np.exp(np.clip(rng.normal(0, 0.15, n), -0.35, 0.35)),
        "gamma": np.exp(np.clip(rng.normal(0, 0.15, n), -0.35, 0.35)),
        "cast_r": np.exp(np.clip(rng.normal(0, 0.07, n), -0.2, 0.2)),
        "cast_g": np.exp(np.clip(rng.normal(0, 0.07, n), -0.2, 0.2)),
        "cast_b": np.exp(np.clip(rng.normal(0, 0.10, n), -0.25, 0.25)),
        "blur": np.where(out_of_focus, rng.uniform(0.012, 0.03, n), np.abs(rng.normal(0, 0.003, n))),
        "noise": rng.uniform(1.0, 4.0, n),
        "field_scale": np.where(incomplete, rng.uniform(1.06, 1.22, n), rng.uniform(0.9, 0.98, n)),
        "offset_x": np.clip(rng.normal(0, 0.025, n), -0.06, 0.06),
        "offset_y": np.clip(rng.normal(0, 0.02, n), -0.05, 0.05),
    }
    values = {key: np.round(value, 5) for key, value in values.items()}
    values["inverted"] = rng.random(n) < 0.1
    return values


def sample_specs(cfg: SyntheticConfig) -> list[EyeSpec]:
    """Specs of all 2 * n_patients eyes, sorted like Kaggle (by patient, left before right).

    Grades follow ``class_balance`` (see ``_patient_grades``); the label is the grade moved with
    probability ``label_noise`` by the same kind of kernel (one MH step or a mixture), so the labels
    keep the balance too; the cue is present with probability ``spurious_cue * grade / 4``.
    """
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_patients
    left, right = _patient_grades(cfg, rng)
    grades = np.stack([left, right], axis=1).ravel()
    balance = np.asarray(cfg.class_balance, dtype=float) / sum(cfg.class_balance)
    labels = _apply_kernel(grades, _move_kernel(balance, cfg.label_noise), rng)
    cues = rng.random(2 * n) < cfg.spurious_cue * grades / 4
    seeds = rng.integers(0, 2**31 - 1, 2 * n)
    anatomy_seeds = np.repeat(rng.integers(0, 2**31 - 1, n), 2)
    acquisition = _acquisition(2 * n, rng)
    specs = []
    for i in range(2 * n):
        patient, side = i // 2 + 1, ("left", "right")[i % 2]
        specs.append(
            EyeSpec(
                image=f"{patient}_{side}",
                patient=patient,
                side=side,
                grade=int(grades[i]),
                label=int(labels[i]),
                cue=bool(cues[i]),
                seed=int(seeds[i]),
                anatomy_seed=int(anatomy_seeds[i]),
                **{key: value[i].item() for key, value in acquisition.items()},
            )
        )
    return specs


# --------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class _Vessel:
    """One vessel of the tree: points (n, 2) and widths (n,) in units of R, right-eye frame."""

    points: np.ndarray
    widths: np.ndarray
    vein: bool
    depth: int


@dataclass(frozen=True)
class _Anatomy:
    """A patient's eye in the right-eye frame (units of R).

    disc: centre (x, y); disc_radius: horizontal half-axis (the vertical one is ``disc_aspect``
    times larger); fovea: centre (x, y); colour: retina RGB in [0, 1]; vignette: darkening at the rim.
    """

    disc: tuple[float, float]
    disc_radius: float
    disc_aspect: float
    fovea: tuple[float, float]
    colour: tuple[float, float, float]
    vignette: float
    vessels: tuple[_Vessel, ...]


_STEP = 0.02  # vessel growth step, units of R
_MIN_WIDTH = 0.0035  # vessels end below this width (units of R)


def _grow_vessel(
    rng: np.random.Generator,
    start: np.ndarray,
    heading: float,
    width: float,
    turn: float,
    length: float,
    vein: bool,
    depth: int,
    fovea: np.ndarray,
    out: list[_Vessel],
) -> None:
    """Grow one tapering, wandering vessel and, recursively, its branches, appending to ``out``.

    heading in radians (image frame, y down); turn: initial curvature (rad per unit R), fading
    over 0.7 R; length: units of R.
    """
    n = max(2, int(length / _STEP))
    bend = turn * _STEP * np.exp(-np.arange(n) * _STEP / 0.7)
    headings = heading + np.cumsum(bend + rng.normal(0, 0.045, n))
    steps = _STEP * np.stack([np.cos(headings), np.sin(headings)], axis=1)
    points = np.vstack([start, start + np.cumsum(steps, axis=0)])
    widths = width * 0.994 ** np.arange(n + 1)
    spacing = rng.uniform(0.18, 0.3)
    branch_at = np.arange(rng.uniform(0.08, spacing), length, spacing) / _STEP
    for index in branch_at.astype(int):
        widths[index:] *= 0.93
    stop = (np.hypot(*points.T) > 1.02) | (np.hypot(*(points - fovea).T) < 0.09) | (widths < _MIN_WIDTH)
    end = int(np.argmax(stop)) if stop.any() else len(points)
    if end < 2:
        return
    out.append(_Vessel(points[:end], widths[:end], vein, depth))
    if depth >= 2:
        return
    for index in branch_at.astype(int):
        if index >= end - 1:
            break
        child_width = widths[index] * rng.uniform(0.5, 0.75)
        if child_width < _MIN_WIDTH * 1.3:
            continue
        side = rng.choice([-1.0, 1.0])
        _grow_vessel(
            rng,
            points[index],
            headings[min(index, n - 1)] + side * rng.uniform(0.45, 1.0),
            child_width,
            rng.normal(0, 0.8),
            length * rng.uniform(0.3, 0.55),
            vein,
            depth + 1,
            fovea,
            out,
        )


def _vessel_tree(rng: np.random.Generator, disc: np.ndarray, fovea: np.ndarray) -> tuple[_Vessel, ...]:
    """Arteries and veins leaving the disc: temporal arcades around the macula, nasal and macular
    branches. Right-eye frame, units of R."""
    trunks = [  # initial heading (deg), curvature (rad / R), length (R), vein width (R)
        (-95, -2.6, 1.5, 0.021),
        (95, 2.6, 1.5, 0.021),
        (-40, 0.5, 0.8, 0.015),
        (40, -0.5, 0.8, 0.015),
        (-5, 0.0, 0.5, 0.009),
        (175, 0.0, 0.4, 0.007),
        (-175, 0.0, 0.4, 0.007),
    ]
    vessels: list[_Vessel] = []
    for heading, turn, length, width in trunks:
        for vein, width_factor, spread in ((True, 1.0, 0.08), (False, 0.72, 0.1)):
            start = disc + rng.normal(0, 0.02, 2)
            angle = math.radians(heading) + rng.normal(0, spread)
            curve = turn * rng.uniform(0.85, 1.15)
            _grow_vessel(rng, start, angle, width * width_factor, curve, length, vein, 0, fovea, vessels)
    return tuple(vessels)


@lru_cache(maxsize=64)
def _anatomy(anatomy_seed: int) -> _Anatomy:
    """The anatomy of one patient (both eyes share it), deterministic in ``anatomy_seed``."""
    rng = np.random.default_rng([anatomy_seed, 7])
    fovea = np.array([rng.normal(-0.1, 0.04), rng.normal(0.02, 0.04)])
    angle = rng.normal(-0.08, 0.05)
    disc = fovea + rng.uniform(0.6, 0.7) * np.array([math.cos(angle), math.sin(angle)])
    pigment = rng.uniform(0.75, 1.1)
    colour = (0.88, 0.40 * pigment, 0.16 * pigment * rng.uniform(0.8, 1.2))
    return _Anatomy(
        disc=tuple(disc),
        disc_radius=rng.uniform(0.11, 0.14),
        disc_aspect=rng.uniform(1.02, 1.15),
        fovea=tuple(fovea),
        colour=colour,
        vignette=rng.uniform(0.35, 0.55),
        vessels=_vessel_tree(rng, disc, fovea),
    )


# --------------------------------------------------------------------------- lesions


#: Lesion strength (contrast at difficulty 1, 0-1) ranges per code: the calibration of how
#: visible each kind is. With these, a 10-layer CNN trained on 1,600 Graham-preprocessed 128 px
#: images reached a quadratic weighted kappa of about 0.79 against the labels (0.55 at difficulty 2).
_STRENGTH = {1: (0.15, 0.35), 2: (0.2, 0.45), 3: (0.2, 0.5), 4: (0.25, 0.45), 5: (0.4, 0.65)}


@dataclass(frozen=True)
class _Lesion:
    """One lesion: mask code, strength (contrast at difficulty 1, 0-1) and its shapes.

    Shapes, in units of R in the mirrored (side's) frame: ("circle", x, y, r),
    ("ellipse", x, y, a, b, angle_deg) or ("line", points (n, 2), width).
    """

    code: int
    strength: float
    shapes: tuple


def _counts_for_grade(grade: int, rng: np.random.Generator) -> dict[str, int]:
    """How many lesions of each kind a grade gets; ranges overlap between neighbouring grades.

    Keys: ma (microaneurysms), haem (haemorrhages), ex (hard-exudate clusters), cws, nv (tufts),
    preretinal (large haemorrhages).
    """
    counts = dict.fromkeys(("ma", "haem", "ex", "cws", "nv", "preretinal"), 0)
    if grade == 1:
        counts["ma"] = 1 + rng.poisson(1.0)
    elif grade == 2:
        counts.update(ma=1 + rng.poisson(2.5), haem=rng.poisson(1.2), ex=rng.poisson(0.6))
        counts["cws"] = int(rng.random() < 0.2)
        if counts["haem"] + counts["ex"] == 0:
            counts["haem"] = 1
    elif grade >= 3:
        counts.update(ma=3 + rng.poisson(5), haem=4 + rng.poisson(6), ex=rng.poisson(1.5))
        counts["cws"] = 1 + rng.poisson(1.0)
    if grade == 4:
        counts["nv"] = 1 + rng.poisson(0.8)
        counts["preretinal"] = int(rng.random() < 0.2)
    return counts


class _Placer:
    """Random lesion positions inside the visible retina, away from the optic disc (units of R)."""

    def __init__(self, spec: EyeSpec, anatomy: _Anatomy, rng: np.random.Generator):
        mirror = -1.0 if spec.side == "left" else 1.0
        self.disc = np.array([mirror * anatomy.disc[0], anatomy.disc[1]])
        self.fovea = np.array([mirror * anatomy.fovea[0], anatomy.fovea[1]])
        self.disc_radius = anatomy.disc_radius * anatomy.disc_aspect
        self.half_height = 1 / spec.field_scale - 0.04  # visible |y + offset_y| in units of R
        self.offset_y = spec.offset_y
        self.rng = rng

    def visible(self, point: np.ndarray) -> bool:
        """Inside 0.9 R, inside the image rows and not on the disc."""
        return (
            np.hypot(*point) < 0.9
            and abs(point[1] + self.offset_y) < self.half_height
            and np.hypot(*(point - self.disc)) > self.disc_radius + 0.04
        )

    def place(self, posterior: float, spread: float = 0.32) -> np.ndarray:
        """A visible point: with probability ``posterior`` near the macula (Gaussian, ``spread``),
        otherwise uniform over the field."""
        point = self.fovea
        for _ in range(100):
            if self.rng.random() < posterior:
                centre = self.fovea + 0.25 * (self.disc - self.fovea)
                point = centre + self.rng.normal(0, spread, 2)
            else:
                radius, angle = 0.9 * math.sqrt(self.rng.random()), self.rng.uniform(0, 2 * math.pi)
                point = np.array([radius * math.cos(angle), radius * math.sin(angle)])
            if self.visible(point):
                return point
        return self.fovea


def _microaneurysm(placer: _Placer, rng: np.random.Generator, posterior: float) -> _Lesion:
    x, y = placer.place(posterior)
    return _Lesion(1, rng.uniform(*_STRENGTH[1]), (("circle", x, y, rng.uniform(0.02, 0.027)),))


def _haemorrhage(placer: _Placer, rng: np.random.Generator, posterior: float) -> _Lesion:
    """A dot, blot (a few overlapping discs) or flame haemorrhage (ellipse radial to the disc)."""
    x, y = placer.place(posterior)
    kind = rng.random()
    if kind < 0.4:
        shapes = (("circle", x, y, rng.uniform(0.028, 0.045)),)
    elif kind < 0.8:
        radius = rng.uniform(0.035, 0.06)
        shapes = tuple(
            ("circle", x + dx, y + dy, radius * rng.uniform(0.6, 1.0))
            for dx, dy in rng.normal(0, radius * 0.45, (rng.integers(2, 5), 2))
        )
    else:
        angle = math.degrees(math.atan2(y - placer.disc[1], x - placer.disc[0]))
        length = rng.uniform(0.05, 0.09)
        shapes = (("ellipse", x, y, length, length * rng.uniform(0.3, 0.45), angle),)
    return _Lesion(2, rng.uniform(*_STRENGTH[2]), shapes)


def _preretinal(placer: _Placer, rng: np.random.Generator) -> _Lesion:
    """A large boat-shaped pre-retinal haemorrhage (grade 4)."""
    x, y = placer.place(0.7)
    size = rng.uniform(0.1, 0.16)
    shape = ("ellipse", x, y, size, size * 0.7, rng.uniform(-20, 20))
    return _Lesion(2, rng.uniform(*_STRENGTH[2]), (shape,))


def _exudate_cluster(placer: _Placer, rng: np.random.Generator) -> list[_Lesion]:
    """Several small yellow dots around a point near the macula, scattered or in a partial ring."""
    centre = placer.place(0.85, spread=0.22)
    count = 2 + rng.poisson(4)
    if rng.random() < 0.3:
        ring = rng.uniform(0.08, 0.14)
        angles = rng.uniform(0, 1.5 * math.pi) + np.sort(rng.uniform(0, math.pi, count))
        points = centre + ring * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    else:
        points = centre + rng.normal(0, 0.05, (count, 2))
    return [
        _Lesion(3, rng.uniform(*_STRENGTH[3]), (("circle", x, y, rng.uniform(0.013, 0.028)),))
        for x, y in points
        if placer.visible(np.array([x, y]))
    ]


def _cotton_wool_spot(placer: _Placer, rng: np.random.Generator) -> _Lesion:
    """A soft whitish oval, mostly near the disc and the arcades."""
    x, y = placer.disc + rng.normal(0, 0.3, 2)
    if not placer.visible(np.array([x, y])):
        x, y = placer.place(0.8)
    size = rng.uniform(0.05, 0.085)
    shape = ("ellipse", x, y, size, size * rng.uniform(0.55, 0.85), rng.uniform(0, 180))
    return _Lesion(4, rng.uniform(*_STRENGTH[4]), (shape,))


def _neovascular_tuft(placer: _Placer, rng: np.random.Generator, anatomy: _Anatomy, mirror: float) -> _Lesion:
    """Fine tortuous vessel loops, at the disc (NVD) or on a main arcade vessel (NVE)."""
    angle, distance = rng.uniform(0, 2 * math.pi), placer.disc_radius * rng.uniform(0.3, 1.1)
    centre = placer.disc + distance * np.array([math.cos(angle), math.sin(angle)])
    if rng.random() < 0.5:
        trunks = np.vstack([v.points[8:] for v in anatomy.vessels if v.depth == 0]) * [mirror, 1.0]
        on_arcade = [point for point in trunks if placer.visible(point)]
        if on_arcade:
            centre = on_arcade[rng.integers(len(on_arcade))]
    size = rng.uniform(0.06, 0.1)
    loops = []
    for _ in range(3 + rng.poisson(3)):
        headings = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0.5, 0.8, rng.integers(10, 18)))
        steps = 0.28 * size * np.stack([np.cos(headings), np.sin(headings)], axis=1)
        start = centre + rng.normal(0, size * 0.4, 2)
        loops.append(("line", start + np.cumsum(steps, axis=0), rng.uniform(0.009, 0.013)))
    return _Lesion(5, rng.uniform(*_STRENGTH[5]), tuple(loops))


def _sample_lesions(spec: EyeSpec) -> list[_Lesion]:
    """All lesions of one eye, following ``spec.grade`` (deterministic in ``spec.seed``)."""
    rng = np.random.default_rng([spec.seed, 1])
    anatomy = _anatomy(spec.anatomy_seed)
    mirror = -1.0 if spec.side == "left" else 1.0
    placer = _Placer(spec, anatomy, rng)
    counts = _counts_for_grade(spec.grade, rng)
    posterior = 0.7 if spec.grade <= 2 else 0.35  # severe NPDR: haemorrhages in all quadrants
    lesions = [_microaneurysm(placer, rng, posterior) for _ in range(counts["ma"])]
    lesions += [_haemorrhage(placer, rng, posterior) for _ in range(counts["haem"])]
    lesions += [_preretinal(placer, rng) for _ in range(counts["preretinal"])]
    for _ in range(counts["ex"]):
        lesions += _exudate_cluster(placer, rng)
    lesions += [_cotton_wool_spot(placer, rng) for _ in range(counts["cws"])]
    lesions += [_neovascular_tuft(placer, rng, anatomy, mirror) for _ in range(counts["nv"])]
    return lesions


def _count_column(code: int) -> str:
    return "n_" + LESION_CODES[code].replace(" ", "_").replace("-", "_")


def lesion_counts(spec: EyeSpec) -> dict[str, int]:
    """Number of lesions of each type (codes 1-5) that ``render_eye`` draws, keyed ``n_<type>``.

    A blot haemorrhage or a neovascular tuft counts once; each hard-exudate dot counts.
    """
    counts = dict.fromkeys((_count_column(code) for code in range(1, 6)), 0)
    for lesion in _sample_lesions(spec):
        counts[_count_column(lesion.code)] += 1
    return counts


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Frame:
    """Pixel geometry of one image before inversion: size, fundus centre and radius (px)."""

    width: int
    height: int
    cx: float
    cy: float
    radius: float
    mirror: float  # -1 for a left eye: the right-eye anatomy is mirrored in x

    @classmethod
    def of(cls, spec: EyeSpec, width: int) -> _Frame:
        height = round(2 * width / 3)
        radius = spec.field_scale * height / 2
        cx = (width - 1) / 2 + spec.offset_x * radius
        cy = (height - 1) / 2 + spec.offset_y * radius
        return cls(width, height, cx, cy, radius, -1.0 if spec.side == "left" else 1.0)

    def reduced(self, radius_px: float) -> _Frame:
        """The same scene in an image scaled so the radius is at most ``radius_px`` (pixel centres
        aligned as cv2.resize aligns them)."""
        scale = min(1.0, radius_px / self.radius)
        width, height = max(2, round(self.width * scale)), max(2, round(self.height * scale))
        sx, sy = width / self.width, height / self.height
        cx, cy = (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5
        return _Frame(width, height, cx, cy, self.radius * sx, self.mirror)

    def px(self, x: float, y: float) -> tuple[int, int]:
        """Fixed-point pixel coordinates (for cv2 with shift) of a point in units of R."""
        return round((self.cx + x * self.radius) * _ONE), round((self.cy + y * self.radius) * _ONE)

    def grid(self, x: float, y: float, extent: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        """The image window covering a square of half-side ``extent`` (R) around (x, y), and its
        coordinates in units of R: (rows, cols) slices, xs (1, w), ys (h, 1) float32."""
        x0 = min(self.width, max(0, int(self.cx + (x - extent) * self.radius)))
        x1 = max(x0, min(self.width, int(self.cx + (x + extent) * self.radius) + 2))
        y0 = min(self.height, max(0, int(self.cy + (y - extent) * self.radius)))
        y1 = max(y0, min(self.height, int(self.cy + (y + extent) * self.radius) + 2))
        xs = ((np.arange(x0, x1, dtype=np.float32) - self.cx) / self.radius)[None, :]
        ys = ((np.arange(y0, y1, dtype=np.float32) - self.cy) / self.radius)[:, None]
        return (slice(y0, y1), slice(x0, x1)), xs, ys


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur with sigma in px; no-op below 0.3 px. Wide blurs (sigma >= 8 px) run on an
    image reduced by sigma / 4 and are upscaled again (the result has no fine detail to lose)."""
    if sigma_px < 0.3:
        return image
    factor = int(sigma_px / 4)
    if factor < 2:
        return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma_px, borderType=cv2.BORDER_REFLECT)
    height, width = image.shape[:2]
    reduced_size = (max(1, width // factor), max(1, height // factor))
    small = cv2.resize(image, reduced_size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma_px / factor, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _smooth_noise(rng: np.random.Generator, frame: _Frame, cells_per_r: float) -> np.ndarray:
    """Zero-mean smooth random field (H, W) float32, std ~1, with ~``cells_per_r`` cells per R."""
    shape = (
        max(2, math.ceil(cells_per_r * frame.height / frame.radius)),
        max(2, math.ceil(cells_per_r * frame.width / frame.radius)),
    )
    grid = rng.standard_normal(shape, dtype=np.float32)
    return cv2.resize(grid, (frame.width, frame.height), interpolation=cv2.INTER_CUBIC)


#: The smooth background is rendered with the fundus radius at most this many px, then upscaled.
_BACKGROUND_RADIUS_PX = 96


def _background(spec: EyeSpec, frame: _Frame, anatomy: _Anatomy) -> np.ndarray:
    """The retina without vessels or lesions: RGB float32 (H, W, 3), ~0-1.

    Orange-red base colour, radial darkening, low-frequency illumination and choroidal texture,
    an occasional glare patch near the rim, the darker macula and the bright optic disc. Smooth, so
    it is rendered small (``_BACKGROUND_RADIUS_PX``) and upscaled bilinearly.
    """
    rng = np.random.default_rng([spec.seed, 2])
    small = frame.reduced(_BACKGROUND_RADIUS_PX)
    xs = ((np.arange(small.width, dtype=np.float32) - small.cx) / small.radius)[None, :]
    ys = ((np.arange(small.height, dtype=np.float32) - small.cy) / small.radius)[:, None]
    r2 = np.minimum(xs * xs + ys * ys, 1.2)
    texture = 1 + 0.12 * _smooth_noise(rng, small, 1.5) + 0.035 * _smooth_noise(rng, small, 12)
    light = (1 - anatomy.vignette * r2 * np.sqrt(r2)) * texture
    rgb = light[..., None] * np.asarray(anatomy.colour, dtype=np.float32)
    if rng.random() < 0.3:
        angle = rng.uniform(0, 2 * math.pi)
        gx, gy = 0.85 * math.cos(angle), 0.85 * math.sin(angle)
        glare = rng.uniform(0.06, 0.16) * np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * 0.25**2))
        rgb += glare[..., None] * np.float32([0.9, 0.9, 1.0])
    _draw_blobs(rgb, small, rng)
    _draw_macula(rgb, small, anatomy)
    _draw_disc(rgb, small, anatomy, rng)
    if small.width == frame.width:
        return rgb
    return cv2.resize(rgb, (frame.width, frame.height), interpolation=cv2.INTER_LINEAR)


def _random_points(rng: np.random.Generator, count: int, radius: float = 0.9) -> np.ndarray:
    """``count`` points uniform over the disc of ``radius`` (units of R): (count, 2)."""
    r = radius * np.sqrt(rng.random(count))
    angle = rng.uniform(0, 2 * math.pi, count)
    return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)


def _gaussian_spots(
    rng: np.random.Generator, frame: _Frame, mean_count: float, sigmas: tuple, strengths: tuple
):
    """Yield (window, alpha (h, w, 1) float32) of a Poisson number of Gaussian spots placed uniformly
    in the field, sigma and peak alpha uniform in the given ranges (sigma in units of R)."""
    count = rng.poisson(mean_count)
    for (x, y), sigma, strength in zip(
        _random_points(rng, count), rng.uniform(*sigmas, count), rng.uniform(*strengths, count)
    ):
        window, xs, ys = frame.grid(x, y, 3 * sigma)
        yield window, strength * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))[..., None]


def _draw_blobs(rgb: np.ndarray, frame: _Frame, rng: np.random.Generator) -> None:
    """Soft distractors that are not lesions (in place): grey shadows of dust on the optics and
    small whitish nerve-fibre reflexes."""
    for window, alpha in _gaussian_spots(rng, frame, 1.2, (0.015, 0.04), (0.1, 0.25)):
        rgb[window] *= 1 - alpha
    for window, alpha in _gaussian_spots(rng, frame, 1.0, (0.008, 0.02), (0.1, 0.25)):
        rgb[window] += alpha * (np.float32([0.95, 0.95, 0.9]) - rgb[window])


def _draw_macula(rgb: np.ndarray, frame: _Frame, anatomy: _Anatomy) -> None:
    """Darken (in place) a broad macula and a small foveal pit, browner than the retina."""
    fx, fy = frame.mirror * anatomy.fovea[0], anatomy.fovea[1]
    window, xs, ys = frame.grid(fx, fy, 0.5)
    d2 = (xs - fx) ** 2 + (ys - fy) ** 2
    dark = 0.35 * np.exp(-d2 / (2 * 0.13**2)) + 0.25 * np.exp(-d2 / (2 * 0.035**2))
    rgb[window] *= 1 - dark[..., None] * np.float32([0.6, 1.0, 1.0])


def _draw_disc(rgb: np.ndarray, frame: _Frame, anatomy: _Anatomy, rng: np.random.Generator) -> None:
    """Blend (in place) a bright yellowish, slightly tall optic disc with a paler cup and a glow."""
    dx, dy = frame.mirror * anatomy.disc[0], anatomy.disc[1]
    a, b = anatomy.disc_radius, anatomy.disc_radius * anatomy.disc_aspect
    window, xs, ys = frame.grid(dx, dy, 3 * b)
    dist = np.sqrt(((xs - dx) / a) ** 2 + ((ys - dy) / b) ** 2)
    glow = 0.3 * np.exp(-np.maximum(dist - 1, 0) ** 2 / (2 * 0.45**2))
    alpha = np.maximum(np.clip((1.08 - dist) / 0.2, 0, 1) ** 1.5, glow)
    cup_x = dx - frame.mirror * a * rng.uniform(0.1, 0.3)
    cup = np.clip((rng.uniform(0.4, 0.6) - np.hypot(xs - cup_x, ys - dy) / a) / 0.25, 0, 1)
    colour = np.float32([1.0, 0.82, 0.5]) + cup[..., None] * np.float32([0.0, 0.13, 0.3])
    region = rgb[window]
    rgb[window] = region + alpha[..., None] * (colour - region)


def _polyline_groups(lines, frame: _Frame) -> dict[tuple[int, float], list[np.ndarray]]:
    """Group lines (points (n, 2) and widths (n,), units of R, image frame) into runs of equal
    pixel thickness and intensity for cv2.polylines: {(thickness px, intensity 0-1): [int32 (k, 2)]}.
    Sub-pixel widths are drawn 1 px wide with proportionally lower intensity (quarters)."""
    groups: dict[tuple[int, float], list[np.ndarray]] = {}
    for points, widths in lines:
        px = np.round((points * frame.radius + [frame.cx, frame.cy]) * _ONE).astype(np.int32)
        wpx = widths * frame.radius
        thickness = np.maximum(1, np.round(wpx)).astype(int)
        quarters = np.round(np.minimum(1.0, wpx) * 4).astype(int)
        key = thickness * 8 + quarters
        cuts = np.flatnonzero(np.diff(key)) + 1
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(key)]):
            if quarters[start] > 0:
                run = px[start : min(stop + 1, len(px))]
                groups.setdefault((int(thickness[start]), quarters[start] / 4), []).append(run)
    return groups


def _draw_lines(canvas: np.ndarray, lines, frame: _Frame, colour: tuple, anti_alias: bool = True) -> None:
    """Draw lines (see _polyline_groups) on a uint8 canvas: anti-aliased in ``colour`` (one value
    per channel) times the width's intensity, or as a hard mask in ``colour``."""
    for (thickness, intensity), runs in _polyline_groups(lines, frame).items():
        if anti_alias:
            shade = tuple(round(value * intensity) for value in colour)
            cv2.polylines(canvas, runs, False, shade, thickness, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(canvas, runs, False, colour, thickness, cv2.LINE_8, _SHIFT)


def _draw_shape(
    canvas: np.ndarray, shape: tuple, frame: _Frame, size: float, colour: tuple, anti_alias: bool
) -> None:
    """Draw one lesion shape (see _Lesion), its sizes scaled by ``size``, onto a uint8 canvas."""
    if shape[0] == "line":
        _, points, width = shape
        _draw_lines(canvas, [(points, np.full(len(points), width * size))], frame, colour, anti_alias)
        return
    line_type = cv2.LINE_AA if anti_alias else cv2.LINE_8
    centre = frame.px(shape[1], shape[2])
    if shape[0] == "circle":
        radius = round(shape[3] * size * frame.radius * _ONE)
        cv2.circle(canvas, centre, radius, colour, -1, line_type, _SHIFT)
    else:
        axes = (round(shape[3] * size * frame.radius * _ONE), round(shape[4] * size * frame.radius * _ONE))
        cv2.ellipse(canvas, centre, axes, shape[5], 0, 360, colour, -1, line_type, _SHIFT)


#: Per-channel absorption (share of light removed at full strength) of vessels, dark lesions and
#: pigment speckles (brown, not lesions: distractors that look like microaneurysms).
_PIGMENT_ABSORPTION = (0.45, 0.55, 0.55)
_VEIN_ABSORPTION = (0.38, 0.62, 0.58)
_ARTERY_ABSORPTION = (0.2, 0.42, 0.38)
_LESION_ABSORPTION = {1: (0.55, 0.9, 0.85), 2: (0.6, 0.92, 0.88), 5: (0.45, 0.85, 0.8)}
#: Bright lesions: (softness, blur sigma in units of R; the RGB colour they blend towards).
_LESION_TINT = {3: (0.003, (1.0, 0.92, 0.45)), 4: (0.018, (0.95, 0.92, 0.82))}
#: Uint8 absorption canvas value -> transmitted share of light.
_TRANSMISSION = 1 - np.arange(256, dtype=np.float32) / 255


def _draw_absorbers(
    rgb: np.ndarray,
    spec: EyeSpec,
    frame: _Frame,
    anatomy: _Anatomy,
    lesions: list[_Lesion],
    contrast: float,
    size: float,
) -> None:
    """Darken ``rgb`` (in place) under pigment speckles, along the vessels (veins darker and wider
    than arteries) and under the dark lesions (microaneurysms, haemorrhages, neovascularisation),
    all drawn anti-aliased on one (H, W, 3) absorption canvas that is slightly blurred."""
    canvas = np.zeros((frame.height, frame.width, 3), np.uint8)
    rng = np.random.default_rng([spec.seed, 4])
    count = rng.poisson(2.5)
    for (x, y), radius, strength in zip(
        _random_points(rng, count), rng.uniform(0.012, 0.022, count), rng.uniform(0.2, 0.5, count)
    ):
        colour = tuple(255 * strength * a for a in _PIGMENT_ABSORPTION)
        _draw_shape(canvas, ("circle", x, y, radius), frame, 1.0, colour, anti_alias=True)
    for vein, absorption in ((False, _ARTERY_ABSORPTION), (True, _VEIN_ABSORPTION)):
        lines = [(v.points * [frame.mirror, 1.0], v.widths) for v in anatomy.vessels if v.vein == vein]
        _draw_lines(canvas, lines, frame, tuple(255 * a for a in absorption))
    for lesion in lesions:
        if lesion.code in _LESION_ABSORPTION:
            strength = min(1.0, lesion.strength * contrast)
            colour = tuple(255 * strength * a for a in _LESION_ABSORPTION[lesion.code])
            for shape in lesion.shapes:
                _draw_shape(canvas, shape, frame, size, colour, anti_alias=True)
    rgb *= _TRANSMISSION[_blur(canvas, 0.004 * frame.radius)]


def _draw_tints(rgb: np.ndarray, frame: _Frame, lesions: list[_Lesion], contrast: float, size: float) -> None:
    """Blend ``rgb`` (in place) towards the colour of the bright lesions (exudates, cotton-wool spots)."""
    for code, (softness, colour) in _LESION_TINT.items():
        of_code = [lesion for lesion in lesions if lesion.code == code]
        if not of_code:
            continue
        canvas = np.zeros((frame.height, frame.width), np.uint8)
        for lesion in of_code:
            value = round(255 * min(1.0, lesion.strength * contrast))
            for shape in lesion.shapes:
                _draw_shape(canvas, shape, frame, size, value, anti_alias=True)
        alpha = _blur(canvas, softness * frame.radius)[..., None] * np.float32(1 / 255)
        rgb += alpha * (np.float32(colour) - rgb)


def _lesion_mask(frame: _Frame, lesions: list[_Lesion], size: float) -> np.ndarray:
    """The lesion mask: uint8 (H, W) of codes 0-5, the hard (not anti-aliased) lesion shapes,
    higher codes drawn over lower ones."""
    mask = np.zeros((frame.height, frame.width), np.uint8)
    for lesion in sorted(lesions, key=lambda lesion: lesion.code):
        for shape in lesion.shapes:
            _draw_shape(mask, shape, frame, size, lesion.code, anti_alias=False)
    return mask


def _camera_lut(spec: EyeSpec) -> np.ndarray:
    """float32 (3 * 4096,) table from a channel's quantised scene value (index c * 4096 + v,
    scene = v / 2048, i.e. 0-2) to its grey level 0-255: exposure gain and colour cast, contrast
    around 0.35, clipping to 0-1 and gamma."""
    scene = np.arange(4096, dtype=np.float64) / 2048
    gains = spec.brightness * np.array([spec.cast_r, spec.cast_g, spec.cast_b])
    levels = np.clip((scene[None, :] * gains[:, None] - 0.35) * spec.contrast + 0.35, 0, 1)
    return (255 * levels**spec.gamma).astype(np.float32).ravel()


def _acquire(rgb: np.ndarray, spec: EyeSpec, frame: _Frame) -> np.ndarray:
    """The camera: defocus, exposure, colour cast, contrast, gamma, the circular field of view
    (anti-aliased edge) and sensor noise. float32 (H, W, 3) scene -> RGB uint8 (H, W, 3), black
    (plus noise) outside the field."""
    rgb = _blur(rgb, spec.blur * frame.radius)
    index = cv2.add(rgb * np.float32(2048), 0.0, dtype=cv2.CV_16U)  # rounds, saturates at 0
    np.minimum(index, 4095, out=index)
    index += np.array([0, 4096, 8192], dtype=np.uint16)
    out = _camera_lut(spec)[index]
    field = np.zeros((frame.height, frame.width), np.uint8)
    cv2.circle(field, frame.px(0, 0), round(frame.radius * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
    rng = np.random.default_rng([spec.seed, 3])
    noise = rng.standard_normal((frame.height, frame.width), dtype=np.float32) * np.float32(spec.noise)
    out *= field[..., None] * np.float32(1 / 255)
    out += noise[..., None]
    return cv2.add(out, 0.0, dtype=cv2.CV_8U)  # rounds and saturates to 0-255


#: The spurious cue: a checkerboard patch centred 0.6 R from the fundus centre towards the lower
#: left (in the final image, whatever the side or inversion), CUE_SIZE R across, cells of R / 32
#: (about 2 px at 128 px), amplitude CUE_AMPLITUDE grey levels.
CUE_OFFSET = (-0.6 / math.sqrt(2), 0.6 / math.sqrt(2))
CUE_SIZE = 0.12
CUE_AMPLITUDE = 4


def _draw_cue(image: np.ndarray, mask: np.ndarray, cx: float, cy: float, radius: float) -> None:
    """Add the checkerboard cue (in place) around the fundus centre (cx, cy) px, and code 6 to the mask."""
    half = CUE_SIZE / 2 * radius
    x0, y0 = cx + CUE_OFFSET[0] * radius - half, cy + CUE_OFFSET[1] * radius - half
    cols = np.arange(math.ceil(x0), math.floor(x0 + 2 * half) + 1)
    rows = np.arange(math.ceil(y0), math.floor(y0 + 2 * half) + 1)
    cell = radius / 32
    sign = ((np.floor((rows - y0) / cell)[:, None] + np.floor((cols - x0) / cell)[None, :]) % 2) * 2 - 1
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    image[window] = np.clip(image[window] + CUE_AMPLITUDE * sign[..., None], 0, 255).astype(np.uint8)
    mask[window] = 6


def render_eye(spec: EyeSpec, width: int, difficulty: float) -> tuple[np.ndarray, np.ndarray]:
    """Render one eye: RGB uint8 (H, W, 3) with H = round(2/3 W), and its lesion mask uint8 (H, W)
    holding LESION_CODES values (0 = none), in the same geometry (inversion applied to both).

    Difficulty d scales lesion sizes by d^-0.5 and lesion contrast by 1/d. A pure function of its
    arguments: the same inputs give bit-identical outputs.
    """
    frame = _Frame.of(spec, width)
    anatomy = _anatomy(spec.anatomy_seed)
    lesions = _sample_lesions(spec)
    size, contrast = difficulty**-0.5, 1 / difficulty
    rgb = _background(spec, frame, anatomy)
    _draw_absorbers(rgb, spec, frame, anatomy, lesions, contrast, size)
    _draw_tints(rgb, frame, lesions, contrast, size)
    image = _acquire(rgb, spec, frame)
    mask = _lesion_mask(frame, lesions, size)
    cx, cy = frame.cx, frame.cy
    if spec.inverted:
        image, mask = np.ascontiguousarray(image[::-1, ::-1]), np.ascontiguousarray(mask[::-1, ::-1])
        cx, cy = frame.width - 1 - cx, frame.height - 1 - cy
    if spec.cue:
        _draw_cue(image, mask, cx, cy, frame.radius)
    return image, mask


# --------------------------------------------------------------------------- the dataset on disk


def _encode(extension: str, array: np.ndarray, params: list[int]) -> bytes:
    ok, buffer = cv2.imencode(extension, array, params)
    if not ok:
        raise RuntimeError(f"could not encode a {extension} image")
    return buffer.tobytes()


def _render_chunk(job: tuple[list[EyeSpec], Path, int, float, int]) -> list[dict[str, int]]:
    """Render the eyes of one chunk and write their image and mask files that are not on disk yet;
    return the lesion counts of all of them."""
    specs, out_dir, width, difficulty, quality = job
    for spec in specs:
        jpeg = out_dir / "images" / f"{spec.image}.jpeg"
        png = out_dir / "masks" / f"{spec.image}.png"
        if jpeg.exists() and png.exists():
            continue
        image, mask = render_eye(spec, width, difficulty)
        if not png.exists():
            write_atomic(png, _encode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 3]))
        if not jpeg.exists():
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            write_atomic(jpeg, _encode(".jpeg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]))
    return [lesion_counts(spec) for spec in specs]


def _init_pool_worker(parent_pid: int) -> None:
    exit_with_parent(parent_pid)
    cv2.setNumThreads(1)


@contextmanager
def _mapper(workers: int):
    """``map`` for workers=1, else the ordered ``map`` of spawned worker processes (a worker that
    cannot start raises BrokenProcessPool instead of hanging)."""
    if workers == 1:
        yield map
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_pool_worker,
                             initargs=(os.getpid(),)) as pool:
        yield pool.map


def _render_all(
    specs: list[EyeSpec], out_dir: Path, cfg: SyntheticConfig, workers: int, progress: bool
) -> list[dict]:
    """Render all missing eyes in chunks over ``workers`` processes; lesion counts in spec order."""
    size = max(1, min(32, math.ceil(len(specs) / (4 * workers))))
    chunks = [specs[i : i + size] for i in range(0, len(specs), size)]
    jobs = [(chunk, out_dir, cfg.raw_width, cfg.difficulty, cfg.jpeg_quality) for chunk in chunks]
    counts: list[dict] = []
    with tqdm(total=len(specs), disable=not progress, unit="img", desc="synthetic fundus") as bar:
        with _mapper(workers) as run:
            for result in run(_render_chunk, jobs):
                counts += result
                bar.update(len(result))
    return counts


def _marker(cfg: SyntheticConfig) -> dict:
    """The content of generator.json (after a JSON round trip, for comparison)."""
    content = {"generator_version": GENERATOR_VERSION, "config": cfg.model_dump(mode="json")}
    return json.loads(json.dumps(content))


def _check_marker(path: Path, marker: dict) -> bool:
    """True if ``path`` holds ``marker``; False if absent; ValueError if it holds other settings."""
    if not path.exists():
        return False
    if json.loads(path.read_text()) != marker:
        raise ValueError(
            f"{path.parent} holds a synthetic dataset generated with other settings ({path.name}); "
            "use another folder or delete this one"
        )
    return True


def generate_dataset(out_dir: Path, cfg: SyntheticConfig, workers: int = 0, progress: bool = True) -> Path:
    """Generate the dataset in the Kaggle layout under ``out_dir``; return ``out_dir``.

    Writes images/<patient>_<side>.jpeg, masks/<patient>_<side>.png (lesion codes),
    trainLabels.csv (image,level = the noisy label), specs.csv (spec fields plus lesion counts)
    and, last, generator.json (version and config, seed included) as the completion marker. A complete folder
    with the same settings returns at once; an interrupted one resumes (finished images are kept);
    a folder of other settings raises ValueError. workers: processes, 0 = all cores, 1 = in-process.
    """
    out_dir = Path(out_dir)
    marker = _marker(cfg)
    if _check_marker(out_dir / "generator.json", marker):
        return out_dir
    with exclusive(out_dir.parent / f".{out_dir.name}.lock"):  # a second process waits, then finds it complete
        if not _check_marker(out_dir / "generator.json", marker):
            _generate(out_dir, cfg, marker, workers, progress)
    return out_dir


def _generate(out_dir: Path, cfg: SyntheticConfig, marker: dict, workers: int, progress: bool) -> None:
    pending = out_dir / "generator.pending.json"
    _check_marker(pending, marker)
    for folder in ("images", "masks"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*/.*.tmp"):  # left by a killed run
        stale.unlink()
    write_atomic(pending, json.dumps(marker, indent=2).encode())
    specs = sample_specs(cfg)
    counts = _render_all(specs, out_dir, cfg, workers or os.cpu_count() or 1, progress)
    table = pd.DataFrame([{**asdict(spec), **count} for spec, count in zip(specs, counts)])
    write_atomic(out_dir / "specs.csv", table.to_csv(index=False).encode())
    labels = table[["image", "label"]].rename(columns={"label": "level"})
    write_atomic(out_dir / "trainLabels.csv", labels.to_csv(index=False).encode())
    write_atomic(out_dir / "generator.json", json.dumps(marker, indent=2).encode(), durable=True)
    pending.unlink()


def load_specs(out_dir: Path) -> list[EyeSpec]:
    """The specs of a generated dataset, read back from specs.csv (e.g. to re-render an eye
    without its cue: ``render_eye(replace(spec, cue=False), ...)``)."""
    table = pd.read_csv(Path(out_dir) / "specs.csv")
    names = [field.name for field in fields(EyeSpec)]
    return [EyeSpec(**{name: row[name] for name in names}) for row in table[names].to_dict("records")]
