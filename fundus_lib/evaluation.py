"""Evaluations of finished runs beyond their test metrics, on fixed, seeded samples of test
images: attacks (chapters 4-5), attributions scored against lesion masks and the spurious cue
(chapter 6). Results are cached in the run's folder (``evaluations/``), keyed by the settings and
the data, so re-running a chapter repeats no attack and no attribution.

Example::

    curve = pgd_curve(run, data, params.attacks)           # success rate and robust accuracy per eps
    sizes = decision_attack_sizes(run, data, params.attacks, rows)   # HopSkipJump perturbation sizes
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from fundus_lib.attacks import attack_predictions, hop_skip_jump, perturbation_sizes, pgd, predict_labels, success_table
from fundus_lib.attribution import (
    BLUR_SIGMA_SHARE,
    CAPTUM_IG,
    IG_BASELINES,
    RANDOMISATION_PASS,
    REFERENCES,
    deletion_auc,
    deletion_curve,
    grad_cam,
    ig_baseline,
    integrated_gradients,
    label_randomisation_check,
    lesion_auc,
    pixel_map,
    passes_randomisation,
    pointing_game,
    randomisation_check,
    reference_maps,
    relevance_mass,
    saliency,
    smoothgrad,
)
from fundus_lib.config import AttackConfig, AttributionConfig
from fundus_lib.data.cache import Cache
from fundus_lib.data.counterfactual import rerender
from fundus_lib.data.idrid import lesion_masks
from fundus_lib.data.dataset import FundusDataset, to_tensor
from fundus_lib.data.pipeline import FundusData, data_variant
from fundus_lib.data.preprocess import circle_mask
from fundus_lib.data.synthetic import CUE_CODE, DISTRACTOR_CODE, load_specs
from fundus_lib.files import write_atomic
from fundus_lib.runs import Run
from fundus_lib.train import evaluate, predict


def cached(run: Run, name: str, settings: dict, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """``compute()``'s table, stored once per run and settings in ``<run>/evaluations/``."""
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = run.root / "evaluations" / f"{name}-{digest}.csv"
    if path.exists():
        return pd.read_csv(path)
    table = compute()
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, table.to_csv(index=False))
    return table


def test_sample_rows(data: FundusData, n_images: int, seed: int) -> np.ndarray:
    """The array rows of a fixed, seeded sample of at most ``n_images`` test images, sorted."""
    rows = data.rows("test")
    return np.sort(np.random.default_rng(seed).choice(rows, size=min(n_images, len(rows)), replace=False))


def test_sample(data: FundusData, n_images: int, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """A fixed, seeded sample of test images: (array rows, images float (N, 3, S, S) in [0, 1], labels (N,))."""
    chosen = test_sample_rows(data, n_images, seed)
    images = torch.stack([to_tensor(np.array(data.cache.images[row])) for row in chosen])
    labels = torch.as_tensor(data.manifest.loc[chosen, "level"].to_numpy(), dtype=torch.int64)
    return chosen, images, labels


def pgd_outcomes(run: Run, data: FundusData, settings: AttackConfig, progress: bool = True) -> pd.DataFrame:
    """The report's PGD sweep on the run's best model, per image of the attack sample: one row per
    (eps, image) with the manifest ``row``, label, clean and attacked prediction (``attack_predictions``)."""
    def compute() -> pd.DataFrame:
        rows, images, labels = test_sample(data, settings.n_images, settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        outcomes = attack_predictions(run.load_model(), images, labels, [eps / 255 for eps in settings.eps_255],
                                      settings.steps, settings.batch_size, restarts=settings.restarts,
                                      generator=generator, progress=progress)
        return outcomes.assign(row=rows[outcomes["image"].to_numpy()])

    keys = settings.model_dump(exclude={"decision", "robustness"}, mode="json")
    return cached(run, "pgd-outcomes", {**keys, "data": data.manifest_hash}, compute)


def pgd_curve(run: Run, data: FundusData, settings: AttackConfig, progress: bool = True) -> pd.DataFrame:
    """The report's PGD sweep on the run's best model: success rate and robust accuracy per eps."""
    return success_table(pgd_outcomes(run, data, settings, progress))


def external_pgd_curve(params, run: Run, settings: AttackConfig, progress: bool = True) -> pd.DataFrame:
    """The report's PGD sweep on a seeded sample of ``settings.n_images`` photographs of the external
    test set (``params.data.external``, none of them trained or tuned on): success rate and robust
    accuracy per eps, as ``pgd_curve`` on the run's own test images."""
    from fundus_lib.config import resolve_path
    from fundus_lib.grading import unseen_photographs

    cache, manifest = unseen_photographs(params, run, resolve_path(params.data.external), progress=False)
    usable = manifest.index[manifest["status"] == "ok"].to_numpy()

    def compute() -> pd.DataFrame:
        rng = np.random.default_rng(settings.seed)
        rows = np.sort(rng.choice(usable, size=min(settings.n_images, len(usable)), replace=False))
        images = torch.stack([to_tensor(np.array(cache.images[row])) for row in rows])
        labels = torch.tensor(manifest.loc[rows, "level"].to_numpy(), dtype=torch.int64)
        return attack_predictions(run.load_model(), images, labels, [eps / 255 for eps in settings.eps_255],
                                  settings.steps, settings.batch_size, restarts=settings.restarts,
                                  generator=torch.Generator().manual_seed(settings.seed), progress=progress)

    keys = settings.model_dump(exclude={"decision", "robustness"}, mode="json")
    external = hashlib.sha1("".join(manifest.loc[usable, "sha1"]).encode()).hexdigest()
    return success_table(cached(run, "external-pgd-outcomes", {**keys, "external": external}, compute))


def decision_attack_sizes(run: Run, data: FundusData, settings: AttackConfig, rows: np.ndarray) -> pd.DataFrame:
    """HopSkipJump on the test images of manifest ``rows`` (chapter 5: those every compared model
    grades correctly, so both models are attacked on the same images): per image its L2 and L-inf
    perturbation ([0, 1] pixel units; NaN where no adversarial was found within the query budget),
    queries used and ``l2_<k>``, the best L2 after iteration k (k = 0: the start), to show whether
    the budget converges. Each attack starts from a test image that the model grades otherwise
    (else uniform noise): on real photographs a model grades noise like most images, grade 0, so
    noise rarely starts an attack on a correctly graded grade-0 image."""
    def compute() -> pd.DataFrame:
        if len(rows) == 0:
            return pd.DataFrame({column: pd.Series(dtype=float) for column in ("l2", "linf", "row", "queries", "l2_0")}
                                | {"success": pd.Series(dtype=bool)})
        images, labels = sample_images(data, rows)
        starts, _ = sample_images(data, other_grade_rows(data, rows, test_grades(run, data), settings.seed))
        history: list[torch.Tensor] = []
        result = hop_skip_jump(run.load_model(), images, labels, steps=settings.decision.steps,
                               max_queries=settings.decision.max_queries, starts=starts,
                               initial_evals=settings.decision.initial_evals, max_evals=settings.decision.max_evals,
                               direction_grid_px=settings.decision.direction_grid_px,
                               generator=torch.Generator().manual_seed(settings.seed), history=history)
        sizes = perturbation_sizes(images, result.adversarials, result.success).per_image
        trace = pd.DataFrame(torch.stack(history, dim=1).numpy(), columns=[f"l2_{k}" for k in range(len(history))])
        return pd.concat([sizes.assign(row=rows, success=result.success.numpy(), queries=result.queries.numpy()),
                          trace], axis=1)

    keys = settings.model_dump(exclude={"robustness"}, mode="json")
    return cached(run, "decision", {**keys, "rows": [int(row) for row in rows], "data": data.manifest_hash,
                                    "starts": "a test image the model grades otherwise"}, compute)


def test_grades(run: Run, data: FundusData) -> np.ndarray:
    """The run's grade of each test image (the run's own evaluation), in ``data.rows("test")`` order."""
    predictions = run.predictions().query("split == 'test'").set_index("image")["prediction"]
    return predictions.loc[data.manifest.loc[data.rows("test"), "image"]].to_numpy()


def other_grade_rows(data: FundusData, rows: np.ndarray, grades: np.ndarray, seed: int) -> np.ndarray:
    """For each manifest row (a correctly graded image: its grade is its label), a seeded random
    test row that is graded otherwise (``grades``: a grade per test row, ``data.rows("test")``
    order); the row itself where no test image is."""
    generator = np.random.default_rng(seed)
    test = data.rows("test")
    chosen = []
    for row, level in zip(rows, data.manifest.loc[rows, "level"].to_numpy()):
        others = test[grades != level]
        chosen.append(generator.choice(others) if len(others) else row)
    return np.array(chosen, dtype=int)


# --- attributions (chapter 6) ----------------------------------------------------------------------


def lesion_sample(data: FundusData, n_images: int, seed: int) -> np.ndarray:
    """Array rows of a fixed, seeded sample of test images whose mask holds a lesion (codes 1-5)."""
    if data.cache.masks is None:
        raise ValueError("lesion scores need lesion masks (the synthetic data)")
    rows = data.rows("test")
    masks = np.asarray(data.cache.masks[rows])
    with_lesion = rows[((masks >= 1) & (masks <= 5)).any(axis=(1, 2))]
    return np.sort(np.random.default_rng(seed).choice(with_lesion, size=min(n_images, len(with_lesion)), replace=False))


def sample_images(data: FundusData, rows, true_grade: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) in [0, 1] and their labels, or with ``true_grade`` the class an attribution
    explains: on synthetic data the generator's grade (``label_noise`` moved some labels off it)."""
    images = torch.stack([to_tensor(np.array(data.cache.images[row])) for row in rows])
    labels = data.manifest.loc[rows, "level"].to_numpy()
    if true_grade and data.config.source == "synthetic":
        grades = {spec.image: spec.grade for spec in load_specs(data.images_dir.parent)}
        labels = np.array([grades[image] for image in data.manifest.loc[rows, "image"]])
    return images, torch.as_tensor(labels, dtype=torch.int64)


#: The method with the report's settings (100 steps, uniform random baseline, trapezoid rule).
REPORT_IG = "integrated gradients (report)"


def attribution_maps(run: Run, data: FundusData, rows, settings: AttributionConfig) -> dict[str, np.ndarray]:
    """Per method, the pixel maps (N, S, S) of the true grade for the images of ``rows``."""
    images, labels = sample_images(data, rows, true_grade=True)
    return method_maps(run.load_model(), images, labels, settings)


def attribution_methods(settings: AttributionConfig) -> dict[str, Callable]:
    """Chapter 6's methods by name: ``method(model, images, labels)`` -> attributions shaped like
    the images (N, 3, S, S); random draws seeded with ``settings.seed``."""
    def report(model, images, labels):
        return integrated_gradients(model, images, labels, settings.ig_baseline, settings.ig_steps, settings.ig_method,
                                    settings.internal_batch_size, torch.Generator().manual_seed(settings.seed))

    def adversarial_baseline(model, images, labels):
        start = pgd(model, images, labels, settings.adversarial_baseline_eps_255 / 255, steps=10,
                    generator=torch.Generator().manual_seed(settings.seed))
        return integrated_gradients(model, images, labels, start, settings.ig_steps, settings.ig_method,
                                    settings.internal_batch_size)

    def captum_defaults(model, images, labels):
        return integrated_gradients(model, images, labels, CAPTUM_IG["baseline"], CAPTUM_IG["steps"],
                                    CAPTUM_IG["method"], settings.internal_batch_size)

    return {REPORT_IG: report, "integrated gradients (captum defaults)": captum_defaults,
            "integrated gradients (adversarial baseline)": adversarial_baseline, "saliency": saliency,
            "smoothgrad": smoothgrad, "grad-cam": grad_cam}


def method_maps(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                settings: AttributionConfig) -> dict[str, np.ndarray]:
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
            check = randomisation_check(model, images, labels, method, settings.seed, settings.sanity_layers)
            tables.append(check.assign(method=name, passes=passes_randomisation(check), images=len(rows)))
        return pd.concat(tables, ignore_index=True)

    return cached(run, "randomisation", {**settings.model_dump(mode="json"), "data": data.manifest_hash,
                                         "pass": RANDOMISATION_PASS, "seeding": "per layer"}, compute)


def verdict_relevance_mass(run: Run, data: FundusData, settings: AttributionConfig, progress: bool = False,
                           batch_images: int = 16) -> pd.DataFrame:
    """The report's integrated gradients on ``settings.verdict_images`` test images with lesions,
    for their true grade: per image (``row``) the relevance mass on the lesions (the hypothesis
    verdict's measure, paired over seeds)."""
    def compute() -> pd.DataFrame:
        rows = lesion_sample(data, settings.verdict_images, settings.seed)
        model, method = run.load_model(), attribution_methods(settings)[REPORT_IG]
        masses = []
        for start in tqdm(range(0, len(rows), batch_images), desc="IG relevance mass", unit="batch", disable=not progress):
            chosen = rows[start:start + batch_images]
            images, labels = sample_images(data, chosen, true_grade=True)
            maps, masks = pixel_map(method(model, images, labels)), np.asarray(data.cache.masks[chosen])
            masses += [relevance_mass(picture, (mask >= 1) & (mask <= 5)) for picture, mask in zip(maps, masks)]
        return pd.DataFrame({"row": rows, "relevance_mass": masses})

    return cached(run, "verdict-relevance-mass", {**settings.model_dump(mode="json"), "data": data.manifest_hash,
                                                  "batch": batch_images}, compute)


def sanity_rows(data: FundusData, settings: AttributionConfig) -> np.ndarray:
    """The sanity checks' images: the first ``settings.sanity_images`` of the lesion sample (of the
    test sample on data without lesion masks)."""
    rows = (lesion_sample(data, settings.n_images, settings.seed) if data.cache.masks is not None
            else test_sample_rows(data, settings.n_images, settings.seed))
    return rows[: settings.sanity_images]


def label_randomisation_checks(run: Run, shuffled: Run, data: FundusData, settings: AttributionConfig) -> pd.DataFrame:
    """Every method's data-randomisation check (``label_randomisation_check``): ``run``'s maps
    against those of ``shuffled`` (its configuration trained on permuted labels) on the sanity
    images, for their true grade: one row per method."""
    def compute() -> pd.DataFrame:
        rows = sanity_rows(data, settings)
        images, labels = sample_images(data, rows, true_grade=True)
        model, other = run.load_model(), shuffled.load_model()
        return pd.DataFrame([{"method": name, "images": len(rows),
                              **label_randomisation_check(model, other, images, labels, method)}
                             for name, method in attribution_methods(settings).items()])

    return cached(run, "label-randomisation", {**settings.model_dump(mode="json"), "data": data.manifest_hash,
                                               "pass": RANDOMISATION_PASS, "shuffled": shuffled.root.name}, compute)


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
                records.append({"row": row, "method": method, "grade": int(labels[index]),
                                "relevance_mass": relevance_mass(method_maps[index], lesions[index]),
                                "pointing_game": pointing_game(method_maps[index], lesions[index]),
                                "lesion_auc": lesion_auc(method_maps[index], lesions[index], field),
                                "deletion": deletion_auc(curve)})
        return pd.DataFrame(records)

    return cached(run, "attribution", {**settings.model_dump(mode="json"), "data": data.manifest_hash,
                                       "target": "true grade", "references": list(REFERENCES)}, compute)


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
            attributions, gap = integrated_gradients(model, images, labels, start, settings.ig_steps, settings.ig_method,
                                                     settings.internal_batch_size, return_delta=True)
            with torch.no_grad():
                index = torch.arange(len(rows))
                change = (model(images)[index, labels] - model(start)[index, labels]).abs()
            maps = pixel_map(attributions)
            for position, row in enumerate(rows):
                lesions = np.asarray(data.cache.masks[row]) if has_masks else None
                records.append({"baseline": baseline, "row": row, "completeness_gap": float(gap[position]),
                                "relative_gap": float(gap[position].abs() / change[position].clamp_min(1e-12)),
                                "relevance_mass": relevance_mass(maps[position], (lesions >= 1) & (lesions <= 5))
                                if has_masks else float("nan")})
        return pd.DataFrame(records)

    return cached(run, "ig-baselines", {**settings.model_dump(mode="json"), "data": data.manifest_hash,
                                        "baselines": list(IG_BASELINES), "blur": BLUR_SIGMA_SHARE}, compute)


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
                    records.append({"image": cache.manifest.at[index, "image"], "method": method, "lesion": lesion,
                                    "predicted grade": int(predicted[index]),
                                    "lesion share": float(masks[index][field].mean()),
                                    "relevance_mass": relevance_mass(pictures[index], masks[index]),
                                    "pointing_game": pointing_game(pictures[index], masks[index]),
                                    "lesion_auc": lesion_auc(pictures[index], masks[index], field)})
        return pd.DataFrame(records)

    key = {**settings.model_dump(mode="json"), "photographs": cache.manifest["sha1"].tolist(),
           "references": list(REFERENCES)}
    return cached(run, "lesion-types", key, compute)


# --- the spurious cue (chapter 6) --------------------------------------------------------------------


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
        variants = {"as generated": np.asarray(data.cache.images[rows])}
        changes = {"cue removed": {"cue": False}, "cue flipped": {"cue": ~cue}, "distractor flipped": {"distractor": ~distractor}}
        for name, change in tqdm(changes.items(), desc="counterfactual images", unit="variant", leave=False):
            variants[name] = rerender(data, rows, **change)
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
        table = pd.DataFrame({"row": rows, "grade": data.manifest.loc[rows, "level"].to_numpy(), "cue": cue,
                              "distractor": distractor})
        for name, images in variants.items():
            tensors = torch.stack([to_tensor(image) for image in images])
            table[name] = torch.cat([predict_labels(model, chunk) for chunk in tensors.split(64)]).numpy()
        return table

    return cached(run, "cue-reliance", {"data": data.manifest_hash, "sample": CUE_SAMPLE}, compute)


def cue_attribution(run: Run, data: FundusData, settings: AttributionConfig) -> pd.DataFrame:
    """Per test image carrying the cue (at most ``settings.n_images``): the share of positive IG
    (the report's settings) on the cue patch, on the distractor (where the image has one) and on
    the lesions, and each patch's share of the field."""
    def compute() -> pd.DataFrame:
        rows = data.rows("test")
        masks = np.asarray(data.cache.masks[rows])
        rows = rows[(masks == CUE_CODE).any(axis=(1, 2))][: settings.n_images]
        masks = np.asarray(data.cache.masks[rows])
        images, labels = sample_images(data, rows, true_grade=True)
        maps = pixel_map(integrated_gradients(run.load_model(), images, labels, settings.ig_baseline, settings.ig_steps,
                                              settings.ig_method, settings.internal_batch_size,
                                              torch.Generator().manual_seed(settings.seed)))
        field = circle_mask(data.config.image_size, data.config.graham_circle)

        def mass_on(code: int) -> list[float]:
            """Share of positive IG on the patch of ``code``, NaN on an image without it."""
            return [relevance_mass(m, mask == code) if (mask == code).any() else float("nan") for m, mask in zip(maps, masks)]

        def area_share(code: int) -> list[float]:
            return [(mask == code).sum() / field.sum() if (mask == code).any() else float("nan") for mask in masks]

        return pd.DataFrame({"row": rows, "grade": labels.numpy(), "mass_on_cue": mass_on(CUE_CODE),
                             "mass_on_distractor": mass_on(DISTRACTOR_CODE),
                             "mass_on_lesions": [relevance_mass(m, (mask >= 1) & (mask <= 5)) for m, mask in zip(maps, masks)],
                             "cue_area_share": area_share(CUE_CODE), "distractor_area_share": area_share(DISTRACTOR_CODE)})

    return cached(run, "cue-attribution", {**settings.model_dump(mode="json"), "data": data.manifest_hash,
                                           "target": "true grade"}, compute)


# --- corrupted test images (chapter 4) -------------------------------------------------------------


def corrupted_test_predictions(run: Run, data: FundusData, levels: tuple[int, int], seed: int) -> pd.DataFrame:
    """The run's best model on the test split with every image corrupted (a random type and a level
    in ``levels``, seeded): per test image its manifest ``row``, label and probabilities p0-p4."""
    def compute() -> pd.DataFrame:
        corrupted = data_variant(data, False, corruption_levels=tuple(levels), corruption_seed=seed)
        dataset = FundusDataset(corrupted, "test")
        probabilities = predict(run.load_model(), dataset, torch.device("cpu"))
        table = pd.DataFrame({"row": dataset.rows, "label": dataset.labels})
        return table.join(pd.DataFrame(probabilities, columns=[f"p{grade}" for grade in range(probabilities.shape[1])]))

    return cached(run, "corrupted-test-predictions", {"levels": list(levels), "seed": seed, "data": data.manifest_hash},
                  compute)


def corrupted_test_metrics(run: Run, data: FundusData, levels: tuple[int, int], seed: int) -> pd.DataFrame:
    """The same as one row with accuracy, balanced_accuracy, kappa and loss."""
    table = corrupted_test_predictions(run, data, levels, seed)
    probabilities = table.filter(regex=r"^p\d$").to_numpy()
    return pd.DataFrame([evaluate(probabilities, table["label"].to_numpy())])
