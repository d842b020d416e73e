"""The parameter schema of the params files (``params/*.yaml``), validated on load.

A params file is YAML with the sections below. Every key has a type, a range and a default;
an unknown key, a wrong type or an out-of-range value raises :class:`ParamsError`, whose
message names the key (``data.synthetic.difficulty``) and what is allowed there.

Example::

    params = load_params("params/demo.yaml", overrides={"data": {"image_size": 64}})
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fundus_lib.errors import UserError
from fundus_lib.paths import project_root

#: The report's Table 1 class shares for grades 0-4 (25,810 / 2,443 / 5,292 / 873 / 708 images).
REPORT_CLASS_BALANCE = (0.735, 0.069, 0.151, 0.025, 0.020)


class ParamsError(UserError, ValueError):
    """A params file (or override) does not match the schema; the message names the keys."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticConfig(_Section):
    """The procedural fundus generator (``fundus_lib.data.synthetic``)."""

    seed: int = Field(0, ge=0, description="the generator's seed (separate from training seeds)")
    n_patients: int = Field(1000, ge=1, le=1_000_000, description="patients; two eyes each")
    raw_width: int = Field(576, ge=128, le=8192, description="image width in px; height = 2/3 width")
    difficulty: float = Field(1.0, gt=0, le=5, description="1 = calibrated default; larger = fainter, smaller lesions")
    label_noise: float = Field(
        0.1,
        ge=0,
        le=1,
        description="average probability that the grader's label differs from the drawn grade (a neighbouring "
        "grade up to about 0.18 under the report's balance; the balance is kept, so the rare grades are "
        "relabelled far more often than grade 0: chapter 1 shows the rate per grade and the ceiling it sets)",
    )
    eye_agreement: float = Field(
        0.75,
        ge=0,
        le=1,
        description="probability that both eyes of a patient get the same grade (values below the "
        "independent-eyes level, about 0.57 under the report's balance, give that level)",
    )
    class_balance: tuple[float, float, float, float, float] = Field(
        REPORT_CLASS_BALANCE, description="shares of grades 0-4 (default: the report's Table 1)"
    )
    spurious_cue: float = Field(
        0.0,
        ge=0,
        le=1,
        description="0 = off; otherwise P(cue present) = strength on referable eyes (grade 2-4), "
        "never on grades 0-1 (a high-contrast checkerboard, lower left)",
    )
    distractor: float = Field(
        0.0,
        ge=0,
        le=1,
        description="P(distractor present) on any eye, independent of the grade: a stripe patch as "
        "salient as the cue (upper right), the control of the spurious-cue experiment; 0 = off",
    )
    jpeg_quality: int = Field(92, ge=50, le=100)

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> SyntheticConfig:
        total = sum(self.class_balance)
        if any(share < 0 for share in self.class_balance) or abs(total - 1) > 1e-3:
            raise ValueError(f"class_balance must be 5 non-negative shares summing to 1, got {self.class_balance}")
        return self


class EyepacsConfig(_Section):
    """Real data in the Kaggle layout: a folder of ``<patient>_<left|right>.jpeg`` and a labels csv."""

    images_dir: Path = Field(description="folder of the fundus JPEGs")
    labels_csv: Path = Field(description="csv with columns image,level (Kaggle's trainLabels.csv)")
    max_images: int | None = Field(None, ge=1, description="use only the first N labelled images")
    subset: bool = Field(
        False,
        description="the folder holds a declared subset of the labelled images (e.g. a partial download "
        "beside Kaggle's full trainLabels.csv): labelled rows without a file are excluded and counted once, "
        "not reported as skipped images",
    )


class SplitConfig(_Section):
    """Patient-level, grade-stratified split (``fundus_lib.data.split``)."""

    valid: float = Field(0.15, gt=0, lt=1, description="share of patients for validation")
    test: float = Field(0.15, ge=0, lt=1, description="share of patients for the reported test split")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitConfig:
        if self.valid + self.test >= 1:
            raise ValueError(f"valid + test must be < 1 (got {self.valid} + {self.test})")
        return self


class DataConfig(_Section):
    """Where the images come from and how the preprocessed cache is built."""

    source: Literal["synthetic", "eyepacs"] = "synthetic"
    synthetic: SyntheticConfig = SyntheticConfig()
    eyepacs: EyepacsConfig | None = None
    image_size: int = Field(128, ge=32, le=1024, description="cache image size in px (square)")
    graham_circle: float = Field(
        0.95, gt=0.5, le=1.0, description="share of the radius kept after Graham (original code: 0.9)"
    )
    allow_grayscale: bool = Field(
        False, description="use grayscale photographs (channel replicated) instead of skipping them"
    )
    workers: int = Field(0, ge=0, le=256, description="processes for the cache builder; 0 = all cores")
    split: SplitConfig = SplitConfig()
    external: Path | None = Field(
        None,
        description="an external test set, never trained or tuned on: a folder in IDRiD's grading layout "
        "(images/{train,test}, labels/{train,test}.csv) or Kaggle's (images/ and one labels csv); None = none",
    )

    @model_validator(mode="after")
    def _sections_match_the_source(self) -> DataConfig:
        """A section the source does not read is an error: real paths must never be ignored in silence."""
        if self.source == "eyepacs" and self.eyepacs is None:
            raise ValueError("source 'eyepacs' needs an 'eyepacs' section with images_dir and labels_csv")
        if self.source == "synthetic" and self.eyepacs is not None:
            raise ValueError(
                "data.eyepacs is given but data.source is 'synthetic' (the default), which ignores it: "
                "set data.source: eyepacs to use those images, or remove the eyepacs section"
            )
        if (
            self.source == "eyepacs" and self.synthetic != SyntheticConfig()
        ):  # defaults, as a dumped config has, are fine
            raise ValueError(
                "data.synthetic is given but data.source is 'eyepacs', which ignores it: remove the synthetic section"
            )
        return self


class AugmentConfig(_Section):
    """Training-time augmentation, the report's section 2.2; each step applied with `probability`."""

    probability: float = Field(0.5, ge=0, le=1)
    hflip: bool = True
    scale: tuple[float, float] = Field((0.9, 1.1), description="zoom range")
    translate: tuple[float, float] = Field((0.05, 0.05), description="max shift as a fraction of width, height")
    rotate_deg: tuple[float, float] = (-30.0, 10.0)
    shear_deg: tuple[float, float] = (-10.0, 10.0)
    brightness: tuple[float, float] = (0.85, 1.15)
    contrast: tuple[float, float] = (0.85, 1.15)

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> AugmentConfig:
        for key in ("scale", "rotate_deg", "shear_deg", "brightness", "contrast"):
            low, high = getattr(self, key)
            if low > high:
                raise ValueError(f"{key} must be (low, high) with low <= high, got {(low, high)}")
        return self


#: The training losses (``fundus_lib.training.losses.LOSSES``; a test keeps the two equal).
LOSS_NAMES = ("cross_entropy", "focal", "class_balanced", "inverse_frequency")

#: The registered models (``fundus_lib.models.list_models()``; a test keeps the two equal).
MODEL_NAMES = (
    "efficientnet-b0",
    "efficientnet-b1",
    "efficientnet-b2",
    "efficientnet-b3",
    "efficientnet-lite0",
    "efficientnet-lite1",
    "efficientnet-lite2",
    "inception_v3",
    "resnet18",
    "resnet50",
    "small-cnn",
)
ModelName = Literal[MODEL_NAMES]
LossName = Literal[LOSS_NAMES]
Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal["constant", "cosine"]
SelectOn = Literal["balanced_accuracy", "accuracy", "kappa", "loss"]
Readout = Literal["argmax", "thresholds"]
Sampling = Literal["none", "oversample", "smote"]


class TrainConfig(_Section):
    """How every model is trained (the report's section 2.4); a row of a table may override parts."""

    epochs: int = Field(20, ge=1, le=1000, description="the report: 20")
    optimizer: Optimizer = Field("adam", description="the original code: Adam")
    lr: float = Field(1e-3, gt=0, le=10, description="learning rate (the original code: 1e-3)")
    weight_decay: float = Field(0.0, ge=0, le=1)
    schedule: Schedule = Field("constant", description="learning-rate schedule over the epochs")
    select_on: SelectOn = Field(
        "balanced_accuracy", description="validation metric that picks the best epoch (the report: balanced accuracy)"
    )
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without improvement")
    balanced_epochs: int = Field(
        0,
        ge=0,
        description="the first n epochs draw a class-balanced sample of the training set's size "
        "(with replacement), the later ones the training set as it is: a warm start that keeps a model off the "
        "majority grade (not in the report); rows with oversampling or SMOTE are balanced already and ignore it",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classification layer")
    readout: Readout = Field(
        "argmax",
        description="how a grade is read from the five probabilities: argmax (the report), or the "
        "expected grade cut at four thresholds fitted for kappa on the validation split (fundus_lib.training.readout)",
    )
    pretrained: bool = Field(
        False,
        description="start from ImageNet weights (efficientnet-lite0..2: the installed "
        "package's file; others: a file in runtime.weights_dir)",
    )
    augment: bool = Field(True, description="apply the augment section during training")
    frozen_blocks: int = Field(
        0,
        ge=0,
        le=32,
        description="efficientnets: the stem and this many first blocks "
        "get no gradients during the first frozen_epochs epochs (fine-tuning's warm-up; "
        "the backward pass skips them)",
    )
    frozen_epochs: int = Field(0, ge=0, description="epochs trained with the frozen_blocks frozen (then all layers)")


class RuntimeConfig(_Section):
    """Where and how runs execute: never part of a run's identity (the run store's key)."""

    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto = cuda if available")
    loader_workers: int = Field(2, ge=0, le=64, description="data loader processes")
    side_by_side: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto",
        description="how many runs `fundus run` and `fundus train` train at once, and how many chapters before "
        "the conclusions `fundus run` executes at once, each in its own process with an equal share of the cores: "
        "a number (at least 1), or auto (2 on a CPU with at least 2 cores, where two small jobs side by side finish "
        "sooner than one after the other; 1 on a GPU)",
    )
    amp: bool = Field(True, description="mixed precision on CUDA")
    cpu_bfloat16: bool | Literal["auto"] = Field(
        False,
        description="bfloat16 autocast for training steps on the CPU: true, false, or auto (on where the CPU "
        "has native bfloat16, AMX or AVX-512 BF16; measure with benchmarks/bench_training.py --cpu-options); "
        "numbers differ slightly from float32 runs",
    )
    mass_bfloat16: bool | Literal["auto"] = Field(
        False,
        description="bfloat16 autocast on the CPU for the integrated gradients that are only summed into relevance "
        "masses (chapter 6's hypothesis verdict and the cue's attribution; maps that are shown or rank-compared "
        "stay float32): true, false, or auto as cpu_bfloat16; about 2x where the CPU has native bfloat16, the "
        "masses within a small tolerance of float32 (tests/test_attribution_precision.py)",
    )
    channels_last: bool = Field(True, description="channels-last memory format (faster on CUDA and oneDNN CPUs)")
    eval_batch_size: int = Field(128, ge=1)
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="at most this many training images per forward-backward pass: a larger batch is "
        "split and the gradients of its parts summed before the one optimizer step (the same step for the loss; "
        "BatchNorm's batch statistics then come from each part); for batches that do not fit the device's memory "
        "(a rehearsal on the CPU). None: whole batches",
    )
    weights_dir: Path = Field(Path("weights"), description="folder of ImageNet weight files for pretrained: true")


class ModelRow(_Section):
    """One row of a results table: a model at an image size with its batch size."""

    model: ModelName
    image_size: int = Field(ge=32, le=1024)
    batch_size: int = Field(ge=1, le=4096)
    epochs: int | None = Field(None, ge=1, description="overrides train.epochs for this row")
    lr: float | None = Field(None, gt=0, le=10, description="overrides train.lr for this row")
    pretrained: bool | None = Field(
        None, description="overrides train.pretrained for this row (Table 4: ImageNet weights against scratch)"
    )


class GradingBar(_Section):
    """The level a baseline must reach to count as a grading model (chapter 2): the mean of its
    test metrics over the training seeds, with no seed collapsed onto one grade."""

    kappa: float = Field(ge=-1, le=1, description="mean test quadratic weighted kappa over the seeds")
    balanced_accuracy: float = Field(ge=0, le=1, description="mean test balanced accuracy over the seeds")


class AdversarialTraining(_Section):
    """The report's adversarial training (§5): each batch's loss is (1 - weight) x clean loss +
    weight x loss on PGD examples made in eval mode. eps and alpha in [0, 1] pixel units x 255."""

    eps_255: float = Field(
        gt=0, le=64, description="L-inf radius x 255 in pixel units (report: 2.5 normalised = 0.565 pixel)"
    )
    steps: int = Field(5, ge=1, le=100, description="PGD steps (the report: 5)")
    alpha_255: float | None = Field(None, gt=0, description="step size x 255; None = 2.5 eps / steps")
    weight: float = Field(0.5, ge=0, le=1, description="share of the adversarial loss (the report: 0.5)")


class CorruptionTraining(_Section):
    """Training on corrupted images (the report's §4): each training image gets one of the four
    corruptions at a random level in ``levels``."""

    levels: tuple[int, int] = Field(description="level range, e.g. (1, 2); the report: (1,1), (1,2), (1,3), (1,4)")
    on_the_fly: bool = Field(
        False,
        description="False: a corrupted cache made once (the report); "
        "True: a new random corruption every time an image is used (its proposed improvement)",
    )
    clean_share: float = Field(0.0, ge=0, le=0.95, description="share of images left clean (its other proposal)")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _levels_are_a_range(self) -> CorruptionTraining:
        low, high = self.levels
        if not 1 <= low <= high <= 4:
            raise ValueError(f"levels must be (low, high) with 1 <= low <= high <= 4, got {self.levels}")
        return self


class BalancingMethod(_Section):
    """One row of Table 5: a way of countering the class imbalance, on the chapter's model row."""

    name: str = Field(description="the row's name, as in the report's Table 5")
    loss: LossName = "cross_entropy"
    gamma: float | None = Field(None, ge=0, le=10)
    beta: float | None = Field(None, ge=0, lt=1)
    sampling: Sampling = "none"
    dropout: float | None = Field(None, ge=0, lt=1, description="overrides train.dropout")
    epochs: int | None = Field(None, ge=1, description="overrides the model row's epochs")
    batch_size: int | None = Field(None, ge=1, description="overrides the model row's batch size")
    restart: bool = Field(False, description="fine-tune from the cross-entropy row's best weights")


#: The report's Table 5, in its order (gamma, beta, dropout as the report).
TABLE5_METHODS = (
    BalancingMethod(name="cross-entropy (baseline)"),
    *(BalancingMethod(name=f"focal loss gamma={gamma}", loss="focal", gamma=gamma) for gamma in (1, 2, 3, 4)),
    *(
        BalancingMethod(name=f"class-balanced loss beta={beta}", loss="class_balanced", beta=beta)
        for beta in (0.9, 0.99, 0.999)
    ),
    BalancingMethod(name="inverse frequency loss", loss="inverse_frequency"),
    *(
        BalancingMethod(name=f"oversampling dropout={dropout}", sampling="oversample", dropout=dropout)
        for dropout in (0, 0.75, 0.9)
    ),
    BalancingMethod(name="oversampling + restart", sampling="oversample", restart=True, epochs=5),
    BalancingMethod(name="SMOTE", sampling="smote"),
)


def chapter_seeds():
    """The ``seeds`` field of a chapter section (balancing, corruption)."""
    return Field(
        None,
        ge=1,
        le=100,
        description="training seeds of this chapter's compared configurations (None: the params' seeds); more "
        "where its runs are cheap, since the findings' MDD falls with the seeds (t quantile and seed spread)",
    )


class BalancingConfig(_Section):
    """Chapter 3: every balancing method trained on one model row (the report: efficientnet-b0, 512 px)."""

    model: ModelRow = ModelRow(model="small-cnn", image_size=128, batch_size=32)
    methods: tuple[BalancingMethod, ...] = TABLE5_METHODS
    smote_k: int = Field(5, ge=1, le=50)
    seeds: int | None = chapter_seeds()

    @model_validator(mode="after")
    def _names_are_unique_and_restart_has_a_baseline(self) -> BalancingConfig:
        names = [method.name for method in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"method names must be unique: {names}")
        if any(method.restart for method in self.methods) and self.methods[0].loss != "cross_entropy":
            raise ValueError("a restart row fine-tunes the first row, which must be plain cross-entropy")
        return self


class AdversarialConfig(_Section):
    """Chapter 5's adversarially trained model: the model row it shares with its baseline, and the scheme."""

    model: ModelRow = ModelRow(model="small-cnn", image_size=128, batch_size=32)
    training: AdversarialTraining = AdversarialTraining(eps_255=0.565)
    fine_tune_epochs: int | None = Field(
        None,
        ge=1,
        description="None: train from scratch like the baseline (the report); n: start from the "
        "baseline's best weights and train n epochs (cheaper, for the CPU demo)",
    )


class DecisionAttackConfig(_Section):
    """The decision-based attack (HopSkipJump) of chapter 5."""

    n_images: int = Field(24, ge=1, le=10_000, description="correctly classified test images attacked")
    steps: int = Field(20, ge=1, le=1000)
    max_queries: int = Field(3000, ge=100, le=1_000_000, description="model queries per image at most")
    initial_evals: int = Field(
        100,
        ge=1,
        le=100_000,
        description="decisions per gradient estimate at iteration 1 "
        "(then x sqrt(iteration)); HopSkipJump's default 100",
    )
    max_evals: int = Field(1000, ge=1, le=1_000_000, description="decisions per gradient estimate at most")
    direction_grid_px: int | None = Field(
        None,
        ge=2,
        le=4096,
        description="random directions drawn on a grid of this many px per side and upsampled (QEBA-S, a "
        "low-frequency subspace that converges in far fewer queries); null: per pixel (HopSkipJump)",
    )


#: An L-inf radius x 255 in pixel units (0 = the clean images).
Eps255 = Annotated[float, Field(ge=0, le=64)]
#: A corruption level of the report's Table 6 (1 = mild ... 4 = severe).
CorruptionLevel = Annotated[int, Field(ge=1, le=4)]


class RobustnessConfig(_Section):
    """Chapter 5's evaluation as a robustness reviewer asks for it: APGD-CE, APGD-T and Square
    (pyautoattack) over an eps sweep, the gradient-masking checks, the report's attack as its code
    ran it and the clinical view (AutoAttack-standard: 100 APGD steps, 5,000 Square queries)."""

    n_images: int = Field(240, ge=1, le=100_000, description="a fixed, seeded sample of test images")
    eps_255: tuple[Eps255, ...] = Field(
        (0, 0.5, 1, 2, 4, 8, 16),
        description="L-inf radii x 255, pixel units; the largest must drive the robust accuracy to about 0",
    )
    steps: int = Field(100, ge=1, le=10_000, description="APGD iterations per restart (AutoAttack: 100)")
    restarts: int = Field(1, ge=1, le=100)
    square_queries: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        description="Square's queries per image (AutoAttack: 5,000; below 1,000 only to rehearse or smoke-test)",
    )
    check_eps_255: Eps255 = Field(1.0, description="eps of the transfer and the more-steps checks")
    ladder_steps: int = Field(
        20,
        ge=1,
        le=10_000,
        description="PGD steps of the ladder's longer rungs and of the clinical view's targeted attack (the report: 5)",
    )
    ladder_restarts: int = Field(3, ge=2, le=100, description="restarts of the ladder's strongest PGD rung")
    clinical_per_grade: int = Field(40, ge=1, le=100_000, description="test images per grade of the clinical view")
    clinical_eps_255: Eps255 = Field(0.565, description="the report's 2.5/255 normalised, in pixel units")
    seed: int = Field(0, ge=0)


class AttackConfig(_Section):
    """How models are attacked in chapters 4 and 5 (the report: 240 validation images, PGD with 5 steps)."""

    n_images: int = Field(240, ge=1, le=100_000, description="a fixed, seeded sample of test images")
    eps_255: tuple[Eps255, ...] = Field((0, 0.25, 0.5, 1, 2, 4), description="L-inf radii x 255, pixel units, 0-64")
    steps: int = Field(5, ge=1, le=1000)
    restarts: int = Field(1, ge=1, le=100)
    seed: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    decision: DecisionAttackConfig = DecisionAttackConfig()
    robustness: RobustnessConfig = RobustnessConfig()


class CorruptionConfig(_Section):
    """Chapter 4: the models trained on corrupted images, on one model row (the report:
    efficientnet-b0 at 512 px, batch 48, no dropout)."""

    model: ModelRow = ModelRow(model="small-cnn", image_size=128, batch_size=32)
    level_ranges: tuple[tuple[CorruptionLevel, CorruptionLevel], ...] = Field(
        ((1, 1), (1, 2), (1, 3), (1, 4)), description="Tables 6-7 rows"
    )
    oversampled: bool = Field(True, description="also train on the oversampled set (Table 7)")
    oversampled_epochs: int | None = Field(
        None, ge=1, description="epochs of the oversampled rows (default: the row's)"
    )
    improvements: bool = Field(True, description="add the report's two proposals: mixed clean + corrupted, on the fly")
    clean_share: float = Field(0.5, ge=0, le=0.95, description="clean share of the mixed rows")
    test_levels: tuple[CorruptionLevel, CorruptionLevel] = Field(
        (1, 4), description="corruption of the test set of Table 8 (the report: 1-4)"
    )
    seed: int = Field(0, ge=0)
    seeds: int | None = chapter_seeds()


class AttributionConfig(_Section):
    """Chapter 6: integrated gradients and the other methods, scored against the lesion masks."""

    n_images: int = Field(40, ge=1, le=100_000, description="test images with lesions, a fixed seeded sample")
    verdict_images: int = Field(
        200,
        ge=1,
        le=100_000,
        description="test images with lesions behind the hypothesis "
        "verdict's IG relevance mass, per seed pair (the report's IG only)",
    )
    sanity_images: int = Field(
        8,
        ge=1,
        le=10_000,
        description="images of the randomisation check (the first of the "
        "sample): every method's maps once per re-initialised layer, the dear part",
    )
    sanity_layers: int | None = Field(
        None,
        ge=1,
        description="re-initialise at most this many layers (blocks) from the "
        "output down (null: every layer, the check as published; a rehearsal "
        "shortens it, and the chapter then judges no method)",
    )
    sanity_cascade: Literal["layer", "block"] = Field(
        "layer",
        description="the randomisation cascade's steps: one layer with weights at a time, or one block at a time "
        "(the first numbered element of a module path, e.g. an EfficientNet block: Adebayo et al. stepped through "
        "Inception v3 by block); every layer is re-initialised at the end either way, so the judgement is the same",
    )
    seed: int = Field(0, ge=0)
    ig_steps: int = Field(100, ge=2, le=10_000, description="the report: 100")
    ig_baseline: Literal["uniform", "uniform-normalised", "zero", "grey", "blurred"] = Field(
        "uniform", description="the report: uniform random (its code: in normalised units)"
    )
    ig_method: Literal["riemann_trapezoid", "gausslegendre"] = Field(
        "riemann_trapezoid", description="the report: trapezoid"
    )
    internal_batch_size: int = Field(50, ge=1, description="images x steps evaluated at once (memory bound)")
    adversarial_baseline_eps_255: float = Field(2.0, gt=0, le=64, description="PGD example as IG baseline")
    spurious_cue: float = Field(
        1.0, ge=0, le=1, description="cue strength of the spurious-cue experiment (synthetic data only; 0 = skip)"
    )
    distractor: float = Field(
        0.5,
        ge=0,
        le=1,
        description="P(distractor) in the spurious-cue experiment's data (the grade-independent control)",
    )
    lesion_photographs: Path | None = Field(
        None,
        description="folder of real photographs with clinicians' lesion masks in the IDRiD layout "
        "(images/IDRiD_NN.jpg, masks/IDRiD_NN_HE.png and _EX.png), scored like the synthetic masks; None = skip",
    )


class Params(_Section):
    """A whole params file."""

    name: str = Field(description="short name of this parameter set, e.g. demo")
    description: str = ""
    seed: int = Field(0, ge=0, description="training seed (data seeds are in the data section)")
    seeds: int = Field(
        1,
        ge=1,
        le=100,
        description="training seeds of every configuration a finding compares: seed, seed + 1, ...; "
        "the findings' intervals include the spread over them (at least 3 for a verdict that counts seeds)",
    )
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    baselines: tuple[ModelRow, ...] = Field(
        (ModelRow(model="small-cnn", image_size=128, batch_size=32),),
        description="Table 4: the models trained on the imbalanced data; the first is the baseline of later chapters",
    )
    grading_bar: GradingBar | None = Field(
        None, description="the level the baseline (the first Table-4 row) must reach; chapter 2 says whether it does"
    )
    balancing: BalancingConfig = BalancingConfig()
    corruption: CorruptionConfig = CorruptionConfig()
    adversarial: AdversarialConfig = AdversarialConfig()
    attacks: AttackConfig = AttackConfig()
    attribution: AttributionConfig = AttributionConfig()

    @model_validator(mode="after")
    def _table4_rows_are_distinct(self) -> Params:
        """Two Table-4 rows of one model, size and weights would be one run under two names."""
        rows = [
            (row.model, row.image_size, self.train.pretrained if row.pretrained is None else row.pretrained)
            for row in self.baselines
        ]
        twice = sorted({row for row in rows if rows.count(row) > 1})
        if twice:
            raise ValueError(f"baselines lists the same model, image size and weights twice: {twice}")
        return self


def _describe_error(error: dict[str, Any], model: type[BaseModel], source: str) -> str:
    location = [str(part) for part in error["loc"]]
    key = ".".join(location) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(_fields_at(model, location[:-1])))
        return f"unknown key '{key}' in {source}; allowed keys there: {allowed}"
    if error["type"] == "missing":
        return f"missing key '{key}' in {source}"
    if error["type"] == "value_error":  # a section's own check: its message says what was given
        return f"'{key}' in {source}: {error['ctx']['error']}"
    value = error.get("input")
    hint = ""
    if error["type"] in ("float_type", "int_type") and isinstance(value, str):
        hint = "; write the number without quotes (YAML reads 1e-3 as text: write 1.0e-3 or 0.001)"
    return f"'{key}' in {source}: {error['msg']} (got {value!r}){hint}"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The section class inside an annotation (``X``, ``X | None``, ``tuple[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for arg in getattr(annotation, "__args__", ()) if (found := _model_in(arg))), None)


def _fields_at(model: type[BaseModel], location: list[str]) -> list[str]:
    """The keys allowed at ``location`` (list indices are skipped)."""
    for part in location:
        if not part.isdigit():
            model = _model_in(model.model_fields[part].annotation)
    return list(model.model_fields)


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _json_value(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{value!r} ({type(value).__name__}) is not a number, text, list or mapping; quote it")


def validate_params(raw: dict, source: str = "params") -> Params:
    """Validate a params mapping; raise ParamsError naming every bad key.

    Types are strict, as YAML wrote them: ``"3"`` is not an int, ``true`` is not a number and
    ``"yes"`` is not a boolean (validated as JSON, so lists still fill tuples and text fills paths).
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{source} must be a mapping of keys to values, got {type(raw).__name__}")
    try:
        text = json.dumps(raw, default=_json_value)
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"{source}: {exc}") from None
    try:
        return Params.model_validate_json(text, strict=True)
    except ValidationError as exc:
        lines = [_describe_error(error, Params, source) for error in exc.errors()]
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(lines)) from None


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def expand_variables(text: str) -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` by the environment variable NAME (or the
    default when NAME is unset or empty); an unset variable without a default is a ParamsError."""

    def value(match: re.Match) -> str:
        name, default = match["name"], match["default"]
        found = os.environ.get(name) or default
        if found is None:
            raise ParamsError(f"environment variable {name} is not set (used in the path {text!r})")
        return found

    return _VARIABLE.sub(value, text)


def resolve_path(path: str | Path) -> Path:
    """A path from a params file: environment variables expanded (``${FUNDUS_EYEPACS_MINI:-data/eyepacs-mini}``),
    relative paths relative to the project root."""
    path = Path(expand_variables(str(path))).expanduser()
    return path if path.is_absolute() else project_root() / path


def load_params(path: str | Path, overrides: dict | None = None) -> Params:
    """Read and validate a params YAML file, with optional nested overrides merged on top.

    Example: ``load_params("params/smoke.yaml", {"data": {"image_size": 64}})``.
    """
    path = resolve_path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ParamsError(f"{path} is not a text file (a params file is UTF-8 YAML); give the params file") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if overrides:
        raw = _merge(raw, overrides)
    return validate_params(raw, source=str(path))


#: RunConfig fields added after the run store's first format, with the value all earlier runs had.
LATER_FIELDS = {
    "balanced_epochs": 0,
    "readout": "argmax",
    "shuffled_labels": False,
    "frozen_blocks": 0,
    "frozen_epochs": 0,
}


class RunConfig(_Section):
    """Everything that defines one training run; its hash (with the data's) keys the run store.

    Built from a params file by :func:`run_config`; a chapter changes single fields with
    ``run_config(params, row, dropout=0.5)``.
    """

    model: ModelName
    image_size: int = Field(ge=32, le=1024)
    batch_size: int = Field(ge=1, le=4096)
    epochs: int = Field(ge=1, le=1000)
    optimizer: Optimizer
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    schedule: Schedule
    select_on: SelectOn
    patience: int | None
    balanced_epochs: int = Field(0, ge=0, description="first epochs on class-balanced draws (TrainConfig)")
    dropout: float = Field(ge=0, lt=1)
    readout: Readout = Field("argmax", description="grade readout (TrainConfig)")
    pretrained: bool
    frozen_blocks: int = Field(0, ge=0, le=32, description="stem + first blocks frozen early (TrainConfig)")
    frozen_epochs: int = Field(0, ge=0, description="epochs with frozen_blocks frozen (TrainConfig)")
    augment: AugmentConfig | None = Field(description="None = no augmentation")
    seed: int = Field(ge=0)
    loss: LossName = "cross_entropy"
    gamma: float | None = Field(None, ge=0, le=10, description="focal loss exponent")
    beta: float | None = Field(None, ge=0, lt=1, description="class-balanced loss; None = (N - 1) / N")
    sampling: Sampling = "none"
    smote_k: int = Field(5, ge=1, le=50, description="SMOTE's nearest neighbours")
    init_from: RunConfig | None = Field(None, description="start from this run's best weights (fine-tuning)")
    adversarial: AdversarialTraining | None = Field(None, description="None = clean training")
    corruption: CorruptionTraining | None = Field(None, description="None = clean images")
    shuffled_labels: bool = Field(
        False,
        description="train on the train split's labels permuted with the seed "
        "(chapter 6's data-randomisation sanity check)",
    )

    def identity(self) -> dict:
        """The fields that make the run what it is (the run store's key, a checkpoint's owner): all of
        them, except a field added later (LATER_FIELDS) at the value every earlier run had, so adding a
        field keeps the runs already in a store."""

        def drop(fields: dict) -> dict:
            if isinstance(fields.get("init_from"), dict):
                fields["init_from"] = drop(fields["init_from"])
            return {key: value for key, value in fields.items() if LATER_FIELDS.get(key, object()) != value}

        return drop(self.model_dump(mode="json"))

    @model_validator(mode="after")
    def _loss_has_its_parameter(self) -> RunConfig:
        if self.loss == "focal" and self.gamma is None:
            raise ValueError("the focal loss needs gamma")
        if self.frozen_blocks and self.frozen_epochs and not self.model.startswith("efficientnet"):
            raise ValueError(f"frozen_blocks freezes an efficientnet's first blocks; {self.model} has none")
        if self.frozen_blocks and self.frozen_epochs and not self.pretrained:
            raise ValueError(
                "frozen_blocks keeps pretrained layers fixed early; a from-scratch run would keep "
                "its random first layers (set pretrained: true or frozen_blocks: 0)"
            )
        return self


def run_config(params: Params, row: ModelRow, **changes: Any) -> RunConfig:
    """The run of ``row`` (model, image size, batch size) under the params' training settings."""
    train = params.train
    pretrained = train.pretrained if row.pretrained is None else row.pretrained
    fields = dict(
        model=row.model,
        image_size=row.image_size,
        batch_size=row.batch_size,
        epochs=row.epochs or train.epochs,
        optimizer=train.optimizer,
        lr=row.lr or train.lr,
        weight_decay=train.weight_decay,
        schedule=train.schedule,
        select_on=train.select_on,
        patience=train.patience,
        balanced_epochs=train.balanced_epochs,
        dropout=train.dropout,
        readout=train.readout,
        pretrained=pretrained,
        **(
            {"frozen_blocks": train.frozen_blocks, "frozen_epochs": train.frozen_epochs}
            if row.model.startswith("efficientnet") and pretrained
            else {}
        ),  # nothing learned to keep otherwise
        augment=params.augment if train.augment else None,
        seed=params.seed,
    )
    fields.update(changes)
    return RunConfig(**fields)
