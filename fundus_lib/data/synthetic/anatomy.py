"""The anatomy of a patient's eye (optic disc, macula, vessel tree), shared by both eyes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


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
