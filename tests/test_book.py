"""The book end to end: every chapter executes with the smoke params, and Jupyter Book renders
them without a single warning. Also chapter 1 on the real EyePACS sample."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fundus_lib.chapters import execute_chapter, list_chapters
from fundus_lib.paths import project_root

ROOT = project_root()


def executed_outputs(notebook_path):
    notebook = json.loads(notebook_path.read_text())
    return [output for cell in notebook["cells"] for output in cell.get("outputs", [])]


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """book/ copied to a temporary folder, with every chapter executed on params/smoke.yaml."""
    book = tmp_path_factory.mktemp("book") / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("generated", "_build"))
    for chapter in list_chapters():
        execute_chapter(chapter, ROOT / "params" / "smoke.yaml", book / "generated", progress=False)
    return book


def test_every_chapter_executes_without_errors(smoke_book):
    for chapter in list_chapters():
        outputs = executed_outputs(smoke_book / "generated" / f"{chapter}.ipynb")
        assert outputs, f"{chapter} produced no output"
        assert not [output for output in outputs if output["output_type"] == "error"], chapter


def test_every_chapter_is_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {entry["file"] for part in toc["parts"] for entry in part["chapters"]}
    assert {f"generated/{chapter}" for chapter in list_chapters()} <= files


@pytest.mark.slow
def test_book_builds_without_warnings(smoke_book, tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(smoke_book), "--config", str(ROOT / "_config.yml"),
         "--toc", str(ROOT / "_toc.yml"), "--path-output", str(tmp_path), "-W", "-n", "--keep-going"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    for chapter in list_chapters():
        page = (html / "generated" / f"{chapter}.html").read_text()
        assert "<table" in page and "<img" in page, chapter


@pytest.mark.slow
def test_chapter_1_runs_on_the_real_sample(real_sample, tmp_path):
    params = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    params["name"] = "real-sample"
    params["data"] = {"source": "eyepacs", "image_size": 48, "workers": 2,
                      "eyepacs": {"images_dir": str(real_sample / "images"), "labels_csv": str(real_sample / "labels.csv")}}
    params_file = tmp_path / "real-sample.yaml"
    params_file.write_text(yaml.safe_dump(params))
    execute_chapter("01_data", params_file, tmp_path, progress=False)
    outputs = executed_outputs(tmp_path / "01_data.ipynb")
    assert not [output for output in outputs if output["output_type"] == "error"]
    text = json.dumps(outputs)
    assert "grayscale image" in text  # the skipped originals are reported with their reason
    assert "This dataset has no lesion masks" in text
