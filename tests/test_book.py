"""The book end to end: every chapter executes with the smoke params, Jupyter Book renders them
without a single warning, and headless Chromium shows every table and figure. A second execution
from an empty data folder and run store gives the same tables; a store-only execution trains
nothing. Also chapter 1 on the real EyePACS sample."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fundus_lib.chapters import ChapterFailed, execute_chapter, list_chapters
from fundus_lib.paths import project_root

ROOT = project_root()
SMOKE = ROOT / "params" / "smoke.yaml"


def executed_outputs(notebook_path):
    notebook = json.loads(notebook_path.read_text())
    return [output for cell in notebook["cells"] for output in cell.get("outputs", [])]


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """book/ copied to a temporary folder, with every chapter executed on params/smoke.yaml."""
    book = tmp_path_factory.mktemp("book") / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("generated", "_build"))
    for chapter in list_chapters():
        execute_chapter(chapter, SMOKE, book / "generated", progress=False)
    return book


@pytest.fixture(scope="module")
def built_book(smoke_book, tmp_path_factory):
    """The smoke book rendered to HTML with warnings as errors: (returncode, log, html folder)."""
    out = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(smoke_book), "--config", str(ROOT / "_config.yml"),
         "--toc", str(ROOT / "_toc.yml"), "--path-output", str(out), "-W", "-n", "--keep-going"],
        capture_output=True, text=True, timeout=600,
    )
    return result.returncode, result.stdout[-4000:] + result.stderr[-4000:], out / "_build" / "html"


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
def test_book_builds_without_warnings(built_book):
    returncode, log, html_dir = built_book
    assert returncode == 0, log
    for chapter in list_chapters():
        page = (html_dir / "generated" / f"{chapter}.html").read_text()
        assert "<table" in page, chapter


#: Injected into a copy of each page: once the page has loaded, count what the browser shows.
BROWSER_CHECK = """<script>
window.addEventListener("load", function () {
  var main = document.querySelector("main") || document.body;
  var images = Array.prototype.slice.call(main.querySelectorAll("img"));
  var result = {
    tables: main.querySelectorAll("table").length,
    images: images.length,
    broken: images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); })
                  .map(function (img) { return img.getAttribute("src"); }),
    errors: main.querySelectorAll(".output.traceback, .output.error").length
  };
  var pre = document.createElement("pre");
  pre.id = "browser-check";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>"""


def browser_view(chromium: str, page: Path) -> dict:
    """What headless Chromium renders of ``page``: table and image counts, broken images, error outputs."""
    probe = page.with_name(page.stem + ".browser-check.html")
    probe.write_text(page.read_text().replace("</body>", BROWSER_CHECK + "</body>"))
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--allow-file-access-from-files", "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    probe.unlink()
    found = re.search(r'<pre id="browser-check"[^>]*>(.*?)</pre>', result.stdout, re.S)
    assert found, f"Chromium did not render {page.name}: {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.slow
def test_every_chapter_renders_its_tables_and_figures_in_chromium(built_book, chromium):
    returncode, log, html_dir = built_book
    assert returncode == 0, log
    for chapter in list_chapters():
        view = browser_view(chromium, html_dir / "generated" / f"{chapter}.html")
        assert view["tables"] >= 1, (chapter, view)
        assert view["images"] >= (0 if chapter == "07_conclusions" else 1), (chapter, view)
        assert not view["broken"], (chapter, view)
        assert view["errors"] == 0, (chapter, view)


DURATION = re.compile(r"\d+(\.\d+)?\s?(h|min|s)\b")
STYLER_ID = re.compile(r"T_[0-9a-f]{5}(_[\w-]+)?")


def shown_tables(notebook_path: Path) -> list[str]:
    """The HTML tables and Markdown text a chapter shows, with durations and Styler ids masked;
    the provenance table (it records when it ran) left out."""
    shown = []
    for output in executed_outputs(notebook_path):
        data = output.get("data", {})
        for kind in ("text/html", "text/markdown"):
            text = "".join(data.get(kind, ""))
            if text and "executed at" not in text:
                shown.append(DURATION.sub("<duration>", STYLER_ID.sub("<id>", text)))
    return shown


@pytest.fixture
def empty_store(tmp_path):
    """A fresh data folder and run store for the chapters executed in this test."""
    saved = {name: os.environ[name] for name in ("FUNDUS_DATA_DIR", "FUNDUS_RUNS_DIR")}
    os.environ["FUNDUS_DATA_DIR"], os.environ["FUNDUS_RUNS_DIR"] = str(tmp_path / "data"), str(tmp_path / "runs")
    yield tmp_path
    os.environ.update(saved)


@pytest.mark.slow
def test_running_the_book_twice_gives_identical_tables(smoke_book, empty_store):
    """Every run retrained and every evaluation recomputed from scratch: the same tables."""
    for chapter in list_chapters():
        execute_chapter(chapter, SMOKE, empty_store / "again", progress=False)
        first = shown_tables(smoke_book / "generated" / f"{chapter}.ipynb")
        assert first, chapter
        assert shown_tables(empty_store / "again" / f"{chapter}.ipynb") == first, chapter


def test_a_store_only_execution_trains_nothing(empty_store):
    with pytest.raises(ChapterFailed, match="MissingRun.*not in the store"):
        execute_chapter("02_baselines", SMOKE, empty_store / "out", progress=False, train_missing=False)
    assert not list((empty_store / "runs").glob("*/config.json"))


@pytest.mark.slow
def test_a_filled_store_renders_without_training(smoke_book, tmp_path):
    """The store filled by the smoke book renders every chapter with training forbidden."""
    for chapter in list_chapters():
        execute_chapter(chapter, SMOKE, tmp_path, progress=False, train_missing=False)
        assert shown_tables(tmp_path / f"{chapter}.ipynb") == shown_tables(smoke_book / "generated" / f"{chapter}.ipynb")


def real_sample_params(real_sample: Path, folder: Path) -> Path:
    """The smoke params on the real EyePACS sample (48 px cache), written to ``folder``."""
    params = yaml.safe_load(SMOKE.read_text())
    params["name"] = "real-sample"
    params["data"] = {"source": "eyepacs", "image_size": 48, "workers": 2,
                      "eyepacs": {"images_dir": str(real_sample / "images"), "labels_csv": str(real_sample / "labels.csv")}}
    params_file = folder / "real-sample.yaml"
    params_file.write_text(yaml.safe_dump(params))
    return params_file


@pytest.mark.slow
def test_chapter_6_shows_overlays_on_the_real_sample(real_sample, tmp_path):
    """Real photographs have no lesion masks and no cue: the overlays, and the reason for the rest."""
    execute_chapter("06_attribution", real_sample_params(real_sample, tmp_path), tmp_path, progress=False)
    outputs = executed_outputs(tmp_path / "06_attribution.ipynb")
    assert not [output for output in outputs if output["output_type"] == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs)  # Figures 7-8
    text = json.dumps(outputs)
    assert "no lesion masks" in text and "needs the synthetic data" in text


@pytest.mark.slow
def test_chapter_1_runs_on_the_real_sample(real_sample, tmp_path):
    params_file = real_sample_params(real_sample, tmp_path)
    execute_chapter("01_data", params_file, tmp_path, progress=False)
    outputs = executed_outputs(tmp_path / "01_data.ipynb")
    assert not [output for output in outputs if output["output_type"] == "error"]
    text = json.dumps(outputs)
    assert "grayscale image" in text  # the skipped originals are reported with their reason
    assert "This dataset has no lesion masks" in text


def test_the_conclusions_show_estimate_interval_n_margin_and_verdict(smoke_book):
    """Every finding with its estimate and interval, n, margin, MDD and a three-way verdict, and one
    line on the whole; the smoke build trains one seed, so nothing can be decided."""
    text = json.dumps(executed_outputs(smoke_book / "generated" / "07_conclusions.ipynb"))
    for header in ("estimate [95 % interval]", "margin", "MDD", "verdict", "test images", "seed(s)"):
        assert header in text, header
    assert re.search(r"reproduces \*\*0\*\*, contradicts \*\*0\*\*, is inconclusive on \*\*\d+\*\*", text)
