"""The Kaggle-layout reader: csv problems are errors listing the rows; missing files are kept."""

from __future__ import annotations

import pytest

from fundus_lib.data.eyepacs import LabelsError, list_images, list_subset, read_labels


def write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_patient_and_side_are_parsed(tmp_path):
    labels = read_labels(write(tmp_path, "image,level\n10_left,0\n10_right,2\neyepacs256_7_left,4\n"))
    assert labels["patient"].tolist() == ["10", "10", "eyepacs256_7"]
    assert labels["side"].tolist() == ["left", "right", "left"]
    assert labels["level"].tolist() == [0, 2, 4]


def test_extra_columns_are_ignored(tmp_path):
    labels = read_labels(write(tmp_path, "image,level,source\n1_left,1,eyepacs\n"))
    assert list(labels.columns) == ["image", "patient", "side", "level"]


@pytest.mark.parametrize(
    "text, message, lines",
    [
        ("image,grade\n1_left,0\n", "missing column", []),
        ("image,level\n1_left,0\n1_left,1\n2_left,0\n", "duplicate image names", [2, 3]),
        ("image,level\n1_left,0\n1_right,5\n2_left,-1\n", "integer 0-4", [3, 4]),
        ("image,level\n1_left,two\n1_right,1.5\n", "integer 0-4", [2, 3]),
        ("image,level\n1_left,\n", "integer 0-4", [2]),
        ("image,level\n1_middle,0\n,1\n", "<patient>_left", [2, 3]),
    ],
)
def test_csv_problems_list_the_offending_lines(tmp_path, text, message, lines):
    with pytest.raises(LabelsError) as error:
        read_labels(write(tmp_path, text))
    assert message in str(error.value)
    for line in lines:
        assert f"line {line}:" in str(error.value)


def test_missing_labels_file_and_empty_file(tmp_path):
    with pytest.raises(LabelsError, match="not found"):
        read_labels(tmp_path / "none.csv")
    with pytest.raises(LabelsError, match="not a readable csv"):
        read_labels(write(tmp_path, ""))


def test_files_are_joined_and_missing_ones_kept(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "1_left.jpeg").write_bytes(b"x")
    (images / "1_right.jpg").write_bytes(b"x")
    (images / "9_left.jpeg").write_bytes(b"x")  # no label
    labels = write(tmp_path, "image,level\n1_left,0\n1_right,1\n2_left,3\n")
    with pytest.warns(UserWarning, match="1 image file"):
        items = list_images(images, labels)
    assert items["path"].tolist() == [str(images / "1_left.jpeg"), str(images / "1_right.jpg"), ""]


def test_max_images_takes_the_first_rows(tmp_path, real_sample):
    items = list_images(real_sample / "images", real_sample / "labels.csv", max_images=7)
    assert len(items) == 7 and (items["path"] != "").all()


def test_real_sample_reads_completely(real_sample):
    items = list_images(real_sample / "images", real_sample / "labels.csv")
    assert len(items) == 503
    assert (items["path"] != "").all()
    assert set(items["level"]) == {0, 1, 2, 3, 4}
    assert items["image"].is_unique


def test_a_declared_subset_counts_labelled_rows_without_a_file_once(tmp_path):
    """Kaggle's full labels file beside a partial download: the rows without a file are one
    count, not skipped images; in a plain (full) data set the same rows stay listed with no path."""
    images = tmp_path / "images"
    images.mkdir()
    for stem in ("1_left", "1_right", "3_left"):
        (images / f"{stem}.jpeg").write_bytes(b"x")
    labels = write(tmp_path, "image,level\n1_left,0\n1_right,1\n2_left,3\n2_right,3\n3_left,4\n")
    items, excluded = list_subset(images, labels)
    assert items["image"].tolist() == ["1_left", "1_right", "3_left"] and excluded == 2
    assert (items["path"] != "").all()
    first, _ = list_subset(images, labels, max_images=2)
    assert first["image"].tolist() == ["1_left", "1_right"]
    assert (list_images(images, labels)["path"] == "").sum() == 2


def test_a_declared_subset_with_no_file_at_all_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(LabelsError, match="none of the 2 images"):
        list_subset(tmp_path / "images", write(tmp_path, "image,level\n1_left,0\n1_right,1\n"))


def test_line_numbers_count_blank_lines(tmp_path):
    with pytest.raises(LabelsError) as error:
        read_labels(write(tmp_path, "image,level\n\n1_left,0\n\n\n1_right,9\n"))
    assert "line 6:" in str(error.value) and "line 3:" not in str(error.value)
    assert read_labels(write(tmp_path, "image,level\n1_left,0\n\n1_right,1\n\n")).index.tolist() == [0, 1]


@pytest.mark.parametrize("text", ["image,level\n", "image,level\n\n\n"])
def test_a_header_without_rows_is_an_error(tmp_path, text):
    with pytest.raises(LabelsError, match="has a header but no rows"):
        read_labels(write(tmp_path, text))


def test_suffixes_match_in_any_case(tmp_path, real_sample):
    images = tmp_path / "images"
    images.mkdir()
    source = next((real_sample / "images").glob("eyepacs256_*.jpeg"))
    (images / "1_left.JPEG").write_bytes(source.read_bytes())
    (images / "1_right.Jpg").write_bytes(source.read_bytes())
    items = list_images(images, write(tmp_path, "image,level\n1_left,0\n1_right,1\n"))
    assert items["path"].tolist() == [str(images / "1_left.JPEG"), str(images / "1_right.Jpg")]
