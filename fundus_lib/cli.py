"""The ``fundus`` command: prepare data, execute chapters, check params files.

    fundus data params/demo.yaml              # generate / cache / split the data, print a summary
    fundus run all --params params/demo.yaml  # execute every chapter into book/generated/
    fundus run 01 --params params/eyepacs-512.yaml
    fundus check params/*.yaml                # validate params files against the schema
"""

from __future__ import annotations

import argparse
import sys

from fundus_lib.config import ParamsError, load_params
from fundus_lib.data.cache import CacheMismatchError
from fundus_lib.data.eyepacs import LabelsError

#: Errors that are the user's to fix: printed as one message, without a traceback.
USER_ERRORS = (ParamsError, LabelsError, CacheMismatchError, FileNotFoundError, LookupError)


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
    from fundus_lib.chapters import execute_chapter, resolve_chapters
    from fundus_lib.data.pipeline import prepare_data

    chapters = resolve_chapters(args.chapters)
    prepare_data(load_params(args.params), progress=not args.quiet)  # long work here, with progress bars
    timings = {}
    for chapter in chapters:
        print(f"== {chapter} with {args.params}", flush=True)
        timings[chapter] = execute_chapter(chapter, args.params, args.out, progress=not args.quiet)
    for chapter, seconds in timings.items():
        print(f"{chapter}: {seconds:.0f} s")


def _check(args: argparse.Namespace) -> None:
    for path in args.files:
        params = load_params(path)
        print(f"{path}: ok ({params.name})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fundus", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="generate or list, cache and split the data of a params file")
    data.add_argument("params")
    data.set_defaults(handler=_data)

    run = commands.add_parser("run", help="execute chapters with papermill")
    run.add_argument("chapters", nargs="*", default=["all"], help="chapter names or numbers, or 'all'")
    run.add_argument("--params", default="params/demo.yaml")
    run.add_argument("--out", default=None, help="output folder (default: book/generated)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="validate params files")
    check.add_argument("files", nargs="+")
    check.set_defaults(handler=_check)

    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except USER_ERRORS as exc:
        print(f"fundus {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
