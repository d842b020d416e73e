"""Readers for IDRiD's grading layout and the generic folder + csv form, on the shared IDRiD folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from fundus_lib.data.eyepacs import LabelsError
from fundus_lib.data.layouts import detect_layout, read_folder


def test_idrid_is_detected_and_read_with_its_grades(idrid_grading):
    assert detect_layout(idrid_grading) == "idrid"
    items = read_folder(idrid_grading)
    assert len(items) == 516 and (items["path"] != "").all()
    assert items["level"].value_counts().sort_index().tolist() == [134 + 34, 20 + 5, 136 + 32, 74 + 19, 49 + 13]


def test_the_two_idrid_folders_reusing_names_are_kept_apart(idrid_grading):
    items = read_folder(idrid_grading).set_index("image")
    assert items["path"].is_unique and items.index.is_unique
    assert items.at["train/IDRiD_001", "path"].endswith(os.path.join("images", "train", "IDRiD_001.jpg"))
    assert items.at["test/IDRiD_001", "path"].endswith(os.path.join("images", "test", "IDRiD_001.jpg"))
    assert (items.at["train/IDRiD_001", "level"], items.at["test/IDRiD_001", "level"]) == (3, 4)


def test_a_generic_folder_names_files_with_or_without_extension(tmp_path):
    (tmp_path / "photos" / "visit2").mkdir(parents=True)
    for name in ("a.png", "b.JPG", "visit2/c.jpeg"):
        Image.new("RGB", (40, 40)).save(tmp_path / "photos" / name)
    (tmp_path / "grades.csv").write_text("file,dr,other\na.png,0,x\nb,3,y\nvisit2/c,4,z\nmissing.jpg,1,w\n")
    items = read_folder(tmp_path, images_dir=tmp_path / "photos", image_column="file", grade_column="dr")
    assert items["image"].tolist() == ["a", "b", "visit2/c", "missing"]
    assert items["level"].tolist() == [0, 3, 4, 1]
    assert [Path(path).name for path in items["path"]] == ["a.png", "b.JPG", "c.jpeg", ""]  # a missing file: a skip


def test_a_generic_csv_with_a_wrong_column_or_grade_names_it(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "grades.csv").write_text("file,dr\na,7\n")
    with pytest.raises(LabelsError, match="missing column.*'grade'.*found columns"):
        read_folder(tmp_path, image_column="file", grade_column="grade")
    with pytest.raises(LabelsError, match=r"dr must be an integer 0-4.*line 2: '7'"):
        read_folder(tmp_path, image_column="file", grade_column="dr")
