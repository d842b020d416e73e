"""Duplicate photographs and conflicting labels: found, reported and decided here, in one place.

The cache records each file's content hash (sha1). Byte-identical files are the same photograph
under two names; public sets have them (IDRiD's grading set: six pairs, four with other grades).
The policy, applied where the data is prepared (before the split) and to external test sets:

- a group of byte-identical photographs whose grades agree is kept **once** (the first in the
  manifest's order); the others become ``skipped`` rows with the reason ``duplicate of <image>``;
- a group whose grades disagree is **excluded altogether** (its true grade is unknown): every
  member becomes ``skipped`` with the reason ``conflicting duplicate: ...`` naming the others and
  their grades, so it is neither trained nor tested on, and is counted;
- a test photograph byte-identical to a training photograph is excluded from the test
  (``duplicate of training image <image>``).

Near-duplicates (the same photograph re-encoded or resized) are reported, not removed: a 256-bit
difference hash of each cached (Graham-filtered) image, compared by Hamming distance. Measured on
IDRiD: its segmentation photographs (4288 px originals) lie at 7-18 bits from their grading
copies (768 px, re-encoded) where they have one, unrelated photographs at 55 bits or more.

Example::

    manifest = resolve_duplicates(cache.manifest)
    manifest["reason"].str.startswith(DUPLICATE).sum()
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

#: How every skip reason of this module starts ("duplicate of ...", "conflicting duplicate: ...").
DUPLICATE = "duplicate"
CONFLICTING = "conflicting duplicate"
#: Side of the difference hash: HASH_SIDE ** 2 bits.
HASH_SIDE = 16
#: Near-duplicates differ in at most this many of the hash's bits (1/8 of them).
NEAR_BITS = HASH_SIDE**2 // 8


def exact_groups(manifest: pd.DataFrame) -> pd.DataFrame:
    """The usable rows whose file content (sha1) another usable row shares: image, level, sha1,
    ``group`` (a number per photograph) and ``conflict`` (the group's grades disagree)."""
    usable = manifest[(manifest["status"] == "ok") & (manifest["sha1"] != "")]
    shared = usable[usable["sha1"].duplicated(keep=False)]
    groups = shared[["image", "level", "sha1"]].assign(group=shared.groupby("sha1", sort=False).ngroup())
    return groups.assign(conflict=groups.groupby("group")["level"].transform("nunique") > 1)


def conflicting_pairs(groups: pd.DataFrame) -> pd.DataFrame:
    """One row per conflicting group: its images and their grades (``a / b``), for a report."""
    conflicts = groups[groups["conflict"]]
    return conflicts.groupby("group").agg(
        images=("image", " / ".join), grades=("level", lambda levels: " / ".join(map(str, levels)))
    )


def _skip(manifest: pd.DataFrame, rows, reasons) -> pd.DataFrame:
    manifest = manifest.copy()
    manifest.loc[rows, "status"] = "skipped"
    manifest.loc[rows, "reason"] = reasons
    return manifest


def resolve_duplicates(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest with byte-identical photographs resolved by the policy above (a copy)."""
    groups = exact_groups(manifest)
    rows, reasons = [], []
    for _, members in groups.groupby("group"):
        if members["conflict"].iloc[0]:
            for row in members.index:
                others = members.drop(row)
                listed = ", ".join(f"{other} (grade {level})" for other, level in zip(others["image"], others["level"]))
                rows.append(row)
                reasons.append(
                    f"{CONFLICTING}: the same file as {listed}, graded {members.at[row, 'level']} here; excluded"
                )
        else:
            first = members["image"].iloc[0]
            rows += list(members.index[1:])
            reasons += [f"{DUPLICATE} of {first} (byte-identical, same grade)"] * (len(members) - 1)
    return _skip(manifest, rows, reasons) if rows else manifest


def exclude_seen(test: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """The test manifest with its photographs byte-identical to a usable training photograph skipped."""
    usable = train.loc[(train["status"] == "ok") & (train["sha1"] != "")]
    seen = usable.drop_duplicates("sha1").set_index("sha1")["image"]
    hit = (test["status"] == "ok") & test["sha1"].isin(seen.index)
    if not hit.any():
        return test
    reasons = [f"{DUPLICATE} of training image {seen[sha1]}" for sha1 in test.loc[hit, "sha1"]]
    return _skip(test, test.index[hit], reasons)


def duplicate_counts(resolved: pd.DataFrame) -> dict[str, int]:
    """Counts of a resolved manifest: photographs dropped as duplicates kept once, photographs
    excluded as conflicting, and the conflicting groups (the same photograph) they form."""
    reasons = resolved.loc[resolved["status"] != "ok", "reason"]
    conflicting = reasons[reasons.str.startswith(CONFLICTING)]
    return {
        "duplicates dropped": int((reasons.str.startswith(DUPLICATE)).sum()),
        "conflicting photographs excluded": len(conflicting),
        "conflicting groups": int(resolved.loc[conflicting.index, "sha1"].nunique()),
    }


def difference_hashes(images: np.ndarray, progress: bool = False) -> np.ndarray:
    """Difference hashes of uint8 images (N, S, S, 3): uint64 (N, HASH_SIDE ** 2 / 64); bit = a pixel
    of the gray image shrunk to HASH_SIDE x (HASH_SIDE + 1) is brighter than its left neighbour."""
    hashes = []
    for image in tqdm(images, desc="hashing", unit="img", disable=not progress):
        gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(gray, (HASH_SIDE + 1, HASH_SIDE), interpolation=cv2.INTER_AREA).astype(np.int16)
        hashes.append(np.packbits(small[:, 1:] > small[:, :-1]).view(np.uint64))
    return np.stack(hashes) if hashes else np.zeros((0, HASH_SIDE**2 // 64), np.uint64)


def near_duplicates(
    hashes_a: np.ndarray, names_a, hashes_b: np.ndarray | None = None, names_b=None, max_bits: int = NEAR_BITS
) -> pd.DataFrame:
    """Pairs within ``max_bits`` of each other: within set a (each pair once), or between a and b.
    Columns image_a, image_b, bits (0 for byte-identical files and for identical-looking ones)."""
    within = hashes_b is None
    hashes_b, names_b = (hashes_a, names_a) if within else (hashes_b, names_b)
    names_a, names_b = np.asarray(names_a), np.asarray(names_b)
    pairs = []
    for start in range(0, len(hashes_a), 512):
        block = hashes_a[start : start + 512]
        bits = np.bitwise_count(block[:, None, :] ^ hashes_b[None, :, :]).sum(axis=2)
        for i, j in zip(*np.nonzero(bits <= max_bits)):
            if not within or start + i < j:
                pairs.append((names_a[start + i], names_b[j], int(bits[i, j])))
    return pd.DataFrame(pairs, columns=["image_a", "image_b", "bits"])
