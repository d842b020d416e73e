"""Lesions: how many of each kind a grade gets, where and how they are shaped, and their counts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fundus_lib.data.synthetic.anatomy import _Anatomy, _anatomy
from fundus_lib.data.synthetic.specs import EyeSpec

#: Lesion mask codes; 0 = no lesion. Where lesions overlap, the higher code (drawn later) wins.
LESION_CODES: dict[int, str] = {
    1: "microaneurysm",
    2: "haemorrhage",
    3: "hard exudate",
    4: "cotton-wool spot",
    5: "neovascularisation",
    6: "spurious cue",
    7: "distractor",
}
#: The two patches that are not lesions (``render``): codes 1-5 are the lesions.
CUE_CODE, DISTRACTOR_CODE = 6, 7

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
