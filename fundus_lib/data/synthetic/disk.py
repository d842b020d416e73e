"""The dataset on disk: rendering in worker processes, the Kaggle layout, the completion marker."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from fundus_lib.config import SyntheticConfig
from fundus_lib.data.synthetic.lesions import lesion_counts
from fundus_lib.data.synthetic.render import render_variants
from fundus_lib.data.synthetic.specs import GENERATOR_VERSION, EyeSpec, sample_specs
from fundus_lib.files import exclusive, write_atomic
from fundus_lib.workers import exit_with_parent


def _encode(extension: str, array: np.ndarray, params: list[int]) -> bytes:
    ok, buffer = cv2.imencode(extension, array, params)
    if not ok:
        raise RuntimeError(f"could not encode a {extension} image")
    return buffer.tobytes()


def _render_chunk(job: tuple[list[tuple[EyeSpec, ...]], list[Path], int, float, int]) -> list[dict[str, int]]:
    """Render the eyes of one chunk (each a spec per output folder: one eye, its patches per folder)
    once each and write the image and mask files that are not on disk yet; return the lesion counts
    of every eye (the same in every folder: the patches are no lesions)."""
    eyes, out_dirs, width, difficulty, quality = job
    for specs in eyes:
        paths = [
            (out_dir / "images" / f"{spec.image}.jpeg", out_dir / "masks" / f"{spec.image}.png")
            for out_dir, spec in zip(out_dirs, specs)
        ]
        missing = [index for index, (jpeg, png) in enumerate(paths) if not (jpeg.exists() and png.exists())]
        if not missing:
            continue
        rendered = render_variants([specs[index] for index in missing], width, difficulty)
        for index, (image, mask) in zip(missing, rendered):
            jpeg, png = paths[index]
            if not png.exists():
                write_atomic(png, _encode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 3]))
            if not jpeg.exists():
                bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
                write_atomic(jpeg, _encode(".jpeg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]))
    return [lesion_counts(specs[0]) for specs in eyes]


def _init_pool_worker(parent_pid: int) -> None:
    exit_with_parent(parent_pid)
    cv2.setNumThreads(1)


@contextmanager
def _mapper(workers: int):
    """``map`` for workers=1, else the ordered ``map`` of spawned worker processes (a worker that
    cannot start raises BrokenProcessPool instead of hanging)."""
    if workers == 1:
        yield map
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_pool_worker, initargs=(os.getpid(),)
    ) as pool:
        yield pool.map


def _render_all(
    eyes: list[tuple[EyeSpec, ...]], out_dirs: list[Path], cfg: SyntheticConfig, workers: int, progress: bool
) -> list[dict]:
    """Render all missing eyes in chunks over ``workers`` processes; lesion counts in spec order."""
    size = max(1, min(32, math.ceil(len(eyes) / (4 * workers))))
    chunks = [eyes[i : i + size] for i in range(0, len(eyes), size)]
    jobs = [(chunk, out_dirs, cfg.raw_width, cfg.difficulty, cfg.jpeg_quality) for chunk in chunks]
    counts: list[dict] = []
    with tqdm(total=len(eyes), disable=not progress, unit="img", desc="synthetic fundus") as bar:
        with _mapper(workers) as run:
            for result in run(_render_chunk, jobs):
                counts += result
                bar.update(len(result))
    return counts


def _marker(cfg: SyntheticConfig) -> dict:
    """The content of generator.json (after a JSON round trip, for comparison)."""
    content = {"generator_version": GENERATOR_VERSION, "config": cfg.model_dump(mode="json")}
    return json.loads(json.dumps(content))


def _check_marker(path: Path, marker: dict) -> bool:
    """True if ``path`` holds ``marker``; False if absent; ValueError if it holds other settings."""
    if not path.exists():
        return False
    if json.loads(path.read_text()) != marker:
        raise ValueError(
            f"{path.parent} holds a synthetic dataset generated with other settings ({path.name}); "
            "use another folder or delete this one"
        )
    return True


def generate_dataset(out_dir: Path, cfg: SyntheticConfig, workers: int = 0, progress: bool = True) -> Path:
    """Generate the dataset in the Kaggle layout under ``out_dir``; return ``out_dir``.

    Writes images/<patient>_<side>.jpeg, masks/<patient>_<side>.png (lesion codes),
    trainLabels.csv (image,level = the noisy label), specs.csv (spec fields plus lesion counts)
    and, last, generator.json (version and config, seed included) as the completion marker. A complete folder
    with the same settings returns at once; an interrupted one resumes (finished images are kept);
    a folder of other settings raises ValueError. workers: processes, 0 = all cores, 1 = in-process.
    """
    return generate_datasets([(Path(out_dir), cfg)], workers, progress)[0]


#: The settings in which datasets generated together may differ: the patches, drawn last.
PATCH_SETTINGS = {"spurious_cue": 0.0, "distractor": 0.0}


def generate_datasets(
    targets: Sequence[tuple[Path, SyntheticConfig]], workers: int = 0, progress: bool = True
) -> list[Path]:
    """``generate_dataset`` for several folders whose settings differ at most in ``PATCH_SETTINGS``
    (chapter 6's data with the spurious cue beside the plain data): the patients and eyes are the
    same (``sample_specs`` draws the patches from streams of their own), so each eye is rendered once
    and written to every folder with that folder's patches. Returns the folders; ValueError for
    settings that differ in more."""
    targets = [(Path(out_dir), cfg) for out_dir, cfg in targets]
    if len({cfg.model_copy(update=PATCH_SETTINGS) for _, cfg in targets}) > 1:
        raise ValueError("generate_datasets: the settings differ in more than spurious_cue and distractor")
    incomplete = sorted((target for target in targets if not _complete(*target)), key=lambda target: str(target[0]))
    with ExitStack() as locks:  # a second process waits here, then finds them complete
        for out_dir, _ in incomplete:
            locks.enter_context(exclusive(out_dir.parent / f".{out_dir.name}.lock"))
        pending = [target for target in incomplete if not _complete(*target)]
        if pending:
            _generate(pending, workers, progress)
    return [out_dir for out_dir, _ in targets]


def _complete(out_dir: Path, cfg: SyntheticConfig) -> bool:
    """Whether ``out_dir`` holds the finished dataset of ``cfg`` (ValueError: of other settings)."""
    return _check_marker(out_dir / "generator.json", _marker(cfg))


def _generate(targets: list[tuple[Path, SyntheticConfig]], workers: int, progress: bool) -> None:
    for out_dir, cfg in targets:
        pending = out_dir / "generator.pending.json"
        _check_marker(pending, _marker(cfg))
        for folder in ("images", "masks"):
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob("*/.*.tmp"):  # left by a killed run
            stale.unlink()
        write_atomic(pending, json.dumps(_marker(cfg), indent=2).encode())
    specs = [sample_specs(cfg) for _, cfg in targets]
    eyes = list(zip(*specs))
    out_dirs = [out_dir for out_dir, _ in targets]
    counts = _render_all(eyes, out_dirs, targets[0][1], workers or os.cpu_count() or 1, progress)
    for (out_dir, cfg), folder_specs in zip(targets, specs):
        table = pd.DataFrame([{**asdict(spec), **count} for spec, count in zip(folder_specs, counts)])
        write_atomic(out_dir / "specs.csv", table.to_csv(index=False).encode())
        labels = table[["image", "label"]].rename(columns={"label": "level"})
        write_atomic(out_dir / "trainLabels.csv", labels.to_csv(index=False).encode())
        write_atomic(out_dir / "generator.json", json.dumps(_marker(cfg), indent=2).encode(), durable=True)
        (out_dir / "generator.pending.json").unlink()


def load_specs(out_dir: Path) -> list[EyeSpec]:
    """The specs of a generated dataset, read back from specs.csv (e.g. to re-render an eye
    without its cue: ``render_eye(replace(spec, cue=False), ...)``)."""
    table = pd.read_csv(Path(out_dir) / "specs.csv")
    names = [field.name for field in fields(EyeSpec)]
    return [EyeSpec(**{name: row[name] for name in names}) for row in table[names].to_dict("records")]
