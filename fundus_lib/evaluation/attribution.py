"""Attributions of finished runs (chapter 6), on fixed, seeded test samples: every method's maps,
their scores against lesion masks, the sanity checks, integrated gradients' baselines, the IDRiD
lesion types, and the spurious cue's reliance and attribution. Each result is cached in the run's
folder (``evaluation.cache``), so re-running a chapter repeats no attribution.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from fundus_lib.attacks.pgd import pgd, predict_labels
from fundus_lib.attribution.methods import (
    BLUR_SIGMA_SHARE,
    CAPTUM_IG,
    IG_BASELINES,
    grad_cam,
    ig_baseline,
    integrated_gradients,
    pixel_map,
    saliency,
    smoothgrad,
)
from fundus_lib.attribution.sanity import label_randomisation_check, randomisation_check
from fundus_lib.attribution.scores import (
    REFERENCES,
    deletion_auc,
    deletion_curve,
    lesion_auc,
    pointing_game,
    reference_maps,
    relevance_mass,
)
from fundus_lib.config import AttributionConfig, RuntimeConfig
from fundus_lib.data.cache import Cache
from fundus_lib.data.counterfactual import rerender_variants
from fundus_lib.data.dataset import to_tensor
from fundus_lib.data.idrid import lesion_masks
from fundus_lib.data.pipeline import FundusData
from fundus_lib.data.preprocess import circle_mask
from fundus_lib.data.synthetic import CUE_CODE, DISTRACTOR_CODE, load_specs
from fundus_lib.evaluation.cache import cached, cached_reading
from fundus_lib.evaluation.samples import lesion_sample, sample_images, sanity_rows, test_sample_rows
from fundus_lib.runs import Run
from fundus_lib.statistics import RANDOMISATION_PASS, passes_randomisation
from fundus_lib.training.loop import native_bfloat16

#: The method with the report's settings (100 steps, uniform random baseline, trapezoid rule).
REPORT_IG = "integrated gradients (report)"


#: What every attribution method reads (``attribution_methods``). An evaluation's cache key holds
#: these, the sample settings the evaluation reads and its own extras, so that changing another of
#: chapter 6's settings (a sample size, the cascade) recomputes nothing that does not read it.
METHOD_SETTINGS = frozenset(
    {"seed", "ig_steps", "ig_baseline", "ig_method", "internal_batch_size", "adversarial_baseline_eps_255"}
)


def cached_attribution(
    run: Run, name: str, settings: AttributionConfig, reads: set[str], extra: dict, compute: Callable[[], pd.DataFrame]
) -> pd.DataFrame:
    """``cached_reading`` keyed by the settings in ``METHOD_SETTINGS`` and ``reads``, plus ``extra``."""
    return cached_reading(run, name, settings, METHOD_SETTINGS | reads, extra, compute)


def mass_bfloat16(runtime: RuntimeConfig) -> bool:
    """Whether the mass-only integrated gradients run in bfloat16 here (``runtime.mass_bfloat16``)."""
    return native_bfloat16(runtime.mass_bfloat16)


def mass_precision(bfloat16: bool):
    """The precision of integrated gradients that are only summed into relevance masses:
    bfloat16 autocast on the CPU when ``bfloat16`` (``runtime.mass_bfloat16`` resolved), else float32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16)


def precision_key(bfloat16: bool) -> dict:
    """What the precision adds to a mass evaluation's cache settings: nothing for float32, so the
    caches computed before the option existed stay valid."""
    return {"bfloat16": True} if bfloat16 else {}


def attribution_maps(run: Run, data: FundusData, rows, settings: AttributionConfig) -> dict[str, np.ndarray]:
    """Per method, the pixel maps (N, S, S) of the true grade for the images of ``rows``."""
    images, labels = sample_images(data, rows, true_grade=True)
    return method_maps(run.load_model(), images, labels, settings)


def attribution_methods(settings: AttributionConfig) -> dict[str, Callable]:
    """Chapter 6's methods by name: ``method(model, images, labels)`` -> attributions shaped like
    the images (N, 3, S, S); random draws seeded with ``settings.seed``."""

    def report(model, images, labels):
        return integrated_gradients(
            model,
            images,
            labels,
            settings.ig_baseline,
            settings.ig_steps,
            settings.ig_method,
            settings.internal_batch_size,
            torch.Generator().manual_seed(settings.seed),
        )

    def adversarial_baseline(model, images, labels):
        start = pgd(
            model,
            images,
            labels,
            settings.adversarial_baseline_eps_255 / 255,
            steps=10,
            generator=torch.Generator().manual_seed(settings.seed),
        )
        return integrated_gradients(
            model, images, labels, start, settings.ig_steps, settings.ig_method, settings.internal_batch_size
        )

    def captum_defaults(model, images, labels):
        return integrated_gradients(
            model,
            images,
            labels,
            CAPTUM_IG["baseline"],
            CAPTUM_IG["steps"],
            CAPTUM_IG["method"],
            settings.internal_batch_size,
        )

    return {
        REPORT_IG: report,
        "integrated gradients (captum defaults)": captum_defaults,
        "integrated gradients (adversarial baseline)": adversarial_baseline,
        "saliency": saliency,
        "smoothgrad": smoothgrad,
        "grad-cam": grad_cam,
    }


def method_maps(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: AttributionConfig
) -> dict[str, np.ndarray]:
    """Per method, the pixel maps (N, S, S) of class ``labels`` for ``images`` (N, 3, S, S) in [0, 1],
    then the model-free ``REFERENCES`` (random, Sobel edges, intensity) that every method must beat."""
    maps = {name: pixel_map(method(model, images, labels)) for name, method in attribution_methods(settings).items()}
    return maps | reference_maps(images, settings.seed)


def randomisation_checks(run: Run, data: FundusData, settings: AttributionConfig) -> pd.DataFrame:
    """Every method's cascading model-parameter randomisation check (``randomisation_check``) on
    the first ``settings.sanity_images`` images of the lesion sample (of the test sample on data
    without lesion masks), for their true grade: one
    row per method and re-initialised layer, and ``passes`` per method (``passes_randomisation``)."""

    def compute() -> pd.DataFrame:
        rows = sanity_rows(data, settings)
        images, labels = sample_images(data, rows, true_grade=True)
        model = run.load_model()
        tables = []
        for name, method in attribution_methods(settings).items():
            check = randomisation_check(
                model, images, labels, method, settings.seed, settings.sanity_layers, settings.sanity_cascade == "block"
            )
            tables.append(check.assign(method=name, passes=passes_randomisation(check), images=len(rows)))
        return pd.concat(tables, ignore_index=True)

    return cached_attribution(
        run,
        "randomisation",
        settings,
        {"n_images", "sanity_images", "sanity_layers", "sanity_cascade"},
        {
            "data": data.manifest_hash,
            "pass": RANDOMISATION_PASS,
            "seeding": "per layer",
        },
        compute,
    )


def verdict_relevance_mass(
    run: Run,
    data: FundusData,
    settings: AttributionConfig,
    progress: bool = False,
    batch_images: int = 16,
    bfloat16: bool = False,
) -> pd.DataFrame:
    """The report's integrated gradients on ``settings.verdict_images`` test images with lesions,
    for their true grade: per image (``row``) the relevance mass on the lesions (the hypothesis
    verdict's measure, paired over seeds); in bfloat16 on the CPU with ``bfloat16`` (``mass_precision``)."""

    def compute() -> pd.DataFrame:
        rows = lesion_sample(data, settings.verdict_images, settings.seed)
        model, method = run.load_model(), attribution_methods(settings)[REPORT_IG]
        masses = []
        for start in tqdm(
            range(0, len(rows), batch_images), desc="IG relevance mass", unit="batch", disable=not progress
        ):
            chosen = rows[start : start + batch_images]
            images, labels = sample_images(data, chosen, true_grade=True)
            with mass_precision(bfloat16):
                attributions = method(model, images, labels)
            maps, masks = pixel_map(attributions.float()), np.asarray(data.cache.masks[chosen])
            masses += [relevance_mass(picture, (mask >= 1) & (mask <= 5)) for picture, mask in zip(maps, masks)]
        return pd.DataFrame({"row": rows, "relevance_mass": masses})

    return cached_attribution(
        run,
        "verdict-relevance-mass",
        settings,
        {"verdict_images"},
        {
            "data": data.manifest_hash,
            "batch": batch_images,
            **precision_key(bfloat16),
        },
        compute,
    )


def label_randomisation_checks(run: Run, shuffled: Run, data: FundusData, settings: AttributionConfig) -> pd.DataFrame:
    """Every method's data-randomisation check (``label_randomisation_check``): ``run``'s maps
    against those of ``shuffled`` (its configuration trained on permuted labels) on the sanity
    images, for their true grade: one row per method."""

    def compute() -> pd.DataFrame:
        rows = sanity_rows(data, settings)
        images, labels = sample_images(data, rows, true_grade=True)
        model, other = run.load_model(), shuffled.load_model()
        return pd.DataFrame(
            [
                {"method": name, "images": len(rows), **label_randomisation_check(model, other, images, labels, method)}
                for name, method in attribution_methods(settings).items()
            ]
        )

    return cached_attribution(
        run,
        "label-randomisation",
        settings,
        {"n_images", "sanity_images"},
        {
            "data": data.manifest_hash,
            "pass": RANDOMISATION_PASS,
            "shuffled": shuffled.root.name,
        },
        compute,
    )


def attribution_scores(run: Run, data: FundusData, settings: AttributionConfig) -> pd.DataFrame:
    """Per test image with lesions and per method: relevance mass on the lesions, pointing game,
    lesion AUC (inside the field of view) and, for every method, the deletion score (mean class
    probability as the most attributed pixels are greyed, lower = more faithful)."""

    def compute() -> pd.DataFrame:
        rows = lesion_sample(data, settings.n_images, settings.seed)
        maps = attribution_maps(run, data, rows, settings)
        model = run.load_model()
        images, labels = sample_images(data, rows, true_grade=True)
        lesions = (np.asarray(data.cache.masks[rows]) >= 1) & (np.asarray(data.cache.masks[rows]) <= 5)
        field = circle_mask(data.config.image_size, data.config.graham_circle)
        records = []
        for method, method_maps in maps.items():
            for index, row in enumerate(rows):
                curve = deletion_curve(model, images[index], int(labels[index]), method_maps[index])
                records.append(
                    {
                        "row": row,
                        "method": method,
                        "grade": int(labels[index]),
                        "relevance_mass": relevance_mass(method_maps[index], lesions[index]),
                        "pointing_game": pointing_game(method_maps[index], lesions[index]),
                        "lesion_auc": lesion_auc(method_maps[index], lesions[index], field),
                        "deletion": deletion_auc(curve),
                    }
                )
        return pd.DataFrame(records)

    return cached_attribution(
        run,
        "attribution",
        settings,
        {"n_images"},
        {
            "data": data.manifest_hash,
            "target": "true grade",
            "references": list(REFERENCES),
        },
        compute,
    )


def ig_baseline_scores(run: Run, data: FundusData, settings: AttributionConfig) -> pd.DataFrame:
    """Integrated gradients with the report's steps and rule from each of ``IG_BASELINES``, on
    the images of the sanity check: per (baseline, image) the completeness gap (sum of the
    attributions - (f(x) - f(baseline)) of the true grade's logit), that gap relative to
    |f(x) - f(baseline)|, and on data with lesion masks the relevance mass."""

    def compute() -> pd.DataFrame:
        has_masks = data.cache.masks is not None
        rows = sanity_rows(data, settings)
        images, labels = sample_images(data, rows, true_grade=True)
        model = run.load_model()
        records = []
        for baseline in IG_BASELINES:
            start = ig_baseline(images, baseline, torch.Generator().manual_seed(settings.seed))
            attributions, gap = integrated_gradients(
                model,
                images,
                labels,
                start,
                settings.ig_steps,
                settings.ig_method,
                settings.internal_batch_size,
                return_delta=True,
            )
            with torch.no_grad():
                index = torch.arange(len(rows))
                change = (model(images)[index, labels] - model(start)[index, labels]).abs()
            maps = pixel_map(attributions)
            for position, row in enumerate(rows):
                lesions = np.asarray(data.cache.masks[row]) if has_masks else None
                records.append(
                    {
                        "baseline": baseline,
                        "row": row,
                        "completeness_gap": float(gap[position]),
                        "relative_gap": float(gap[position].abs() / change[position].clamp_min(1e-12)),
                        "relevance_mass": relevance_mass(maps[position], (lesions >= 1) & (lesions <= 5))
                        if has_masks
                        else float("nan"),
                    }
                )
        return pd.DataFrame(records)

    return cached_attribution(
        run,
        "ig-baselines",
        settings,
        {"n_images", "sanity_images"},
        {
            "data": data.manifest_hash,
            "baselines": list(IG_BASELINES),
            "blur": BLUR_SIGMA_SHARE,
        },
        compute,
    )


def lesion_type_scores(run: Run, cache: Cache, settings: AttributionConfig) -> pd.DataFrame:
    """Per photograph of a lesion-mask cache (IDRiD), method and lesion type: relevance mass,
    pointing game and lesion AUC of the attribution for the model's own predicted grade (the
    photographs carry no grade). Cached in the run folder, keyed by the settings and the photographs."""

    def compute() -> pd.DataFrame:
        model = run.load_model()
        images = torch.stack([to_tensor(np.array(image)) for image in cache.images])
        predicted = torch.as_tensor(predict_labels(model, images))
        maps = method_maps(model, images, predicted, settings)
        field = circle_mask(cache.settings.image_size, cache.settings.circle)
        records = []
        for lesion, masks in lesion_masks(cache).items():
            for method, pictures in maps.items():
                for index in np.flatnonzero(masks.any(axis=(1, 2))):
                    records.append(
                        {
                            "image": cache.manifest.at[index, "image"],
                            "method": method,
                            "lesion": lesion,
                            "predicted grade": int(predicted[index]),
                            "lesion share": float(masks[index][field].mean()),
                            "relevance_mass": relevance_mass(pictures[index], masks[index]),
                            "pointing_game": pointing_game(pictures[index], masks[index]),
                            "lesion_auc": lesion_auc(pictures[index], masks[index], field),
                        }
                    )
        return pd.DataFrame(records)

    extra = {"photographs": cache.manifest["sha1"].tolist(), "references": list(REFERENCES)}
    return cached_attribution(run, "lesion-types", settings, set(), extra, compute)


#: Test images the cue-reliance measure re-renders (a fixed sample: re-rendering is the dear part).
CUE_SAMPLE = 800


#: The last data's counterfactual images (every model of the cue experiment sees the same ones).
_CUE_VARIANTS: dict[str, tuple] = {}


def cue_variants(data: FundusData) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The fixed sample of test images of the cue measures (at most CUE_SAMPLE): rows, whether each
    carries the cue and the distractor, and the images as generated, with the cue removed, with the
    cue flipped and with the distractor flipped. Rendered once per data set in a process."""
    if data.manifest_hash not in _CUE_VARIANTS:
        rows = test_sample_rows(data, CUE_SAMPLE, seed=0)
        specs = {spec.image: spec for spec in load_specs(data.images_dir.parent)}
        chosen = [specs[image] for image in data.manifest.loc[rows, "image"]]
        cue, distractor = np.array([spec.cue for spec in chosen]), np.array([spec.distractor for spec in chosen])
        changes = {
            "cue removed": {"cue": False},
            "cue flipped": {"cue": ~cue},
            "distractor flipped": {"distractor": ~distractor},
        }
        variants = {"as generated": np.asarray(data.cache.images[rows])} | rerender_variants(data, rows, changes)
        _CUE_VARIANTS.clear()
        _CUE_VARIANTS[data.manifest_hash] = (rows, cue, distractor, variants)
    return _CUE_VARIANTS[data.manifest_hash]


def cue_reliance(run: Run, data: FundusData) -> pd.DataFrame:
    """Per image of a fixed sample of test images (at most CUE_SAMPLE): grade, whether it carries
    the cue and the distractor, and the prediction as generated, with the cue removed from every
    image, with the cue flipped (added where absent, removed where present) and with the
    distractor flipped (the control: as salient, independent of the grade)."""

    def compute() -> pd.DataFrame:
        rows, cue, distractor, variants = cue_variants(data)
        model = run.load_model()
        table = pd.DataFrame(
            {"row": rows, "grade": data.manifest.loc[rows, "level"].to_numpy(), "cue": cue, "distractor": distractor}
        )
        for name, images in variants.items():
            tensors = torch.stack([to_tensor(image) for image in images])
            table[name] = torch.cat([predict_labels(model, chunk) for chunk in tensors.split(64)]).numpy()
        return table

    return cached(run, "cue-reliance", {"data": data.manifest_hash, "sample": CUE_SAMPLE}, compute)


def cue_attribution(run: Run, data: FundusData, settings: AttributionConfig, bfloat16: bool = False) -> pd.DataFrame:
    """Per test image carrying the cue (at most ``settings.n_images``): the share of positive IG
    (the report's settings) on the cue patch, on the distractor (where the image has one) and on
    the lesions, and each patch's share of the field; in bfloat16 on the CPU with ``bfloat16``."""

    def compute() -> pd.DataFrame:
        rows = data.rows("test")
        masks = np.asarray(data.cache.masks[rows])
        rows = rows[(masks == CUE_CODE).any(axis=(1, 2))][: settings.n_images]
        masks = np.asarray(data.cache.masks[rows])
        images, labels = sample_images(data, rows, true_grade=True)
        with mass_precision(bfloat16):
            attributions = integrated_gradients(
                run.load_model(),
                images,
                labels,
                settings.ig_baseline,
                settings.ig_steps,
                settings.ig_method,
                settings.internal_batch_size,
                torch.Generator().manual_seed(settings.seed),
            )
        maps = pixel_map(attributions.float())
        field = circle_mask(data.config.image_size, data.config.graham_circle)

        def mass_on(code: int) -> list[float]:
            """Share of positive IG on the patch of ``code``, NaN on an image without it."""
            return [
                relevance_mass(m, mask == code) if (mask == code).any() else float("nan")
                for m, mask in zip(maps, masks)
            ]

        def area_share(code: int) -> list[float]:
            return [(mask == code).sum() / field.sum() if (mask == code).any() else float("nan") for mask in masks]

        return pd.DataFrame(
            {
                "row": rows,
                "grade": labels.numpy(),
                "mass_on_cue": mass_on(CUE_CODE),
                "mass_on_distractor": mass_on(DISTRACTOR_CODE),
                "mass_on_lesions": [relevance_mass(m, (mask >= 1) & (mask <= 5)) for m, mask in zip(maps, masks)],
                "cue_area_share": area_share(CUE_CODE),
                "distractor_area_share": area_share(DISTRACTOR_CODE),
            }
        )

    return cached_attribution(
        run,
        "cue-attribution",
        settings,
        {"n_images"},
        {
            "data": data.manifest_hash,
            "target": "true grade",
            **precision_key(bfloat16),
        },
        compute,
    )
