"""The book end to end: every chapter executes with the smoke params, Jupyter Book renders them
without a single warning, and headless Chromium shows every table and figure. A second execution
from an empty data folder and run store gives the same tables; a store-only execution trains
nothing. Also chapter 1 on the real EyePACS sample."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fundus_lib.cli import main
from fundus_lib.paths import project_root
from fundus_lib.report.build_record import read_history, read_record, start_record
from fundus_lib.report.chapters import ChapterFailed, execute_chapter, list_chapters

ROOT = project_root()
SMOKE = ROOT / "params" / "smoke.yaml"
#: The chapters whose tables a rerun reproduces exactly: all but the page of the build's own times.
REPRODUCIBLE = [chapter for chapter in list_chapters() if chapter != "08_build"]


def executed_outputs(notebook_path):
    notebook = json.loads(notebook_path.read_text())
    return [output for cell in notebook["cells"] for output in cell.get("outputs", [])]


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """book/ copied to a temporary folder, with every chapter executed on params/smoke.yaml as `make
    book` does it (`fundus run all`, which also writes the build's timing record)."""
    book = tmp_path_factory.mktemp("book") / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("generated", "_build"))
    start_record(book / "generated", SMOKE, began=time.time())
    assert main(["run", "all", "--params", str(SMOKE), "--out", str(book / "generated"), "--quiet"]) == 0
    return book


@pytest.fixture(scope="module")
def built_book(smoke_book, tmp_path_factory):
    """The smoke book rendered to HTML with warnings as errors: (returncode, log, html folder)."""
    out = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "jupyter-book"),
            "build",
            str(smoke_book),
            "--config",
            str(ROOT / "_config.yml"),
            "--toc",
            str(ROOT / "_toc.yml"),
            "--path-output",
            str(out),
            "-W",
            "-n",
            "--keep-going",
        ],
        capture_output=True,
        text=True,
        timeout=600,
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


def chapter_cells(source: str) -> list[tuple[str, int]]:
    """(kind, non-blank lines) of each ``# %%`` cell of a jupytext percent source (header excluded)."""
    cells = []
    for header, body in zip(*[iter(re.split(r"(?m)^(# %%.*)$", source)[1:])] * 2):
        kind = "markdown" if "[markdown]" in header else "code"
        cells.append((kind, sum(1 for line in body.splitlines() if line.strip())))
    return cells


def test_chapter_cells_parse_a_known_source():
    source = "# ---\n# header\n# ---\n\n# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\ny = 2\n"
    assert chapter_cells(source) == [("markdown", 3), ("code", 2)]


@pytest.mark.parametrize("chapter", list_chapters())
def test_each_chapter_reads_like_a_text(chapter):
    """The chapters read like the report: the package builds tables and figures, so no code cell has
    more than 15 lines and code lines are at most 1.5 times the prose lines."""
    cells = chapter_cells((ROOT / "notebooks" / f"{chapter}.py").read_text())
    code = [lines for kind, lines in cells if kind == "code"]
    prose = sum(lines for kind, lines in cells if kind == "markdown")
    assert max(code) <= 15, (chapter, code)
    assert sum(code) <= 1.5 * prose, (chapter, sum(code), prose)


def test_the_smoke_build_records_its_times_and_its_page_shows_them(smoke_book):
    """`fundus run all` writes the timing record step by step (data, each chapter's training and
    execution), the build page shows a row per chapter, and finishing the record adds the build to
    the store's history."""
    record = read_record(smoke_book / "generated")
    steps = {(step["step"], step.get("chapter")) for step in record["steps"]}
    assert ("install", None) in steps and ("data", None) in steps
    earlier = [chapter for chapter in list_chapters() if chapter != "08_build"]
    assert {("training", chapter) for chapter in earlier} | {("executing", chapter) for chapter in earlier} <= steps
    assert all(step["seconds"] >= 0 for step in record["steps"])
    page = " ".join(
        "".join(output.get("data", {}).get("text/html", ""))
        for output in executed_outputs(smoke_book / "generated" / "08_build.ipynb")
    )
    assert all(chapter.replace("_", " ") in page for chapter in earlier), page[:2000]  # styled shows "01 data"
    history_before = len(read_history()[0])
    since = str(time.time() - 2)
    assert main(["build-record", "finish", "--since", since, "--out", str(smoke_book / "generated")]) == 0
    history, unreadable = read_history()
    assert len(history) == history_before + 1 and not unreadable
    assert history["params"].iloc[-1] == str(SMOKE) and history["html (min)"].iloc[-1] > 0


@pytest.mark.slow
def test_book_builds_without_warnings(built_book):
    returncode, log, html_dir = built_book
    assert returncode == 0, log
    for chapter in list_chapters():
        page = (html_dir / "generated" / f"{chapter}.html").read_text()
        assert "<table" in page, chapter


#: Injected into a copy of each page: once the page has loaded (MathJax typesets after load, so the
#: count waits for its promise), record what the browser shows: tables, images, typeset formulas,
#: tables wider than the text column, and every resource the page fetched.
BROWSER_CHECK = """<script>
window.addEventListener("load", function () {
  var main = document.querySelector("main") || document.body;
  var article = main.querySelector("article") || main;
  var typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
  typeset.then(function () {
    var images = Array.prototype.slice.call(main.querySelectorAll("img"));
    var column = article.getBoundingClientRect();
    var tables = Array.prototype.slice.call(main.querySelectorAll("table"));
    var result = {
      tables: tables.length,
      images: images.length,
      broken: images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); })
                    .map(function (img) { return img.getAttribute("src"); }),
      errors: main.querySelectorAll(".output.traceback, .output.error").length,
      formulas: main.querySelectorAll("mjx-container").length,
      untypeset: (main.innerText.match(/[$][$]|[\\\\][(]|[\\\\][[]/g) || []).length,
      overflowing: tables.filter(function (table) {
        return table.getBoundingClientRect().width > column.width + 1 || table.scrollWidth > table.clientWidth + 1;
      }).map(function (table) { return (table.querySelector("caption") || table).textContent.slice(0, 60); }),
      remote: performance.getEntriesByType("resource").map(function (entry) { return entry.name; })
                .filter(function (name) { return !/^(file|data|blob):/.test(name); }),
      width: window.innerWidth
    };
    var pre = document.createElement("pre");
    pre.id = "browser-check";
    pre.textContent = JSON.stringify(result);
    document.body.appendChild(pre);
  });
});
</script>"""


def browser_view(chromium: str, page: Path) -> dict:
    """What headless Chromium (1280 px wide, every host unresolvable: no network) renders of
    ``page``: table and image counts, broken images, error outputs, typeset formulas, tables wider
    than the column and remote resources."""
    probe = page.with_name(page.stem + ".browser-check.html")
    probe.write_text(page.read_text().replace("</body>", BROWSER_CHECK + "</body>"))
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1280,1000",
            "--allow-file-access-from-files",
            "--virtual-time-budget=20000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    probe.unlink()
    found = re.search(r'<pre id="browser-check"[^>]*>(.*?)</pre>', result.stdout, re.S)
    assert found, f"Chromium did not render {page.name}: {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


#: The chapters whose prose defines metrics, losses or attacks by formula.
CHAPTERS_WITH_FORMULAS = ("02_baselines", "03_balancing", "04_corruption", "05_adversarial")


@pytest.mark.slow
def test_every_chapter_renders_its_tables_figures_and_formulas_offline_in_chromium(built_book, chromium):
    """With no network: every table fits the text column of a 1280 px window, every image loads,
    formulas are typeset by the book's own MathJax, and nothing is fetched from outside the book."""
    returncode, log, html_dir = built_book
    assert returncode == 0, log
    for chapter in list_chapters():
        view = browser_view(chromium, html_dir / "generated" / f"{chapter}.html")
        assert view["width"] == 1280, view
        assert view["tables"] >= 1, (chapter, view)
        assert view["images"] >= 1, (chapter, view)
        assert not view["broken"], (chapter, view)
        assert view["errors"] == 0, (chapter, view)
        assert not view["overflowing"], (chapter, view["overflowing"])
        assert not view["remote"], (chapter, view["remote"])
        assert view["untypeset"] == 0, (chapter, view)
        if chapter in CHAPTERS_WITH_FORMULAS:
            assert view["formulas"] >= 2, (chapter, view)


#: A script, stylesheet or image loaded from another host (or protocol-relative).
REMOTE_ASSET = re.compile(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//')


@pytest.mark.slow
def test_no_page_links_a_remote_script_stylesheet_or_font(built_book):
    returncode, log, html_dir = built_book
    assert returncode == 0, log
    for page in html_dir.rglob("*.html"):
        assert not REMOTE_ASSET.search(page.read_text()), page
    for sheet in html_dir.glob("_static/**/*.css"):
        assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", sheet.read_text()), sheet
    assert (html_dir / "_static" / "mathjax" / "tex-chtml.js").is_file()


def glued_values(notebook_path: Path) -> dict[str, str]:
    """MyST-NB glue values of an executed notebook: key -> their text (Markdown, else plain)."""
    values = {}
    for output in executed_outputs(notebook_path):
        key = output.get("metadata", {}).get("scrapbook", {}).get("name")
        if key:
            data = {mime.removeprefix("application/papermill.record/"): value for mime, value in output["data"].items()}
            values[key] = "".join(data.get("text/markdown") or data.get("text/plain", ""))
            assert values[key], f"glued value {key} of {notebook_path.name} has no text: {output['data']}"
    return values


@pytest.mark.slow
def test_glued_numbers_appear_in_the_built_pages(smoke_book, built_book):
    """Prose quotes the run through glue: every glued value of the conclusions and chapter 5 is in
    the page, no glue role is left unrendered, and each finding has its sentence."""
    returncode, log, html_dir = built_book
    assert returncode == 0, log
    for chapter in ("05_adversarial", "07_conclusions"):
        values = glued_values(smoke_book / "generated" / f"{chapter}.ipynb")
        assert values, chapter
        page = html.unescape(re.sub(r"<[^>]+>", "", (html_dir / "generated" / f"{chapter}.html").read_text()))
        assert "{glue" not in page, chapter
        for key, value in values.items():
            if re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", value):  # a number, shown as it is or to 3 decimals
                assert value in page or f"{float(value):.3f}" in page, (chapter, key, value)
            else:  # Markdown: its emphasis is rendered away
                assert re.sub(r"[*`]", "", value)[:40] in page, (chapter, key, value)
    findings = [
        key for key in glued_values(smoke_book / "generated" / "07_conclusions.ipynb") if key.startswith("finding-")
    ]
    source = (ROOT / "notebooks" / "07_conclusions.py").read_text()
    assert findings and all(f"{{glue:md}}`{key}`" in source for key in findings)
    assert len(re.findall(r"\{glue:md\}`finding-\d+`", source)) == len(findings)


@pytest.mark.slow
def test_each_chapter_page_hides_injected_parameters_and_offers_its_rerun(smoke_book, built_book):
    """Papermill's injected cell is not on the page; the page ends with the command, a link to its
    executed notebook (a file of the built book) and the params file it ran with, embedded."""
    returncode, log, html_dir = built_book
    assert returncode == 0, log
    for chapter in list_chapters():
        page_path = html_dir / "generated" / f"{chapter}.html"
        page = page_path.read_text()
        assert "injected-parameters" not in page and "params_file = " not in page, chapter
        text = html.unescape(re.sub(r"<[^>]+>", "", page))
        assert f"fundus run {chapter.split('_')[0]} --params params/smoke.yaml" in text, chapter
        notebook = re.search(r'class="rerun-download" href="([^"]+\.ipynb)"', page)
        assert notebook and (page_path.parent / notebook.group(1)).resolve().is_file(), chapter
        embedded = re.search(r'download="smoke.yaml" href="data:text/yaml;base64,([^"]+)"', page)
        assert embedded and base64.b64decode(embedded.group(1)) == SMOKE.read_bytes(), chapter


DURATION = re.compile(r"\d+(\.\d+)?\s?(h|min|s)\b")
STYLER_ID = re.compile(r"T_[0-9a-f]{5}(_[\w-]+)?")


def shown_tables(notebook_path: Path) -> list[str]:
    """The HTML tables and Markdown text a chapter shows, with durations and Styler ids masked;
    the provenance table (it records when it ran) left out."""
    shown = []
    for output in executed_outputs(notebook_path):
        data = output.get("data", {})
        for kind in (
            "text/html",
            "text/markdown",
            "application/papermill.record/text/markdown",
            "application/papermill.record/text/plain",
        ):  # the last two: glued values
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
    """Every run retrained and every evaluation recomputed from scratch by the same command: the
    same tables."""
    assert main(["run", "all", "--params", str(SMOKE), "--out", str(empty_store / "again"), "--quiet"]) == 0
    for chapter in REPRODUCIBLE:
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
    assert main(["run", "all", "--params", str(SMOKE), "--out", str(tmp_path), "--from-store", "--quiet"]) == 0
    for chapter in REPRODUCIBLE:
        assert shown_tables(tmp_path / f"{chapter}.ipynb") == shown_tables(
            smoke_book / "generated" / f"{chapter}.ipynb"
        )


def real_sample_params(real_sample: Path, folder: Path) -> Path:
    """The smoke params on the real EyePACS sample (48 px cache), written to ``folder``."""
    params = yaml.safe_load(SMOKE.read_text())
    params["name"] = "real-sample"
    params["data"] = {
        "source": "eyepacs",
        "image_size": 48,
        "workers": 2,
        "eyepacs": {"images_dir": str(real_sample / "images"), "labels_csv": str(real_sample / "labels.csv")},
    }
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
    """Every finding with its estimate and interval, n, margin, error rate, MDD and outcome, and one
    line on the whole; the smoke build trains one seed, so nothing can be decided."""
    notebook = smoke_book / "generated" / "07_conclusions.ipynb"
    text = json.dumps(executed_outputs(notebook))
    for header in ("[interval]", "rule", "MDD of the finding", "false-call rates", "verdict", "test images", "seed(s)"):
        assert header in text, header
    counts = glued_values(notebook)
    assert int(counts["n-inconclusive"]) > 0
    assert counts["n-reproduced"] == counts["n-contradicted"] == counts["n-smaller-than-reported"] == "0"
