"""What the synthetic generator's label noise does, per grade, and the ceiling it puts on any model.

``label_noise`` is the average probability that the grader's label differs from the drawn grade.
The generator moves labels by a kernel that keeps the class balance (``synthetic.sample_specs``),
so the per-grade rates differ widely: the rare grades 1, 3 and 4 are relabelled far more often
than grade 0. A model that knew every true grade (the *oracle*) would still be scored against the
noisy labels: its scores are the ceiling for every model of the book.

Example::

    by_grade(grades, labels)        # per true grade: images, share relabelled, share of its labels that are right
    oracle_scores(grades, labels)   # accuracy, balanced accuracy, kappa of the true grades against the labels
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fundus_lib.metrics import N_CLASSES, scores


def by_grade(grades, labels) -> pd.DataFrame:
    """Per grade 0-4: images of that true grade, the share of them labelled otherwise, and the
    share of the images *labelled* with that grade whose true grade it is."""
    frame = pd.DataFrame({"grade": np.asarray(grades), "label": np.asarray(labels)})
    rows = []
    for grade in range(N_CLASSES):
        true = frame[frame["grade"] == grade]
        labelled = frame[frame["label"] == grade]
        rows.append(
            {
                "grade": grade,
                "images": len(true),
                "labelled otherwise": float((true["label"] != grade).mean()) if len(true) else float("nan"),
                "labels that are right": float((labelled["grade"] == grade).mean()) if len(labelled) else float("nan"),
            }
        )
    return pd.DataFrame(rows).set_index("grade")


def oracle_scores(grades, labels) -> dict[str, float]:
    """The report's metrics of a model that predicts every true grade, scored against the labels."""
    return scores(labels, grades)
