"""A full-scale params file in miniature: every configuration kept, only the amounts shrunk.

Before GPU hours go into ``params/eyepacs-512.yaml``, its rehearsal runs every code path of the
real run once, on a few dozen photographs of any Kaggle-layout folder: the same architectures,
image sizes, batch sizes, losses, samplers, corruption and adversarial settings, AMP and loader
options and table rows, with one epoch per row, a handful of attacked and attributed images,
one seed, and ImageNet weights only where their files are present.

Example::

    path = write_rehearsal("params/eyepacs-512.yaml", "../shared/data/eyepacs_mini/images",
                           "../shared/data/eyepacs_mini/trainLabels.csv", Path("data/rehearsals"))
    # then: fundus run all --params <path>
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from fundus_lib.config import Params, ParamsError, load_params, resolve_path, validate_params
from fundus_lib.errors import UserError
from fundus_lib.experiments import all_runs
from fundus_lib.training.loop import resolve_device
from fundus_lib.weights import pretrained_weights_file

#: The shrunk amounts (everything else of the params file is kept as it is).
REHEARSAL_IMAGES = 80  # labelled photographs read at least: a patient split with every grade
VALID_SHARE = TEST_SHARE = 0.25
ATTACKED_IMAGES = 4  # PGD sweep and HopSkipJump images
ATTRIBUTED_IMAGES = 3  # integrated-gradients images
IG_STEPS = 4  # integrated-gradients steps (the report: 100)
SANITY_LAYERS = 2  # layers the randomisation check re-initialises (on 1 image): every
# layer of an efficientnet at 512 px, for 6 methods, takes hours on a CPU
DECISION = {"n_images": 2, "steps": 2, "max_queries": 400}
ROBUSTNESS = {
    "n_images": ATTACKED_IMAGES,
    "steps": 2,
    "square_queries": 10,
    "ladder_steps": 2,
    "ladder_restarts": 2,
    "clinical_per_grade": 1,
}
#: On the CPU, training batches pass in parts of at most this many images (runtime.micro_batch_size)
#: and evaluation in batches of as many: the full-scale batch sizes (192 images of efficientnet-b1
#: at 256 px, 64 of resnet50 at 512 px) ran out of 23 GB whole. On a GPU, whole batches, as the run.
CPU_MICRO_BATCH = 16
#: ... and of at most this many pixels: efficientnet-b3 at 512 px in parts of 16 was killed at
#: 16 GB resident (the eyepacs-512 rehearsal); 6 at 512 px, 16 up to 320 px.
CPU_MICRO_BATCH_PIXELS = 16 * 320 * 320


def _three_eps(eps_255, keep=()) -> list[float]:
    """An eps sweep (x 255, pixel units) cut to its first, middle and last radius (and ``keep``):
    each radius runs the same code, and at 512 px every radius of chapter 4's and 5's sweeps
    costs minutes of attacks per model on a CPU."""
    ordered = sorted(eps_255)
    return sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1], *keep})


def cpu_micro_batch(params: Params) -> int:
    """The rehearsal's CPU micro-batch: CPU_MICRO_BATCH, fewer where the largest image needs it."""
    largest = max(config.image_size for _, config in all_runs(params).values())
    return max(1, min(CPU_MICRO_BATCH, CPU_MICRO_BATCH_PIXELS // largest**2))


#: Keys that count epochs, wherever they appear in a params file.
EPOCH_KEYS = ("epochs", "fine_tune_epochs", "oversampled_epochs")


def _one_epoch(section):
    """A copy of a params (sub)tree with every epoch count set to 1."""
    if isinstance(section, dict):
        return {key: 1 if key in EPOCH_KEYS else _one_epoch(value) for key, value in section.items()}
    if isinstance(section, list):
        return [_one_epoch(item) for item in section]
    return section


def _weights_present(params: Params) -> bool:
    """Whether every model the params file trains has its ImageNet weight file on this machine."""
    rows = [*params.baselines, params.balancing.model, params.corruption.model, params.adversarial.model]
    try:
        for row in rows:
            pretrained_weights_file(row.model, resolve_path(params.runtime.weights_dir))
    except UserError:
        return False
    return True


def rehearsal_images(params: Params) -> int:
    """Photographs a rehearsal reads: REHEARSAL_IMAGES, or more where the largest batch size of
    the params file needs them (its training split, half the images, must hold one batch)."""
    largest = max(config.batch_size for _, config in all_runs(params).values())
    return max(REHEARSAL_IMAGES, math.ceil(1.15 * largest / (1 - VALID_SHARE - TEST_SHARE)))


def rehearsal_params(raw: dict, images_dir: str | Path, labels_csv: str | Path, n_images: int | None = None) -> dict:
    """The rehearsal of a params tree (as read from YAML): the same configurations on
    ``n_images`` photographs of a Kaggle-layout folder (default ``rehearsal_images``), one
    epoch, one seed, few attacked and attributed images, three radii per eps sweep; ``pretrained`` kept only where every
    weight file is present; on the CPU, training in micro-batches (``cpu_micro_batch``)."""
    full = validate_params(raw, source="the params file to rehearse")
    n_images = n_images or rehearsal_images(full)
    rehearsal = _one_epoch(raw)
    rehearsal["name"] = f"{raw['name']}-rehearsal"
    rehearsal["description"] = f"rehearsal of {raw['name']}: every configuration, {n_images} photographs, one epoch"
    rehearsal["seeds"] = 1
    data = rehearsal.setdefault("data", {})
    data["source"] = "eyepacs"
    data.pop("synthetic", None)
    data["eyepacs"] = {
        "images_dir": str(images_dir),
        "labels_csv": str(labels_csv),
        "max_images": n_images,
        "subset": True,
    }
    data["split"] = {**data.get("split", {}), "valid": VALID_SHARE, "test": TEST_SHARE}
    train = rehearsal.setdefault("train", {})
    if train.get("pretrained") and not _weights_present(full):
        train["pretrained"] = False
    train.pop("patience", None)
    runtime = rehearsal.setdefault("runtime", {})
    if resolve_device(full.runtime.device).type == "cpu":
        micro = cpu_micro_batch(full)
        runtime.update(micro_batch_size=micro, eval_batch_size=min(full.runtime.eval_batch_size, micro))
    attacks = rehearsal.setdefault("attacks", {})
    strong = full.attacks.robustness
    attacks.update(
        n_images=ATTACKED_IMAGES,
        eps_255=_three_eps(full.attacks.eps_255),
        decision={**attacks.get("decision", {}), **DECISION},
        robustness={
            **attacks.get("robustness", {}),
            **ROBUSTNESS,
            "eps_255": _three_eps(strong.eps_255, keep=(strong.check_eps_255,)),
        },
    )
    attribution = rehearsal.setdefault("attribution", {})
    attribution.update(
        n_images=ATTRIBUTED_IMAGES,
        verdict_images=ATTRIBUTED_IMAGES,
        ig_steps=IG_STEPS,
        sanity_images=1,
        sanity_layers=SANITY_LAYERS,
        internal_batch_size=min(attribution.get("internal_batch_size", 50), 8),
    )
    return rehearsal


def write_rehearsal(
    params_file: str | Path, images_dir: str | Path, labels_csv: str | Path, out_dir: Path, n_images: int | None = None
) -> Path:
    """Write the rehearsal of ``params_file`` to ``out_dir/<name>-rehearsal.yaml`` (validated
    first) and return its path."""
    load_params(params_file)  # a wrong key fails here, naming the file
    raw = yaml.safe_load(resolve_path(params_file).read_text(encoding="utf-8"))
    for path, what in ((images_dir, "images folder"), (labels_csv, "labels csv")):
        if not Path(path).exists():
            raise ParamsError(f"the rehearsal's {what} {path} does not exist (a Kaggle-layout folder and its csv)")
    rehearsal = rehearsal_params(raw, Path(images_dir).resolve(), Path(labels_csv).resolve(), n_images)
    validate_params(rehearsal, source=f"rehearsal of {params_file}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{rehearsal['name']}.yaml"
    path.write_text(
        f"# Written by `fundus rehearse {params_file}`: every configuration of it, amounts shrunk.\n"
        + yaml.safe_dump(rehearsal, sort_keys=False),
        encoding="utf-8",
    )
    return path
