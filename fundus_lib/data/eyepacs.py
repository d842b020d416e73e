"""Reader for the Kaggle EyePACS layout: a folder of ``<patient>_<left|right>.jpeg`` and a labels csv.

The images folder and the labels file are given separately (Kaggle ships ``train/`` and
``trainLabels.csv``). Problems with the csv are errors that list the offending rows; problems
with single image files are left to the cache builder, which records them as skips.

Example::

    items = list_images("data/eyepacs/train", "data/eyepacs/trainLabels.csv")
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pandas as pd

from fundus_lib.errors import UserError

#: File name stem -> patient id and eye side. The patient id may carry a prefix
#: (``eyepacs256_1000_left`` -> patient ``eyepacs256_1000``).
STEM_PATTERN = re.compile(r"^(?P<patient>.+)_(?P<side>left|right)$")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff")
GRADES = range(5)
_MAX_LISTED = 10


class LabelsError(UserError, ValueError):
    """The labels csv cannot be used; the message names the file and the offending rows."""


def _rows(frame: pd.DataFrame) -> str:
    lines = [f"line {index + 2}: {row.to_dict()}" for index, row in frame.head(_MAX_LISTED).iterrows()]
    more = len(frame) - _MAX_LISTED
    return "\n  ".join(lines + ([f"... and {more} more"] if more > 0 else []))


def _fail(path: Path, problem: str, rows: pd.DataFrame) -> None:
    raise LabelsError(f"{path}: {problem} ({len(rows)} rows):\n  {_rows(rows)}")


def read_labels(labels_csv: str | Path) -> pd.DataFrame:
    """Read and check a Kaggle labels csv.

    Returns a frame with columns ``image`` (file stem), ``patient`` (str), ``side``
    (``left``/``right``) and ``level`` (int 0-4), in file order. Raises LabelsError for a
    missing file, missing columns, empty or malformed names, duplicate names and levels that
    are not integers in 0-4, listing the offending lines (line 1 is the header; blank lines are
    skipped but counted, so the numbers are the file's).
    """
    path = Path(labels_csv)
    if not path.is_file():
        raise LabelsError(f"labels file not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path} is not a readable csv: {exc}") from None
    missing = [column for column in ("image", "level") if column not in frame.columns]
    if missing:
        raise LabelsError(
            f"{path}: missing column(s) {missing}; found columns {list(frame.columns)}; "
            "expected at least 'image' and 'level' (Kaggle's trainLabels.csv)"
        )
    frame = frame.loc[(frame != "").any(axis=1), ["image", "level"]]  # drop blank lines: the index stays line - 2
    frame = frame.apply(lambda column: column.str.strip())
    if frame.empty:
        raise LabelsError(f"{path} has a header but no rows: add one line <image>,<level> per photograph")
    parts = frame["image"].str.extract(STEM_PATTERN)
    bad_name = parts["patient"].isna()
    if bad_name.any():
        _fail(path, "image names must look like <patient>_left or <patient>_right", frame[bad_name])
    duplicated = frame["image"].duplicated(keep=False)
    if duplicated.any():
        _fail(path, "duplicate image names", frame[duplicated])
    level = pd.to_numeric(frame["level"], errors="coerce")
    bad_level = ~level.isin(list(GRADES))
    if bad_level.any():
        _fail(path, "level must be an integer 0-4", frame[bad_level])
    return pd.DataFrame(
        {
            "image": frame["image"],
            "patient": parts["patient"],
            "side": parts["side"],
            "level": level.astype(int),
        }
    ).reset_index(drop=True)


def _find_file(images_dir: str, stem: str, present: dict[str, str]) -> str:
    """The file of ``stem``; ``present`` maps stem + lower-case suffix to the name on disk (1_left.JPEG)."""
    for suffix in IMAGE_SUFFIXES:
        if stem + suffix in present:
            return os.path.join(images_dir, present[stem + suffix])
    return ""


def list_images(images_dir: str | Path, labels_csv: str | Path, max_images: int | None = None) -> pd.DataFrame:
    """Join the labels with the image files.

    Returns the frame of :func:`read_labels` plus ``path`` (the image file, or ``""`` when no
    file exists: the cache builder records those as skipped, never drops them). Image files
    without a label are not used; their number is reported in a warning.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    all_labels = read_labels(labels_csv)
    labels = all_labels.head(max_images) if max_images is not None else all_labels.copy()
    # Plain strings, not pathlib: this runs for every run a chapter opens (35,126 files on Kaggle).
    split = [os.path.splitext(entry.name) for entry in os.scandir(images_dir)]
    present = {stem + suffix.lower(): stem + suffix for stem, suffix in split if suffix.lower() in IMAGE_SUFFIXES}
    labels["path"] = [_find_file(str(images_dir), stem, present) for stem in labels["image"]]
    unlabelled = len({os.path.splitext(name)[0] for name in present} - set(all_labels["image"]))
    if unlabelled:
        warnings.warn(f"{unlabelled} image file(s) in {images_dir} have no row in {labels_csv}; not used", stacklevel=2)
    return labels.reset_index(drop=True)


def list_subset(
    images_dir: str | Path, labels_csv: str | Path, max_images: int | None = None
) -> tuple[pd.DataFrame, int]:
    """Like :func:`list_images` for a folder that holds a declared subset of the labelled images
    (e.g. a partial copy beside Kaggle's full trainLabels.csv, 35,126 rows).

    Labelled rows without a file are not part of the data set: they are dropped and counted, not
    listed as skipped images. Returns (the images present, in file order, at most ``max_images``;
    the number of labelled rows without a file).
    """
    items = list_images(images_dir, labels_csv)
    present = items[items["path"] != ""]
    if present.empty:
        raise LabelsError(f"none of the {len(items):,} images listed in {labels_csv} is in {images_dir}")
    excluded = len(items) - len(present)
    if max_images is not None:
        present = present.head(max_images)
    return present.reset_index(drop=True), excluded
