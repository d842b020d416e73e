"""The ``fundus`` command: prepare data, train runs, execute chapters, check params files.

fundus data params/demo.yaml              # generate / cache / split the data, print a summary
fundus train params/demo.yaml             # train every run the chapters need into the run store
torchrun --nproc_per_node=3 -m fundus_lib.cli train params/eyepacs-512.yaml   # on 3 GPUs
fundus runs                               # list the run store
fundus run all --params params/demo.yaml  # execute every chapter into book/generated/
fundus run 01 --params params/eyepacs-512.yaml
fundus run all --params params/eyepacs-512.yaml --from-store   # render runs trained elsewhere
fundus check params/*.yaml                # validate params files against the schema
fundus build-record start params/demo.yaml --since T   # make book: the timing record (then finish)
fundus plan params/eyepacs-512.yaml       # runs, image passes, cache size and time before a run
fundus rehearse params/eyepacs-512.yaml ../shared/data/eyepacs_mini/images ../shared/data/eyepacs_mini/trainLabels.csv
fundus grade params/eyepacs-mini.yaml other/images other/trainLabels.csv   # the stored baseline on new photographs
fundus grade params/eyepacs-mini.yaml ../shared/data/idrid_grading         # IDRiD's own layout
"""

from __future__ import annotations

import argparse
import sys

from fundus_lib.config import load_params
from fundus_lib.errors import UserError

#: Errors that are the user's to fix: printed as one message, without a traceback.
USER_ERRORS = (UserError, FileNotFoundError)


def _data(args: argparse.Namespace) -> None:
    from fundus_lib.data.pipeline import prepare_data

    data = prepare_data(load_params(args.params))
    print(data.cache)
    print(f"manifest hash {data.manifest_hash}")
    print(data.manifest.groupby(["split", "level"]).size().unstack(fill_value=0).to_string())
    if len(data.skipped):
        print(f"{len(data.skipped)} image(s) skipped:")
        print(data.skipped.to_string())


def _run(args: argparse.Namespace) -> None:
    import time

    from fundus_lib.data.pipeline import generate_synthetic, prepare_data
    from fundus_lib.experiments import data_sections
    from fundus_lib.report.build_record import add_step
    from fundus_lib.report.chapters import execute_chapters, generated_dir, resolve_chapters, side_by_side_chapters
    from fundus_lib.workers import side_by_side

    chapters = resolve_chapters(args.chapters)
    params = load_params(args.params)
    out = args.out or generated_dir()
    started = time.monotonic()
    generate_synthetic(data_sections(params), progress=not args.quiet)  # long work here, with progress bars
    prepare_data(params, progress=not args.quiet)
    to_train = {} if args.from_store else runs_to_train(params, chapters, progress=not args.quiet)
    add_step(out, "data", time.monotonic() - started, params_file=args.params)
    processes = side_by_side(params.runtime)
    training = _train_chapters(to_train, chapters, out, processes, args.quiet)
    alongside = side_by_side_chapters(chapters, processes)
    if alongside:
        print(f"== executing {', '.join(alongside)} with {args.params}, {processes} at a time", flush=True)
    executing = {}
    for chapter, seconds, at_once in execute_chapters(
        chapters,
        args.params,
        out,
        processes,
        progress=not args.quiet,
        train_missing=not args.from_store,
        announce=lambda chapter: print(f"== {chapter} with {args.params}", flush=True),
    ):
        add_step(out, "executing", seconds, chapter=chapter, side_by_side=at_once)
        executing[chapter] = seconds
        print(f"== {chapter} executed in {seconds:.0f} s", flush=True)
    for chapter in chapters:
        print(
            f"{chapter}: {training[chapter] + executing[chapter]:.0f} s ({training[chapter]:.0f} s training its runs, "
            f"{executing[chapter]:.0f} s executing{' side by side' if chapter in alongside else ''})"
        )


def _train_chapters(to_train: dict, chapters: list[str], out, processes: int, quiet: bool) -> dict[str, float]:
    """Train each chapter's missing runs (``runs_to_train``), recording each chapter's training step;
    returns the seconds per chapter."""
    from fundus_lib.report.build_record import add_step

    training = {}
    every_run = {label: pair for runs in to_train.values() for label, pair in runs.items()}
    with _ConsoleTrainer(every_run, quiet, processes) as trainer:
        for chapter in chapters:
            training[chapter] = trainer.train(to_train.get(chapter, {}))
            add_step(out, "training", training[chapter], chapter=chapter)
    return training


def runs_to_train(params, chapters: list[str], progress: bool = True) -> dict[str, dict]:
    """Per chapter (by name), the runs it reads that are not yet in the store: label -> (params,
    config), each run once (under the first chapter that needs it)."""
    from fundus_lib.experiments import all_runs

    numbers = {chapter[:2]: chapter for chapter in chapters}
    missing: dict[str, dict] = {}
    seen = set()
    for label, (run_params, config) in all_runs(params).items():
        chapter = numbers.get(label[:2])
        if chapter is None:
            continue
        folder, stored = _store_folder(run_params, config, progress)
        if folder in seen or stored:
            continue
        seen.add(folder)
        missing.setdefault(chapter, {})[label] = (run_params, config)
    return missing


def _store_folder(params, config, progress: bool):
    """The run's folder in the store, and whether the run is finished there."""
    from fundus_lib.runs import RECORD, run_data, run_folder

    folder = run_folder(params, config, run_data(params, config, progress))
    return folder, (folder / RECORD).exists()


class _ConsoleTrainer:
    """Trains runs before the chapter that reads them, so the console shows which run trains, how
    many are done and left, and the time left: the seconds so far per unit of work done, times the
    work left, where a run's work is its image passes (``fundus_lib.plan``) times its pixels per
    image. With ``runtime.side_by_side`` above 1 the runs train side by side in worker processes
    (``training.side_by_side``) and a line reports each finished run; else in this process, with
    each epoch's progress bar. Use it as a context manager (it owns the worker pool)."""

    def __init__(self, runs: dict, quiet: bool, processes: int = 1):
        """runs: label -> (params, config), every run this trainer will be asked for."""
        from fundus_lib.training.side_by_side import RunTrainer

        self.quiet, self.total, self.done, self.seconds, self.work_done = quiet, len(runs), 0, 0.0, 0.0
        self.work = {label: _work(run_params, config) for label, (run_params, config) in runs.items()}
        self.pool = RunTrainer(processes) if processes > 1 and len(runs) > 1 else None

    def __enter__(self) -> _ConsoleTrainer:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.close()

    def _left(self) -> str:
        if not self.work_done:
            return ""
        work_left = sum(self.work.values()) - self.work_done
        return f", about {self.seconds / self.work_done * work_left / 60:.0f} min left"

    def train(self, runs: dict) -> float:
        """Train ``runs`` (label -> (params, config)); returns the seconds it took."""
        import time

        begun, seconds_before = time.monotonic(), self.seconds
        if self.pool is not None and len(runs) > 1:
            print(f"-- training {len(runs)} runs, {self.pool.processes} at a time", flush=True)
            for label, seconds in self.pool.train(runs):
                self.done, self.seconds = self.done + 1, seconds_before + time.monotonic() - begun
                self.work_done += self.work[label]
                print(f"-- run {self.done}/{self.total} done: {label} ({seconds:.0f} s){self._left()}", flush=True)
            return time.monotonic() - begun
        for label, (run_params, config) in runs.items():
            print(f"-- run {self.done + 1}/{self.total}: {label}{self._left()}", flush=True)
            started = time.monotonic()
            _get_run(label, run_params, config, progress=not self.quiet)
            self.done, self.seconds = self.done + 1, self.seconds + time.monotonic() - started
            self.work_done += self.work[label]
        return time.monotonic() - begun


def _work(params, config) -> float:
    """A run's training work for the time-left estimate: image passes x pixels per image."""
    import numpy as np

    from fundus_lib.plan import image_passes
    from fundus_lib.runs import run_data

    data = run_data(params, config, progress=False)
    train_counts = np.bincount(data.manifest.loc[data.rows("train"), "level"], minlength=5)
    return image_passes(config, train_counts) * config.image_size**2


def _get_run(label: str, params, config, progress: bool):
    """The run of ``config`` from the store or trained now; a user error names the run's label."""
    from fundus_lib.runs import get_run

    try:
        return get_run(params, config, progress=progress)
    except UserError as exc:
        raise UserError(f"{label}: {exc}") from None


def _train(args: argparse.Namespace) -> None:
    from fundus_lib.data.pipeline import generate_synthetic
    from fundus_lib.experiments import all_runs, data_sections
    from fundus_lib.workers import side_by_side

    params = load_params(args.params)
    generate_synthetic(data_sections(params), progress=not args.quiet)
    runs = {
        label: pair
        for label, pair in all_runs(params).items()
        if not args.only or any(part in label for part in args.only)
    }
    if not runs:
        raise UserError(f"no run matches {args.only}; runs: {', '.join(all_runs(params))}")
    missing = {
        label: (run_params, config)
        for label, (run_params, config) in runs.items()
        if not _store_folder(run_params, config, not args.quiet)[1]
    }
    with _ConsoleTrainer(missing, args.quiet, side_by_side(params.runtime)) as trainer:
        trainer.train(missing)
    for label, (run_params, config) in runs.items():
        run = _get_run(label, run_params, config, progress=not args.quiet)
        test = run.metrics("test")
        print(
            f"{label}: run {run.key}, test kappa {test['kappa']:.3f}, balanced accuracy "
            f"{test['balanced_accuracy']:.3f}, {run.train_seconds / 60:.1f} min",
            flush=True,
        )


def _grade(args: argparse.Namespace) -> None:
    from fundus_lib.evaluation.grading import confusion_frame, grade_folder, per_grade

    layout = {"layout": args.layout, "image_column": args.image_column, "grade_column": args.grade_column}
    grades, measures, skipped = grade_folder(
        load_params(args.params), args.folder, args.labels_csv, progress=not args.quiet, **layout
    )
    grades.to_csv(args.out, index=False)
    print(f"{len(grades)} photographs graded into {args.out} (95 % intervals: bootstrap over the photographs):")
    for name, row in measures.iterrows():
        print(f"  {name}: {row['value']:.3f} [{row['low']:.3f}, {row['high']:.3f}] (n = {int(row['n'])})")
    print("photographs per grade: " + ", ".join(f"{grade}: {n}" for grade, n in per_grade(grades["level"]).items()))
    print("labels (rows) against grades (columns):")
    print(confusion_frame(grades["level"], grades["grade"]).to_string())
    if len(skipped):
        print(f"{len(skipped)} image(s) skipped:")
        print(skipped.to_string())


def _runs(args: argparse.Namespace) -> None:
    from fundus_lib.runs import list_runs

    table = list_runs()
    print(table.to_string(index=False) if len(table) else "the run store is empty")


def _plan(args: argparse.Namespace) -> None:
    from fundus_lib.plan import plan_report

    print(plan_report(load_params(args.params), args.params, progress=not args.quiet))


def _rehearse(args: argparse.Namespace) -> None:
    import shutil
    import subprocess
    import time
    from pathlib import Path

    from fundus_lib.paths import data_dir, project_root
    from fundus_lib.rehearsal import write_rehearsal

    folder = data_dir() / "rehearsals"
    params_path = write_rehearsal(args.params, args.images_dir, args.labels_csv, folder, args.images)
    out = folder / params_path.stem
    book = out / "book"
    shutil.rmtree(book, ignore_errors=True)
    shutil.copytree(project_root() / "book", book, ignore=shutil.ignore_patterns("generated", "_build"))
    print(
        f"rehearsing {args.params}: every configuration, {load_params(params_path).data.eyepacs.max_images} "
        f"photographs, one epoch ({params_path})",
        flush=True,
    )
    started = time.monotonic()
    _run(
        argparse.Namespace(
            chapters=["all"], params=str(params_path), out=str(book / "generated"), quiet=args.quiet, from_store=False
        )
    )
    if args.no_book:
        return
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    root = project_root()
    build = subprocess.run(
        [
            str(jupyter_book),
            "build",
            str(book),
            "--config",
            str(root / "_config.yml"),
            "--toc",
            str(root / "_toc.yml"),
            "--path-output",
            str(out),
            "-W",
            "-n",
            "--keep-going",
        ]
    )
    if build.returncode:
        raise UserError(f"the rehearsal's book did not build (jupyter-book exit {build.returncode}; its log is above)")
    print(
        f"rehearsal of {args.params}: {time.monotonic() - started:.0f} s; its book is at "
        f"{out / '_build' / 'html' / 'index.html'}"
    )


def _build_record(args: argparse.Namespace) -> None:
    import time

    from fundus_lib.report.build_record import finish_record, start_record, steps_frame
    from fundus_lib.report.chapters import generated_dir

    out = args.out or generated_dir()
    if args.action == "start":
        start_record(out, args.params or "unknown", began=args.since)
        return
    if args.since is None:
        raise UserError("fundus build-record finish needs --since (when the HTML step began, in epoch seconds)")
    record = finish_record(out, time.time() - args.since)
    frame = steps_frame(record)
    print(f"build of {record['params']}: {record['total_seconds'] / 60:.1f} min; per step:")
    print(frame.assign(minutes=frame["minutes"].round(1)).to_string(index=False))


def _check(args: argparse.Namespace) -> None:
    for path in args.files:
        params = load_params(path)
        print(f"{path}: ok ({params.name})")


def _weights(args: argparse.Namespace) -> None:
    from fundus_lib.weights import download_weights

    for name in args.models:
        path = download_weights(name, args.weights_dir, progress=not args.quiet)
        print(f"{name}: {path} (hash checked)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fundus", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="generate or list, cache and split the data of a params file")
    data.add_argument("params")
    data.set_defaults(handler=_data)

    train = commands.add_parser("train", help="train every run the chapters need (resumes, skips finished ones)")
    train.add_argument("params")
    train.add_argument("--only", nargs="*", help="train only runs whose label contains one of these")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=_train)

    grade = commands.add_parser("grade", help="grade a folder of labelled photographs with the params' stored baseline")
    grade.add_argument("params")
    grade.add_argument(
        "folder",
        help="IDRiD's grading folder (images/{train,test}, labels/{train,test}.csv), or the "
        "images folder when labels_csv is given",
    )
    grade.add_argument(
        "labels_csv",
        nargs="?",
        help="csv of the photographs' grades (Kaggle's image,level, or --image-column/--grade-column)",
    )
    grade.add_argument(
        "--layout",
        choices=("auto", "kaggle", "idrid", "generic"),
        default="auto",
        help="auto: IDRiD's layout when detected, generic when columns are named, else Kaggle's",
    )
    grade.add_argument("--image-column", help="generic layout: the csv column naming each file (extension optional)")
    grade.add_argument("--grade-column", help="generic layout: the csv column holding the ICDR grade 0-4")
    grade.add_argument("--out", default="grades.csv", help="where the grades go (csv: image, level, grade)")
    grade.add_argument("--quiet", action="store_true", help="no progress bars")
    grade.set_defaults(handler=_grade)

    runs = commands.add_parser("runs", help="list the run store")
    runs.set_defaults(handler=_runs)

    run = commands.add_parser("run", help="execute chapters with papermill")
    run.add_argument("chapters", nargs="*", default=["all"], help="chapter names or numbers, or 'all'")
    run.add_argument("--params", default="params/demo.yaml")
    run.add_argument("--out", default=None, help="output folder (default: book/generated)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--from-store",
        action="store_true",
        help="read every run from the run store and fail on a missing one instead of training it",
    )
    run.set_defaults(handler=_run)

    plan = commands.add_parser("plan", help="what a params file will need: runs, image passes, cache size, time here")
    plan.add_argument("params")
    plan.add_argument("--quiet", action="store_true", help="no line per throughput measurement")
    plan.set_defaults(handler=_plan)

    rehearse = commands.add_parser(
        "rehearse",
        help="run a full-scale params file in miniature: every configuration, a few dozen photographs, "
        "one epoch, one seed; executes every chapter and renders the book (under data/rehearsals/)",
    )
    rehearse.add_argument("params")
    rehearse.add_argument("images_dir", help="a Kaggle-layout folder of <patient>_<left|right>.jpeg photographs")
    rehearse.add_argument("labels_csv", help="csv with columns image,level (rows without a file are left out)")
    rehearse.add_argument(
        "--images",
        type=int,
        default=None,
        help="labelled photographs to read (default: enough for the largest batch size, at least 80)",
    )
    rehearse.add_argument("--no-book", action="store_true", help="execute the chapters, do not render the book")
    rehearse.add_argument("--quiet", action="store_true", help="no progress bars")
    rehearse.set_defaults(handler=_rehearse)

    record = commands.add_parser(
        "build-record",
        help="the build's timing record (make book calls it: start after "
        "the install, finish after the HTML; fundus run adds data and chapters)",
    )
    record.add_argument("action", choices=("start", "finish"))
    record.add_argument("params", nargs="?", help="start: the params file of the build")
    record.add_argument("--since", type=float, help="epoch seconds when the timed step began (install or HTML)")
    record.add_argument("--out", default=None, help="the executed chapters' folder (default: book/generated)")
    record.set_defaults(handler=_build_record)

    check = commands.add_parser("check", help="validate params files")
    check.add_argument("files", nargs="+")
    check.set_defaults(handler=_check)

    weights = commands.add_parser(
        "weights",
        help="download the published ImageNet weights of resnet18/50, inception_v3, efficientnet-b0..b3 "
        "(needs internet; efficientnet-lite0..2 install with the project)",
    )
    weights.add_argument("models", nargs="+", help="model names, e.g. resnet18 efficientnet-b0")
    weights.add_argument("--weights-dir", default="weights", help="where the files go (runtime.weights_dir)")
    weights.add_argument("--quiet", action="store_true", help="no progress bars")
    weights.set_defaults(handler=_weights)

    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except USER_ERRORS as exc:
        print(f"fundus {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
