"""Executing the book's chapters: jupytext sources in ``notebooks/`` run by papermill.

Each chapter is a py:percent file (``notebooks/01_data.py``) whose ``parameters`` cell holds
``params_file``. Executing it writes ``book/generated/<name>.ipynb``, which Jupyter Book renders
without executing anything again (``execute_notebooks: off``). ``execute_chapters`` executes the
chapters before the conclusions side by side in worker processes (``workers.side_by_side``): each
reads only the run store and its own evaluations.

Example::

    execute_chapter("01_data", "params/smoke.yaml")
    for chapter, seconds, side_by_side in execute_chapters(["01_data", "02_baselines"], "params/smoke.yaml"):
        ...
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from concurrent.futures import as_completed
from pathlib import Path

import jupytext
import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError

from fundus_lib.config import load_params, resolve_path
from fundus_lib.errors import UserError
from fundus_lib.paths import project_root
from fundus_lib.workers import child_threads, run_threads, side_by_side_pool


class UnknownChapter(UserError, LookupError):
    """A chapter name or number that is not in notebooks/."""


class ChapterFailed(UserError, RuntimeError):
    """A cell of a chapter raised; the message names the chapter, the error and the partial output."""


KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}
#: The number of the first chapter that reads the results of the chapters before it (the findings;
#: then the build's own page): it and those after it execute after the others, one at a time.
FIRST_READER = "07"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def generated_dir() -> Path:
    """Where executed chapters go (git-ignored)."""
    return project_root() / "book" / "generated"


def list_chapters() -> list[str]:
    """Chapter names in reading order: the stems of ``notebooks/NN_*.py``."""
    return sorted(path.stem for path in notebooks_dir().glob("[0-9][0-9]_*.py"))


def resolve_chapters(names: list[str]) -> list[str]:
    """Expand ``all`` and number prefixes (``01`` -> ``01_data``); an unknown name is UnknownChapter."""
    chapters = list_chapters()
    if not names or names == ["all"]:
        return chapters
    resolved = []
    for name in names:
        matches = [chapter for chapter in chapters if chapter == name or chapter.split("_")[0] == name]
        if len(matches) != 1:
            raise UnknownChapter(f"unknown chapter {name!r}; chapters: {', '.join(chapters)} (or 'all')")
        resolved.extend(matches)
    return resolved


def to_notebook(chapter: str):
    """The chapter's jupytext source as an nbformat notebook with a python3 kernel."""
    notebook = jupytext.read(notebooks_dir() / f"{chapter}.py")
    notebook.metadata["kernelspec"] = KERNEL
    return notebook


def parameter_names(notebook) -> set[str]:
    """Names assigned in the notebook's ``parameters``-tagged cell."""
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    return {line.split("=")[0].strip() for cell in cells for line in cell.source.splitlines() if "=" in line}


def execute_chapter(
    chapter: str,
    params_file: str | Path,
    out_dir: Path | None = None,
    progress: bool = True,
    train_missing: bool = True,
) -> float:
    """Execute one chapter with a params file; returns the seconds it took.

    The params file is validated first, so a wrong key fails before any work. Cells run with
    the project root as working directory. train_missing=False reads every run from the store
    and fails on a missing one instead of training it. A failing cell raises ChapterFailed; the
    partly executed notebook is still written, for inspection.
    """
    params = load_params(params_file)
    params_path = resolve_path(params_file)
    if params_path.is_relative_to(project_root()):
        params_path = params_path.relative_to(project_root())
    out_dir = Path(out_dir or generated_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    notebook = to_notebook(chapter)
    parameters = {"params_file": str(params_path)}
    if "train_missing" in parameter_names(notebook):
        parameters["train_missing"] = train_missing
    if "record_dir" in parameter_names(notebook):  # the page showing the build's timing record
        parameters["record_dir"] = str(
            out_dir.relative_to(project_root()) if out_dir.is_relative_to(project_root()) else out_dir
        )
    output = out_dir / f"{chapter}.ipynb"
    start = time.perf_counter()
    try:
        with child_threads(run_threads(params.runtime)):  # alone or side by side: the same numbers
            papermill.execute_notebook(
                notebook,
                str(output),
                parameters=parameters,
                cwd=str(project_root()),
                kernel_name=KERNEL["name"],
                progress_bar=progress,
            )
    except PapermillExecutionError as error:
        raise ChapterFailed(
            f"chapter {chapter} failed in cell {error.exec_count}: {error.ename}: {error.evalue} "
            f"(the partly executed notebook is {output})"
        ) from error
    _prepare_for_the_book(output, chapter, params_path, parameters)
    return time.perf_counter() - start


def side_by_side_chapters(chapters: list[str], processes: int = 2) -> list[str]:
    """Those of ``chapters`` that ``execute_chapters`` with ``processes`` executes side by side: the
    ones before ``FIRST_READER``, when there are at least two of them and two processes."""
    alongside = [chapter for chapter in chapters if chapter.split("_")[0] < FIRST_READER]
    return alongside if processes > 1 and len(alongside) > 1 else []


def execute_chapters(
    chapters: list[str],
    params_file: str | Path,
    out_dir: Path | None = None,
    processes: int = 1,
    progress: bool = True,
    train_missing: bool = True,
    announce=None,
) -> Iterator[tuple[str, float, bool]]:
    """Execute ``chapters``; yields (chapter, seconds, side by side) as each finishes. With
    ``processes`` above 1, the ``side_by_side_chapters`` execute in that many worker processes at
    once (each kernel on its share of the cores, without progress bars), in chapter order as workers
    free up; then the others one at a time in this process, each after ``announce(chapter)`` (if
    given). A failed chapter raises its ChapterFailed once the chapters already executing have
    finished."""
    alongside = side_by_side_chapters(chapters, processes)
    if alongside:
        pool = side_by_side_pool(processes)
        try:
            jobs = [
                pool.submit(_execute_quietly, chapter, params_file, out_dir, train_missing) for chapter in alongside
            ]
            for job in as_completed(jobs):
                yield *job.result(), True
        finally:
            pool.shutdown(cancel_futures=True)
    for chapter in [chapter for chapter in chapters if chapter not in alongside]:
        if announce is not None:
            announce(chapter)
        yield chapter, execute_chapter(chapter, params_file, out_dir, progress, train_missing), False


def _execute_quietly(chapter: str, params_file, out_dir, train_missing: bool) -> tuple[str, float]:
    return chapter, execute_chapter(chapter, params_file, out_dir, progress=False, train_missing=train_missing)


def rerun_markdown(chapter: str, params_path: Path, parameters: dict) -> str:
    """The page's last section: the parameters papermill injected (their cell is hidden), the
    commands that re-run the chapter, and links to download the executed notebook (Sphinx's copy of
    the page source) and the params file it ran with (embedded in the page, so the link works
    offline and names the exact file)."""
    number, params = chapter.split("_")[0], params_path.as_posix()
    encoded = base64.b64encode(resolve_path(params_path).read_bytes()).decode()
    injected = ", ".join(f"{name} `{value}`" for name, value in parameters.items())
    return "\n".join(
        [
            "## Re-run this chapter",
            "",
            f"This page was executed by papermill with the parameters {injected}.",
            "",
            "With this project installed (see the README), from the repository root:",
            "",
            "```bash",
            f"fundus run {number} --params {params}",
            "```",
            "",
            "or with papermill itself (jupytext turns the chapter's source into a notebook first):",
            "",
            "```bash",
            f"jupytext --to ipynb notebooks/{chapter}.py -o {chapter}.ipynb",
            f"papermill {chapter}.ipynb {chapter}-executed.ipynb --cwd . -p params_file {params}",
            "```",
            "",
            f'Download <a class="rerun-download" href="../_sources/generated/{chapter}.ipynb" download>this executed '
            f'notebook</a> or <a class="rerun-download" download="{params_path.name}" '
            f'href="data:text/yaml;base64,{encoded}">the params file it ran with ({params})</a>.',
        ]
    )


def _prepare_for_the_book(output: Path, chapter: str, params_path: Path, parameters: dict) -> None:
    """Hide papermill's injected-parameters cell (its values are named in the re-run section) and end
    the page with how to re-run it (``rerun_markdown``)."""
    notebook = nbformat.read(output, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    notebook.cells.append(nbformat.v4.new_markdown_cell(rerun_markdown(chapter, params_path, parameters)))
    nbformat.write(notebook, output)
