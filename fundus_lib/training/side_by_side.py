"""Training independent runs side by side (``workers.side_by_side``): on a CPU, two runs in two
worker processes with half the cores each finish sooner than the same runs one after another on
all cores (``benchmarks/bench_side_by_side.py`` measures the ratio).

A run that starts from another (``config.init_from``) waits until that run has finished. Each
worker trains through ``runs.get_run`` (so a run's store folder and record are the same as when
trained in this process); the data caches must exist before (``prepare_data``), since two workers
must not build the same cache.

Example::

    with RunTrainer(processes=2) as trainer:
        for label, seconds in trainer.train({"baseline": (params, config), ...}):
            print(label, seconds)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from fundus_lib.errors import UserError
from fundus_lib.workers import side_by_side_pool


def train_one(label: str, params, config) -> tuple[str, float]:
    """Worker: the run of ``config`` trained into the store (quietly); its label and seconds. A user
    error comes back as a ``UserError`` naming the run's label."""
    from fundus_lib.runs import get_run

    started = time.monotonic()
    try:
        get_run(params, config, progress=False)
    except UserError as exc:
        raise UserError(f"{label}: {exc}") from None
    return label, time.monotonic() - started


class RunTrainer:
    """Trains batches of runs in ``processes`` spawned workers (one worker pool for all batches),
    each worker with an equal share of the cores. ``work(label, params, config) -> (label, seconds)``
    trains one run in a worker (a module-level function: it is pickled by name)."""

    def __init__(self, processes: int, cores: int | None = None, work=None):
        if processes < 2:
            raise ValueError(f"RunTrainer needs at least 2 processes, got {processes}: train in this process instead")
        self.processes, self.cores = processes, cores
        self.work = work or train_one
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> RunTrainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = side_by_side_pool(self.processes, self.cores)
        return self._pool

    def train(self, runs: dict) -> Iterator[tuple[str, float]]:
        """Train ``runs`` (label -> (params, config)); yields (label, seconds) as each finishes. A run
        whose ``init_from`` is another run of the batch is started once that one has finished. A
        failed run raises its error after the runs already started have finished."""
        waiting = dict(runs)
        running: dict[Future, str] = {}
        pool = self._executor()
        failure: BaseException | None = None
        while waiting or running:
            if failure is None:
                for label in [label for label in waiting if not _waits_for(waiting[label], waiting, running, runs)]:
                    run_params, config = waiting.pop(label)
                    running[pool.submit(self.work, label, run_params, config)] = label
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                try:
                    yield future.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below, once the started runs end
                    failure = failure or exc
        if failure is not None:
            raise failure


def _waits_for(pair: tuple, waiting: dict, running: dict[Future, str], runs: dict) -> bool:
    """Whether the run of ``pair`` starts from a run of the batch that has not finished yet."""
    parent = pair[1].init_from
    if parent is None:
        return False
    unfinished = [*waiting.values(), *(runs[label] for label in running.values())]
    return any(config == parent for _, config in unfinished)
