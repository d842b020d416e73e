"""Eye specs: the grades, labels, cue and acquisition parameters of every eye (``sample_specs``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fundus_lib.config import SyntheticConfig

#: Bump whenever a change alters the rendered images, the specs or the files written.
GENERATOR_VERSION = "2"  # 2: the redesigned cue (referable eyes, 32 grey levels, 0.2 R) and the distractor

N_GRADES = 5
#: The grades that carry the spurious cue: referable DR (ICDR 2-4), the decision a grader makes first.
REFERABLE_GRADE = 2
_MAX_MH_STEPS = 500


@dataclass(frozen=True)
class EyeSpec:
    """Everything needed to render one eye deterministically.

    image: Kaggle name ``<patient>_<side>``; patient: 1..n; side: "left" | "right";
    grade: the true ICDR grade 0-4 (the lesions follow it); label: the grader's label after
    label noise (what trainLabels.csv holds); cue: the spurious cue is drawn; distractor: the
    grade-independent control patch is drawn;
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
    distractor: bool
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
    keep the balance too; the cue is present with probability ``spurious_cue`` on referable eyes
    (true grade 2-4) and never on grades 0-1; the distractor with probability ``distractor`` on
    any eye, drawn from a stream of its own (the other specs do not depend on it).
    """
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_patients
    left, right = _patient_grades(cfg, rng)
    grades = np.stack([left, right], axis=1).ravel()
    balance = np.asarray(cfg.class_balance, dtype=float) / sum(cfg.class_balance)
    labels = _apply_kernel(grades, _move_kernel(balance, cfg.label_noise), rng)
    cues = (rng.random(2 * n) < cfg.spurious_cue) & (grades >= REFERABLE_GRADE)
    distractors = np.random.default_rng([cfg.seed, 1]).random(2 * n) < cfg.distractor
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
                distractor=bool(distractors[i]),
                seed=int(seeds[i]),
                anatomy_seed=int(anatomy_seeds[i]),
                **{key: value[i].item() for key, value in acquisition.items()},
            )
        )
    return specs
