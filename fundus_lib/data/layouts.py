"""Readers for the folder layouts graded photographs come in, each returning cache items.

- ``kaggle``: ``<images>/<patient>_<left|right>.jpeg`` and a csv ``image,level``
  (:mod:`fundus_lib.data.eyepacs`);
- ``idrid``: IDRiD's *Disease Grading* set, ``images/{train,test}/IDRiD_NNN.jpg`` and
  ``labels/{train,test}.csv`` with ``Image name,Retinopathy grade,Risk of macular edema``. The two
  folders reuse the same names, so an image's id carries its folder: ``train/IDRiD_001``;
- ``generic``: any folder of photographs plus a csv that names them, for APTOS-, Messidor- or
  clinic-style folders: ``image_column`` holds the file name, with or without its extension and
  possibly with a sub-folder (``a/b.png``, relative to ``images_dir``), ``grade_column`` the ICDR
  grade 0-4. The image id is the name without extension; patient ids are not known (each image is
  its own patient).

Every reader returns the items of :mod:`fundus_lib.data.cache` (image, patient, side, level, path,
mask_path): a labelled row without a file gets ``path == ""`` and is recorded as a skip by the
cache builder, never dropped. Files without a label are counted in a warning.

Example::

    items = read_folder("../shared/data/idrid_grading")            # IDRiD's layout, detected
    items = read_folder("clinic", images_dir="clinic/photos", labels_csv="clinic/grades.csv",
                        layout="generic", image_column="file", grade_column="dr_grade")
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from fundus_lib.data.eyepacs import GRADES, IMAGE_SUFFIXES, LabelsError, list_images

LAYOUTS = ("kaggle", "idrid", "generic")
IDRID_SPLITS = ("train", "test")
IDRID_COLUMNS = ("Image name", "Retinopathy grade")


def detect_layout(folder: Path) -> str:
    """``idrid`` when ``folder`` holds IDRiD's labels/{train,test}.csv and images/{train,test}; else ``kaggle``."""
    idrid = all(
        (folder / "labels" / f"{split}.csv").is_file() and (folder / "images" / split).is_dir()
        for split in IDRID_SPLITS
    )
    return "idrid" if idrid else "kaggle"


def _files_by_stem(images_dir: Path) -> dict[str, str]:
    """Path relative to ``images_dir`` without extension -> file path, for every image below it."""
    found = {}
    for root, _, names in os.walk(images_dir):
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in IMAGE_SUFFIXES:
                relative = os.path.relpath(os.path.join(root, stem), images_dir).replace(os.sep, "/")
                found[relative] = os.path.join(root, name)
    return found


def _read_csv(path: Path, columns: tuple[str, str]) -> pd.DataFrame:
    if not path.is_file():
        raise LabelsError(f"labels file not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path} is not a readable csv: {exc}") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise LabelsError(
            f"{path}: missing column(s) {missing}; found columns {list(frame.columns)} "
            "(name the image and grade columns with --image-column and --grade-column)"
        )
    frame = frame.loc[(frame[list(columns)] != "").any(axis=1), list(columns)]
    frame = frame.apply(lambda column: column.str.strip())
    if frame.empty:
        raise LabelsError(f"{path} has a header but no rows")
    grade = pd.to_numeric(frame[columns[1]], errors="coerce")
    bad = ~grade.isin(list(GRADES))
    if bad.any():
        shown = frame.loc[bad, columns[1]].head(10)
        lines = ", ".join(f"line {index + 2}: {value!r}" for index, value in shown.items())
        raise LabelsError(f"{path}: {columns[1]} must be an integer 0-4 ({bad.sum()} rows; {lines})")
    duplicated = frame[columns[0]].duplicated(keep=False)
    if duplicated.any():
        raise LabelsError(f"{path}: image names listed twice: {sorted(set(frame.loc[duplicated, columns[0]]))[:10]}")
    return pd.DataFrame({"name": frame[columns[0]], "level": grade.astype(int)}).reset_index(drop=True)


def _items(labels: pd.DataFrame, files: dict[str, str], prefix: str = "") -> pd.DataFrame:
    """Cache items of ``labels`` (name, level); a name may carry its file's extension."""
    stems = [
        prefix + (os.path.splitext(name)[0] if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES else name)
        for name in labels["name"]
    ]
    return pd.DataFrame(
        {
            "image": stems,
            "patient": stems,
            "side": "",
            "level": labels["level"].to_numpy(),
            "path": [files.get(stem, "") for stem in stems],
            "mask_path": "",
        }
    )


def _warn_unlabelled(files: dict[str, str], items: pd.DataFrame, where: Path) -> None:
    unlabelled = len(set(files) - set(items["image"]))
    if unlabelled:
        warnings.warn(f"{unlabelled} image file(s) under {where} have no label; not used", stacklevel=2)


def read_idrid(folder: Path) -> pd.DataFrame:
    """IDRiD's grading layout; image ids ``train/IDRiD_001``, ``test/IDRiD_001``."""
    files = _files_by_stem(folder / "images")
    items = pd.concat(
        [
            _items(_read_csv(folder / "labels" / f"{split}.csv", IDRID_COLUMNS), files, f"{split}/")
            for split in IDRID_SPLITS
        ],
        ignore_index=True,
    )
    _warn_unlabelled(files, items, folder / "images")
    return items


def read_generic(images_dir: Path, labels_csv: Path, image_column: str, grade_column: str) -> pd.DataFrame:
    """Any folder plus a csv naming each photograph (``image_column``) and its grade (``grade_column``)."""
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    files = _files_by_stem(images_dir)
    items = _items(_read_csv(labels_csv, (image_column, grade_column)), files)
    _warn_unlabelled(files, items, images_dir)
    return items


def read_folder(
    folder: str | Path,
    images_dir: str | Path | None = None,
    labels_csv: str | Path | None = None,
    layout: str = "auto",
    image_column: str | None = None,
    grade_column: str | None = None,
) -> pd.DataFrame:
    """The graded photographs of ``folder`` as cache items, in the given or detected layout.

    kaggle and generic read ``images_dir`` (default ``folder/images``) and ``labels_csv`` (default: the
    only csv in ``folder``); generic needs ``image_column`` and ``grade_column``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    if layout == "auto":
        layout = "generic" if image_column or grade_column else detect_layout(folder)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "idrid":
        return read_idrid(folder)
    images_dir = Path(images_dir) if images_dir else folder / "images"
    labels_csv = Path(labels_csv) if labels_csv else _only_csv(folder)
    if layout == "kaggle":
        return list_images(images_dir, labels_csv).assign(mask_path="")
    if not (image_column and grade_column):
        raise LabelsError(
            f"the generic layout needs the csv's image and grade columns (--image-column, "
            f"--grade-column); {labels_csv} has {list(pd.read_csv(labels_csv, nrows=0).columns)}"
        )
    return read_generic(images_dir, labels_csv, image_column, grade_column)


def _only_csv(folder: Path) -> Path:
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        raise LabelsError(
            f"{folder} holds {len(found)} csv files ({[path.name for path in found]}): name the labels csv"
        )
    return found[0]
