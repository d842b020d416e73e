"""Worker processes that never outlive the process that started them, and how many work side by side.

A pool worker blocks forever on its task queue when its parent is killed (kill -9, or SIGTERM
without a handler), and holds the multiprocessing resource tracker open with it. Every pool of
this project starts its workers with :func:`exit_with_parent`.

On a CPU, small models use two cores poorly: two runs trained (or two chapters executed) side by
side, each with half the cores, finish sooner than one after the other on all cores
(``benchmarks/bench_side_by_side.py`` measures it). :func:`side_by_side` says how many, from
``runtime.side_by_side``; :func:`side_by_side_pool` starts them. Sums over threads come out in
another order with another thread count, so a run trains, and a chapter executes, on
:func:`run_threads` threads whether it runs side by side or alone: the same command gives the same
numbers either way.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

from fundus_lib.config import RuntimeConfig

#: How often a worker checks that its parent is alive.
PARENT_CHECK_SECONDS = 0.5


def exit_with_parent(parent_pid: int) -> None:
    """Call in a worker process (a pool initializer) with the pid of the process that made the pool
    (passed in, since it may already be gone when a slow-starting worker gets here): a daemon
    thread ends the worker as soon as that parent is gone (the worker is re-parented)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def side_by_side(runtime: RuntimeConfig, cores: int | None = None) -> int:
    """How many runs train, and chapters execute, at once: ``runtime.side_by_side``; ``auto`` is 2 on
    a CPU with at least 2 cores, else 1 (a GPU works on one thing at a time; under torchrun the
    processes already share one run)."""
    if runtime.side_by_side != "auto":
        return runtime.side_by_side
    cores = cores or os.cpu_count() or 1
    on_cpu = runtime.device == "cpu"
    if runtime.device == "auto":
        import torch  # only here: the data workers that import this module never need torch

        on_cpu = not torch.cuda.is_available()
    return 2 if on_cpu and cores >= 2 and int(os.environ.get("WORLD_SIZE", 1)) == 1 else 1


def threads_each(processes: int, cores: int | None = None) -> int:
    """Each of ``processes`` workers' equal share of the cores (at least 1)."""
    return max(1, (cores or os.cpu_count() or 1) // processes)


def run_threads(runtime: RuntimeConfig, cores: int | None = None) -> int:
    """The torch threads of every run's training and every chapter's kernel: one of ``side_by_side``'s
    processes' share of the cores, also when the run or chapter runs alone."""
    return threads_each(side_by_side(runtime, cores), cores)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``count`` inside the block, restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def child_threads(count: int) -> Iterator[None]:
    """Inside the block, processes started from this one (a notebook kernel) run torch and other
    OpenMP code on ``count`` threads (the environment they inherit); restored after it."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, str(count)))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _init_side_by_side(parent_pid: int, threads: int) -> None:
    exit_with_parent(parent_pid)
    # Read by torch (imported after this, with the first task) and by the processes a worker
    # starts, such as a notebook kernel.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # imported already while the worker started
        sys.modules["torch"].set_num_threads(threads)


def side_by_side_pool(processes: int, cores: int | None = None) -> ProcessPoolExecutor:
    """``processes`` spawned workers, each exiting with this process and running torch (and any
    process it starts) on ``threads_each`` cores."""
    return ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_side_by_side,
        initargs=(os.getpid(), threads_each(processes, cores)),
    )
