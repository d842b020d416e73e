"""The real-data edition (params/eyepacs-mini.yaml) end to end on a slice of the real EyePACS
photographs in ../shared/data/eyepacs_mini: every chapter executes, every table shows this
run's EyePACS numbers, chapter 1 counts the images of the declared subset that have no file,
and chapter 6 scores the IDRiD photographs' real lesion masks. Amounts are shrunk (a few hundred
images, 48 px, one epoch); the settings that make the edition (its data section, its rows) are kept."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from fundus_lib.cli import main
from fundus_lib.config import load_params
from fundus_lib.paths import project_root
from fundus_lib.report.chapters import list_chapters
from fundus_lib.report.tables import run_label

ROOT = project_root()
EDITION = ROOT / "params" / "eyepacs-mini.yaml"
SHARED = ROOT.parent / "shared" / "data"
SLICE_IMAGES = 300


def _folder(name: str) -> Path:
    folder = SHARED / name
    if not folder.is_dir():
        message = f"{folder} is missing (the shared real photographs)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


#: Labelled rows without a file, as in the public clone (whose trainLabels.csv lists all 35,126 Kaggle images).
EXTRA_LABELS = 1_234


def clone_like(shared: Path, folder: Path) -> Path:
    """A folder laid out like the public clone: the shared images (linked, not copied) and a labels
    file that also lists images the folder does not hold."""
    folder.mkdir()
    (folder / "images").symlink_to(shared / "images")
    extra = "".join(f"{900_000 + index // 2}_{('left', 'right')[index % 2]},0\n" for index in range(EXTRA_LABELS))
    (folder / "trainLabels.csv").write_text((shared / "trainLabels.csv").read_text() + extra)
    return folder


def shrunk(params: dict) -> dict:
    """The edition's params with only the amounts made small: images, pixels, epochs, samples."""
    small_row = {"image_size": 48, "batch_size": 8, "epochs": 1}
    params = dict(params, name="eyepacs-mini-slice")
    params["data"] = {
        **params["data"],
        "image_size": 48,
        "workers": 2,
        "eyepacs": {**params["data"]["eyepacs"], "max_images": SLICE_IMAGES},
    }
    params["train"] = {**params["train"], "epochs": 1}
    sizes = sorted({row["image_size"] for row in params["baselines"]}, reverse=True)  # kept apart: 48, 40, ...
    params["baselines"] = [
        {**row, **small_row, "image_size": 48 - 8 * sizes.index(row["image_size"])} for row in params["baselines"]
    ]
    for section in ("balancing", "corruption", "adversarial"):
        params[section] = {**params[section], "model": {**params[section]["model"], **small_row}}
    params["corruption"]["oversampled_epochs"] = 1
    params["adversarial"]["fine_tune_epochs"] = 1
    params["attacks"] = {
        **params["attacks"],
        "n_images": 12,
        "eps_255": [0, 1, 4],
        "steps": 2,
        "decision": {"n_images": 2, "steps": 2, "max_queries": 400},
        "robustness": {
            "n_images": 6,
            "eps_255": [0, 1, 16],
            "steps": 3,
            "square_queries": 100,
            "ladder_steps": 3,
            "clinical_per_grade": 2,
        },
    }
    params["attribution"] = {**params["attribution"], "n_images": 4, "ig_steps": 8, "internal_batch_size": 16}
    return params


@pytest.fixture(scope="module")
def real_slice_book(tmp_path_factory):
    """Every chapter executed on the slice, with the edition's own path variables pointed at ../shared."""
    _folder("idrid_lesions")
    saved = {name: os.environ.get(name) for name in ("FUNDUS_EYEPACS_MINI", "FUNDUS_IDRID")}
    folder = tmp_path_factory.mktemp("real-edition")
    os.environ["FUNDUS_EYEPACS_MINI"] = str(clone_like(_folder("eyepacs_mini"), folder / "eyepacs-mini"))
    os.environ.pop("FUNDUS_IDRID", None)  # the edition's default, ../shared/data/idrid_lesions
    params_file = folder / "eyepacs-mini-slice.yaml"
    params_file.write_text(yaml.safe_dump(shrunk(yaml.safe_load(EDITION.read_text()))))
    try:
        assert main(["run", "all", "--params", str(params_file), "--out", str(folder), "--quiet"]) == 0
        yield folder, load_params(params_file)
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def outputs(notebook: Path) -> list[dict]:
    cells = json.loads(notebook.read_text())["cells"]
    return [output for cell in cells for output in cell.get("outputs", [])]


def html_tables(notebook: Path) -> list[str]:
    return [
        "".join(output["data"]["text/html"])
        for output in outputs(notebook)
        if "<table" in "".join(output.get("data", {}).get("text/html", ""))
    ]


def test_the_edition_reads_the_real_photographs():
    params = load_params(EDITION, {"data": {"eyepacs": {"images_dir": "x", "labels_csv": "y"}}})
    assert params.data.source == "eyepacs" and params.data.eyepacs.subset
    assert params.attribution.lesion_photographs is not None


@pytest.mark.slow
def test_every_chapter_shows_real_data_numbers(real_slice_book):
    folder, params = real_slice_book
    label = run_label(params)
    assert "EyePACS" in label
    for chapter in list_chapters():
        notebook = folder / f"{chapter}.ipynb"
        assert not [output for output in outputs(notebook) if output["output_type"] == "error"], chapter
        tables = [table for table in html_tables(notebook) if "executed at" not in table]
        assert tables, chapter
        if chapter < "06":  # chapters 6-7 label their rows by model and finding (the IDRiD test below)
            assert any(label in table for table in tables), (chapter, "no table shows this run's EyePACS numbers")


@pytest.mark.slow
def test_chapter_1_counts_the_labelled_images_outside_the_slice_once(real_slice_book):
    folder, _ = real_slice_book
    text = json.dumps(outputs(folder / "01_data.ipynb"))
    assert f"**{SLICE_IMAGES:,}** labelled images" in text
    assert text.count(f"**{EXTRA_LABELS:,}** labelled images have no file there") == 1
    assert "Skipped images by reason" not in text or "no file" not in text


@pytest.mark.slow
def test_chapter_6_scores_the_idrid_lesions(real_slice_book):
    folder, _ = real_slice_book
    tables = html_tables(folder / "06_attribution.ipynb")
    idrid = [table for table in tables if "IDRiD" in table]
    assert idrid, "no IDRiD score table"
    assert "haemorrhage" in idrid[0] and "hard exudate" in idrid[0]
    text = json.dumps(outputs(folder / "06_attribution.ipynb"))
    grades = re.search(r"explains its own predicted grade, so the grades it gives these photographs[^\\]*", text)
    assert grades, "no line with the models' predicted grades on IDRiD"
    photographs = len(list((SHARED / "idrid_lesions" / "images").iterdir()))  # every one shows lesions
    for model in ("baseline", "adversarially trained"):  # each model grades every photograph once
        counts = re.search(rf"{model} \(quadratic kappa [^)]*\) ((?:grade \d: \d+(?:, )?)+)", grades.group(0))
        assert counts, model
        assert sum(int(n) for n in re.findall(r"grade \d: (\d+)", counts.group(1))) == photographs


@pytest.mark.slow
def test_fundus_grade_gives_the_runs_own_grades_on_its_test_photographs(real_slice_book, tmp_path):
    """`fundus grade` on a folder holding the baseline's test photographs: the same preprocessing
    and readout as the run's own evaluation, so the same grade for every photograph."""
    from fundus_lib.config import run_config
    from fundus_lib.evaluation.grading import grade_folder
    from fundus_lib.runs import get_run

    _, params = real_slice_book
    run = get_run(params, run_config(params, params.baselines[0]), train=False, progress=False)
    expected = run.predictions().query("split == 'test'")[["image", "level", "prediction"]]
    labels = tmp_path / "labels.csv"
    expected[["image", "level"]].to_csv(labels, index=False)
    grades, result, skipped = grade_folder(params, _folder("eyepacs_mini") / "images", labels, progress=False)
    merged = expected.merge(grades, on="image", suffixes=("", "_graded"))
    assert len(merged) == len(expected) and len(skipped) == 0
    assert (merged["grade"] == merged["prediction"]).all()
    assert result.at["kappa", "value"] == pytest.approx(run.metrics("test")["kappa"])


@pytest.mark.slow
def test_the_external_test_set_is_graded_beside_eyepacs(real_slice_book):
    """Chapter 2 grades IDRiD's grading set with every baseline (kappa, referable-DR sensitivity and
    specificity with intervals), and the conclusions judge the external finding on it."""
    folder, params = real_slice_book
    assert params.data.external is not None
    tables = html_tables(folder / "02_baselines.ipynb")
    external = [table for table in tables if "referable_sensitivity" in table or "referable sensitivity" in table]
    assert external, "no external table in chapter 2"
    assert all(label in external[0] for label in ("EyePACS test kappa", "photographs"))
    assert len(re.findall(r"<tr>\s*<th[^>]*>efficientnet-lite0", external[0])) == len(params.baselines)
    conclusions = json.dumps(outputs(folder / "07_conclusions.ipynb"))
    assert "External test" in conclusions and "another camera" in conclusions
