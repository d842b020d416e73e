"""Oversampling and SMOTE on images, SMOTE checked against imbalanced-learn."""

from __future__ import annotations

import numpy as np
from imblearn.over_sampling import SMOTE

from fundus_lib.training.sampling import oversample, smote_images, smote_plan

LABELS = np.array([0] * 40 + [1] * 7 + [2] * 12 + [3] * 3 + [4] * 1)


def test_oversampling_equalises_class_counts():
    positions = oversample(LABELS, np.random.default_rng(0))
    assert np.bincount(LABELS[positions]).tolist() == [40] * 5
    for grade in range(5):  # whole copies first: every image appears floor(40 / n) or one more times
        counts = np.bincount(positions[LABELS[positions] == grade], minlength=len(LABELS))[LABELS == grade]
        assert counts.max() - counts.min() <= 1


def test_oversampling_is_seeded():
    first = oversample(LABELS, np.random.default_rng(1))
    assert np.array_equal(first, oversample(LABELS, np.random.default_rng(1)))
    assert not np.array_equal(first, oversample(LABELS, np.random.default_rng(2)))


def features(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (5, 12))
    return (centres[LABELS] + rng.normal(0, 1, (len(LABELS), 12))).astype(np.float32)


def segment_position(point, start, end):
    """u with point = start + u (end - start), and the distance of point from that segment's line."""
    direction = end - start
    u = float(np.dot(point - start, direction) / max(np.dot(direction, direction), 1e-12))
    return u, float(np.linalg.norm(start + u * direction - point))


def test_smote_plan_makes_convex_combinations_of_same_class_neighbours():
    x = features()
    base, neighbour, step, grades = smote_plan(x, LABELS, k=5, rng=np.random.default_rng(0))
    assert (LABELS[base] == grades).all() and (LABELS[neighbour] == grades).all()
    assert ((0 <= step) & (step < 1)).all()
    for grade in range(1, 5):  # every neighbour is among the base's k nearest same-class images
        members = np.flatnonzero(LABELS == grade)
        for b, n in zip(base[grades == grade], neighbour[grades == grade]):
            distances = np.linalg.norm(x[members] - x[b], axis=1)
            rank = np.argsort(distances, kind="stable").tolist().index(list(members).index(n))
            assert 1 <= rank <= min(5, len(members) - 1) or len(members) == 1


def test_smote_matches_imbalanced_learn():
    """Same resampled class counts as imblearn's SMOTE, and both produce only points on segments
    between a sample and one of its k same-class nearest neighbours, with steps spread over [0, 1)."""
    x = features()
    labels = LABELS[LABELS != 4]  # imblearn needs more than k samples per class
    x = x[LABELS != 4]
    k = 2
    reference_x, reference_y = SMOTE(k_neighbors=k, random_state=0).fit_resample(x, labels)
    base, neighbour, step, grades = smote_plan(x, labels, k=k, rng=np.random.default_rng(0))
    assert np.bincount(np.concatenate([labels, grades])).tolist() == np.bincount(reference_y).tolist()
    for synthetic, grade in zip(reference_x[len(x) :], reference_y[len(x) :]):
        members = x[labels == grade]
        fits = [segment_position(synthetic, a, b) for a in members for b in members if a is not b]
        assert min(distance for u, distance in fits if -1e-6 <= u <= 1 + 1e-6) < 1e-3
    assert 0.3 < step.mean() < 0.7 and step.std() > 0.2


def test_smote_images_are_cached_with_their_generation_time(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (len(LABELS), 8, 8, 3)).astype(np.uint8)
    synthetic, grades, seconds = smote_images(images, LABELS, tmp_path / "smote", k=3, seed=0, progress=False)
    assert synthetic.shape == (4 * 40 - (len(LABELS) - 40), 8, 8, 3) and synthetic.dtype == np.uint8
    assert np.bincount(np.concatenate([LABELS, grades])).tolist() == [40] * 5
    assert seconds > 0
    again, _, seconds_again = smote_images(images, LABELS, tmp_path / "smote", k=3, seed=0, progress=False)
    assert np.array_equal(again, synthetic) and seconds_again == seconds
    single = synthetic[grades == 4]  # one image of grade 4: its copies
    assert (single == images[LABELS == 4][0]).all()


def test_smote_keeps_pixels_between_the_two_parents(tmp_path):
    images = np.stack([np.full((4, 4, 3), value, np.uint8) for value in (0, 100, 200, 250, 10, 20)])
    labels = np.array([0, 0, 0, 0, 1, 1])
    synthetic, grades, _ = smote_images(images, labels, tmp_path, k=1, seed=3, progress=False)
    assert (grades == 1).all() and len(synthetic) == 2
    assert ((synthetic >= 10) & (synthetic <= 20)).all()


def test_a_balanced_draw_keeps_the_length_and_evens_the_grades():
    from fundus_lib.training.sampling import balanced_draw

    labels = np.repeat(np.arange(5), [740, 70, 150, 25, 15])
    drawn = balanced_draw(labels, np.random.default_rng(0))
    assert len(drawn) == len(labels)
    shares = np.bincount(labels[drawn], minlength=5) / len(drawn)
    assert np.allclose(shares, 0.2, atol=0.04)
    assert (balanced_draw(labels, np.random.default_rng(0)) == drawn).all()
