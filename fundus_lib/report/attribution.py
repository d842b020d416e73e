"""Chapter 6's tables, figures and run-dependent prose: Figures 7 and 8, integrated gradients from
each baseline, the sanity checks, the scores against the lesion masks (synthetic and IDRiD), the
spurious cue and the hypothesis verdict, built from the evaluations of
``fundus_lib.evaluation.attribution`` (which cache what they measure) and judged by the rules of
``fundus_lib.statistics`` and ``fundus_lib.findings``.

Attribution maps are per pixel (summed over the colour channels); shares (relevance mass, changed
predictions, accuracy) are fractions in [0, 1], shown as % by the tables. Functions that return
text return Markdown, for the chapter to glue (``myst_nb.glue``) into its prose; where the text
depends on what the run has (lesion masks, the cue experiment, the IDRiD photographs) it is the
sentence the book shows in that case.

Example::

    sample = figure_sample(data, settings.seed)
    maps = report_ig(runs, sample, settings)
    overlay_figure(sample, maps)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fundus_lib.attribution.methods import integrated_gradients, overlay, pixel_map
from fundus_lib.attribution.scores import reference_margin
from fundus_lib.config import AttributionConfig, Params, resolve_path
from fundus_lib.data.cache import Cache
from fundus_lib.data.dataset import to_tensor
from fundus_lib.data.idrid import IdridError, idrid_cache, lesion_masks
from fundus_lib.data.pipeline import FundusData
from fundus_lib.data.synthetic import PATCH_AMPLITUDE, load_specs
from fundus_lib.evaluation.attribution import (
    REPORT_IG,
    attribution_maps,
    attribution_scores,
    cue_attribution,
    cue_reliance,
    ig_baseline_scores,
    lesion_type_scores,
    mass_bfloat16,
    randomisation_checks,
)
from fundus_lib.experiments import has_spurious_experiment, spurious_params, spurious_runs
from fundus_lib.findings import WORDS, Evidence, changed_by, cue_power
from fundus_lib.report.numbers import other_study
from fundus_lib.report.plots import image_grid
from fundus_lib.report.tables import styled
from fundus_lib.runs import Run, get_run, run_data
from fundus_lib.statistics import RANDOMISATION_PASS, SMALLER, mean_interval

#: The measures of the lesion-mask scores (synthetic data; IDRiD has no deletion score).
LESION_MEASURES = ("relevance_mass", "pointing_game", "lesion_auc", "deletion")


# --- Figures 7 and 8 -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureSample:
    """The test images of Figures 7 and 8: one of grade 0 and one of grade 4 (where the split has one)."""

    rows: list  # array rows of the images (manifest index)
    names: list[str]  # their file names
    images: torch.Tensor  # (N, 3, S, S) in [0, 1]
    labels: torch.Tensor  # (N,) true grades


@dataclass(frozen=True)
class ModelMaps:
    """One model's integrated gradients of the figure images."""

    maps: np.ndarray  # (N, S, S) per-pixel attributions (summed over colour channels)
    delta: torch.Tensor  # (N,) completeness gap: sum of attributions - (f(x) - f(baseline)), true grade's logit


def figure_sample(data: FundusData, seed: int) -> FigureSample:
    """A test image of grade 0 and one of grade 4, each drawn at random (``seed``) among the test
    images of its grade (a grade without test images is left out)."""
    test_rows = data.rows("test")
    levels = data.manifest.loc[test_rows, "level"].to_numpy()
    rng = np.random.default_rng(seed)
    picked = {grade: rng.choice(test_rows[levels == grade]) for grade in (0, 4) if (levels == grade).any()}
    rows = list(picked.values())
    return FigureSample(
        rows,
        [data.manifest.at[row, "image"] for row in rows],
        torch.stack([to_tensor(np.array(data.cache.images[row])) for row in rows]),
        torch.as_tensor(data.manifest.loc[rows, "level"].to_numpy()),
    )


def report_ig(runs: dict[str, Run], sample: FigureSample, settings: AttributionConfig) -> dict[str, ModelMaps]:
    """Per model, integrated gradients of the sample's true grades with the params' settings (the
    report's: 100 steps from uniform random pixels, trapezoid rule), the baseline drawn with
    ``settings.seed``: the per-pixel maps and the completeness gaps."""
    maps = {}
    for name, run in runs.items():
        attributions, delta = integrated_gradients(
            run.load_model(),
            sample.images,
            sample.labels,
            settings.ig_baseline,
            settings.ig_steps,
            settings.ig_method,
            settings.internal_batch_size,
            torch.Generator().manual_seed(settings.seed),
            return_delta=True,
        )
        maps[name] = ModelMaps(pixel_map(attributions), delta)
    return maps


def completeness_text(maps: dict[str, ModelMaps]) -> str:
    """The completeness gaps per model and image, e.g. ``baseline: +0.0012, -0.0003; adversarially
    trained: ...`` (logit units, four decimals)."""
    return "; ".join(
        f"{name}: " + ", ".join(f"{value:+.4f}" for value in item.delta.tolist()) for name, item in maps.items()
    )


def overlay_figure(sample: FigureSample, maps: dict[str, ModelMaps]):
    """Figures 7 and 8: per image a row of the image (titled with its grade and file) and each
    model's integrated gradients over it (``overlay``: green positive, red negative). A Figure."""
    pictures, titles = [], []
    for position, name in enumerate(sample.names):
        image = sample.images[position].permute(1, 2, 0).numpy()
        pictures.append(image)
        titles.append(f"grade {sample.labels[position].item()} ({name})")
        for model, item in maps.items():
            pictures.append(overlay(image, item.maps[position]))
            titles.append(model)
    return image_grid(pictures, titles, ncols=1 + len(maps), cell_inches=2.8)


# --- integrated gradients' baselines ---------------------------------------------------------------------------


def ig_baseline_table(runs: dict[str, Run], data: FundusData, settings: AttributionConfig):
    """Per model and IG baseline (``ig_baseline_scores``, on the sanity-check images): the images,
    the median completeness gap relative to |f(x) - f(baseline)| (%), the largest absolute gap
    (logit units) and, on data with lesion masks, the mean relevance mass (%). A styled table."""
    scores = pd.concat(
        {name: ig_baseline_scores(run, data, settings) for name, run in runs.items()}, names=["model"]
    ).reset_index("model")
    table = scores.groupby(["model", "baseline"], sort=False).agg(
        images=("row", "size"),
        median_relative_gap=("relative_gap", "median"),
        largest_gap=("completeness_gap", lambda gaps: gaps.abs().max()),
        relevance_mass=("relevance_mass", "mean"),
    )
    if table["relevance_mass"].isna().all():
        table = table.drop(columns="relevance_mass")
    return styled(
        table,
        percent=("median_relative_gap", "relevance_mass"),
        decimals=4,
        caption=f"IG ({settings.ig_steps} steps, {settings.ig_method}) from each baseline: completeness gap "
        "(|sum of attributions - (f(x) - f(baseline))|, of the true grade's logit) and mean relevance mass",
    )


# --- the sanity checks -----------------------------------------------------------------------------------------


def cascade_checks(runs: dict[str, Run], data: FundusData, settings: AttributionConfig) -> pd.DataFrame:
    """Every model's cascading randomisation checks (``randomisation_checks``) in one frame: one
    row per model, method and re-initialised layer (rank correlation and SSIM with the trained
    model's maps, median over images; ``passes`` per method)."""
    checks = pd.concat({name: randomisation_checks(run, data, settings) for name, run in runs.items()}, names=["model"])
    return checks.reset_index("model").reset_index(drop=True)


def cascade_ends(checks: pd.DataFrame) -> pd.DataFrame:
    """The last step of each (method, model) cascade: every layer re-initialised (indexed by method, model)."""
    return checks.groupby(["method", "model"], sort=False).last()


def cascade_note(settings: AttributionConfig) -> str:
    """Markdown: how this run's cascade stepped (by block: ``attribution.sanity_cascade``) and the
    warning that a shortened cascade (``attribution.sanity_layers`` set) judges no method; empty for
    the check as published."""
    notes = []
    if settings.sanity_cascade == "block":
        notes.append(
            "**By block** (`attribution.sanity_cascade: block`): each step re-initialises a whole block (an "
            "EfficientNet block, the head), as Adebayo et al. stepped through Inception v3, instead of one layer; "
            "the last step, every layer re-initialised, is the same model, so each method's verdict is the same "
            "(see the deviations page)."
        )
    if settings.sanity_layers is not None:
        notes.append(
            f"**Shortened check** (`attribution.sanity_layers: {settings.sanity_layers}`): only the top "
            f"{settings.sanity_layers} steps were taken, so no method is judged and none is marked below."
        )
    return " ".join(notes)


def cascade_table(ends: pd.DataFrame):
    """The cascade's end per method and model: images, layers re-initialised, rank correlation and
    SSIM (median over images) and whether it passes (below ``RANDOMISATION_PASS``). A styled table."""
    columns = {"layers": "layers re-initialised", "rank_correlation": "rank correlation"}
    return styled(
        ends[["images", "layers", "rank_correlation", "ssim", "passes"]].rename(
            columns=columns | {"passes": f"passes (< {RANDOMISATION_PASS})"}
        ),
        caption="Every layer re-initialised: similarity to the trained model's maps (median over images)",
    )


def label_check_table(checks: pd.DataFrame, shuffled: Run, baseline: Run):
    """The data-randomisation check per method (``label_randomisation_checks``, indexed by method):
    images, rank correlation and SSIM of the baseline's maps against the shuffled-label model's
    (median over images) and whether it passes; the caption gives both models' test accuracy (%).
    A styled table."""
    return styled(
        checks[["images", "rank_correlation", "ssim", "passes"]].rename(
            columns={"rank_correlation": "rank correlation", "passes": f"passes (< {RANDOMISATION_PASS})"}
        ),
        caption=f"The baseline's maps against those of its configuration trained on shuffled labels (median over "
        f"images; the shuffled-label model's test accuracy: {shuffled.metrics('test')['accuracy']:.1%}, the "
        f"baseline's: {baseline.metrics('test')['accuracy']:.1%})",
    )


# --- scores against lesion masks -------------------------------------------------------------------------------


def lesion_scores(runs: dict[str, Run], data: FundusData, settings: AttributionConfig) -> pd.DataFrame:
    """Every model's ``attribution_scores`` in one frame (column ``model``): per test image with
    lesions and method, relevance mass, pointing game, lesion AUC and deletion."""
    scores = pd.concat({name: attribution_scores(run, data, settings) for name, run in runs.items()}, names=["model"])
    return scores.reset_index("model").reset_index(drop=True)


def score_summary(
    scores: pd.DataFrame,
    failing: set[str],
    keys: Sequence[str] = ("method", "model"),
    measures: Sequence[str] = LESION_MEASURES,
    count: str = "images",
) -> pd.DataFrame:
    """Per group of ``keys`` (in the order of the scores): the number of images (column ``count``)
    and each measure's mean with its 95 % bootstrap interval (``statistics.mean_interval``) as text,
    ``0.123 [0.101, 0.145]``; a method in ``failing`` is marked "(fails the sanity check)".
    Indexed by ``keys``."""
    keys = list(keys)
    summary = []
    for key, group in scores.groupby(keys, sort=False):
        entry = dict(zip(keys, key))
        entry["method"] = (
            f"{entry['method']} (fails the sanity check)" if entry["method"] in failing else entry["method"]
        )
        entry[count] = len(group)
        for measure in measures:
            mean, low, high = mean_interval(group[measure].astype(float))
            entry[measure] = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        summary.append(entry)
    return pd.DataFrame(summary).set_index(keys)


def score_table(scores: pd.DataFrame, failing: set[str]):
    """The scores against the synthetic lesion masks per method and model (``score_summary``). A styled table."""
    return styled(
        score_summary(scores, failing),
        caption="Attribution scores against the lesion masks: mean [95 % bootstrap interval]",
    )


def margin_text(scores: pd.DataFrame | None) -> str:
    """Markdown: per model, the report's IG against the best model-free reference map, relevance
    mass paired over the same images (``reference_margin``: the difference with its 95 %
    interval, and whether it beats the references); without lesion masks (``scores`` None), the
    sentence saying there is nothing to score."""
    if scores is None:
        return "*This data has no lesion masks (real photographs): only the pictures above.*"
    lines = [
        f"- {item['model']}: {item['method']:.3f} against {item['reference']:.3f} ({item['best reference']}), "
        f"difference {item['difference']:+.3f} [{item['low']:+.3f}, {item['high']:+.3f}] over {item['images']} "
        "images: " + ("**beats the references**" if item["beats"] else "**does not beat the references**")
        for _, item in reference_margin(scores, REPORT_IG).iterrows()
    ]
    return (
        "Integrated gradients with the report's settings against the best reference map, relevance "
        "mass, paired over the same images:\n\n" + "\n".join(lines)
    )


def methods_figure(runs: dict[str, Run], data: FundusData, scores: pd.DataFrame, settings: AttributionConfig):
    """Every method's map (``attribution_maps``, true grade) over the first image of the scores, one
    row per model (the baseline's row starts with the image, the adversarially trained model's with
    the lesion mask); "integrated gradients" is shortened to "IG" in the titles. A Figure."""
    row = scores["row"].iloc[0]
    image = to_tensor(np.array(data.cache.images[row])).permute(1, 2, 0).numpy()
    lesions = (np.asarray(data.cache.masks[row]) >= 1) & (np.asarray(data.cache.masks[row]) <= 5)
    lesion_picture = np.repeat(lesions[..., None], 3, axis=2).astype(float)
    pictures, titles = [], []
    for name, run in runs.items():
        maps = attribution_maps(run, data, [row], settings)
        pictures += [image if name == "baseline" else lesion_picture]
        pictures += [overlay(image, method_map[0]) for method_map in maps.values()]
        titles += ["image" if name == "baseline" else "lesion mask"] + [f"{name}: {method}" for method in maps]
    titles = [title.replace("integrated gradients", "IG") for title in titles]
    return image_grid(pictures, titles, ncols=1 + len(maps), cell_inches=2.2)


# --- IDRiD ---------------------------------------------------------------------------------------------------


def lesion_photographs(params: Params, image_size: int) -> tuple[Cache | None, str]:
    """The IDRiD photographs of ``attribution.lesion_photographs`` cached at ``image_size`` px, or
    None with the Markdown sentence saying why they are skipped (none configured, or the folder
    missing or incomplete); the sentence is empty when they are there."""
    folder = params.attribution.lesion_photographs
    if folder is None:
        return None, "*Skipped: no lesion photographs configured (`attribution.lesion_photographs`).*"
    try:
        return idrid_cache(resolve_path(folder), image_size, params.data.graham_circle), ""
    except IdridError as error:
        return None, f"*Skipped: {error}*"


def idrid_scores(runs: dict[str, Run], idrid: Cache, settings: AttributionConfig) -> pd.DataFrame:
    """Every model's ``lesion_type_scores`` on the photographs in one frame (column ``model``): per
    photograph, method and lesion type, relevance mass, pointing game and lesion AUC of the map of
    the model's own predicted grade."""
    scores = pd.concat({name: lesion_type_scores(run, idrid, settings) for name, run in runs.items()}, names=["model"])
    return scores.reset_index("model").reset_index(drop=True)


def idrid_table(scores: pd.DataFrame, failing: set[str]):
    """The IDRiD scores per lesion type, method and model (``score_summary``, no deletion). A styled table."""
    summary = score_summary(scores, failing, ("lesion", "method", "model"), LESION_MEASURES[:3], "photographs")
    return styled(
        summary, caption="IDRiD photographs (real lesions, clinicians' masks): mean [95 % bootstrap interval]"
    )


def idrid_text(scores: pd.DataFrame | None, runs: dict[str, Run], skipped: str) -> str:
    """Markdown under the IDRiD table: the published range of another study for scale; per lesion
    type, the relevance mass of the report's IG, adversarially trained minus baseline, paired over
    the photographs with its 95 % bootstrap interval (and the lesions' mean share of the field);
    the grades each model gives the photographs, beside its test kappa. Without photographs
    (``scores`` None), ``skipped``: why."""
    if scores is None:
        return skipped
    published = other_study("idrid_saliency")
    scale = (
        f"For scale, published elsewhere ({published['source']}): {published['measure']} "
        f"{published['low']:.2f}-{published['high']:.2f}, best {published['best']}. That score is not one of the "
        "measures above, so the range says how far CNN saliency usually lands from clinicians' outlines, not a "
        "number these can be compared with. IDRiD (Porwal et al. 2020) is another camera and population than "
        "EyePACS."
    )
    report_ig = scores[scores["method"] == REPORT_IG]
    paired = report_ig.pivot_table(index=["lesion", "image"], columns="model", values="relevance_mass")
    lines = []
    for lesion, table in paired.groupby(level="lesion"):
        mean, low, high = mean_interval(table["adversarially trained"] - table["baseline"])
        share = report_ig.loc[report_ig["lesion"] == lesion, "lesion share"].mean()
        lines.append(
            f"- {lesion} ({len(table)} photographs; lesions cover {share:.1%} of the field on average): "
            f"relevance mass of IG, adversarially trained minus baseline, {mean:+.3f} [{low:+.3f}, {high:+.3f}]"
        )
    grades = report_ig.drop_duplicates(["model", "image"]).groupby("model", sort=False)["predicted grade"]
    given = (
        "Each model explains its own predicted grade, so the grades it gives these photographs (all of them show "
        "lesions, so grade 1 or more) say what the maps explain: "
        + "; ".join(
            f"{name} (quadratic kappa {runs[name].metrics('test')['kappa']:.2f} on its own test split) "
            + ", ".join(f"grade {grade}: {count}" for grade, count in sorted(counts.value_counts().items()))
            for name, counts in grades
        )
        + ". A model that gives nearly every photograph one grade explains that grade everywhere."
    )
    return "\n\n".join([scale, "\n".join(lines), given])


def idrid_figure(idrid: Cache, runs: dict[str, Run], settings: AttributionConfig):
    """The first two IDRiD photographs: the image, the clinicians' masks (haemorrhages red, hard
    exudates yellow) and each model's integrated gradients (the params' settings) for the grade it
    predicts. A Figure."""
    masks = lesion_masks(idrid)
    models = {name: run.load_model() for name, run in runs.items()}
    pictures, titles = [], []
    for index in (0, 1):
        image = to_tensor(np.array(idrid.images[index])).permute(1, 2, 0).numpy()
        drawn = np.zeros_like(image)
        drawn[masks["haemorrhage"][index]] = (1, 0, 0)
        drawn[masks["hard exudate"][index]] = (1, 1, 0)
        pictures += [image, drawn]
        titles += [idrid.manifest.at[index, "image"], "clinicians' masks"]
        tensor = torch.as_tensor(image).permute(2, 0, 1)[None].float()
        for name, model in models.items():
            predicted = model(tensor).argmax(dim=1)
            attributions = integrated_gradients(
                model,
                tensor,
                predicted,
                settings.ig_baseline,
                settings.ig_steps,
                settings.ig_method,
                settings.internal_batch_size,
                torch.Generator().manual_seed(settings.seed),
            )
            pictures.append(overlay(image, pixel_map(attributions)[0]))
            titles.append(f"{name}: IG for grade {predicted.item()}")
    return image_grid(pictures, titles, ncols=2 + len(runs), cell_inches=2.4)


# --- the spurious cue ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CueExperiment:
    """The spurious-cue experiment's runs (per model, one per seed), their data and the baseline's power."""

    runs: dict[str, list[Run]]
    data: FundusData
    reliance: dict[str, list[pd.DataFrame]]  # per model and seed, ``cue_reliance``'s per-image table
    power: Evidence  # ``findings.cue_power`` on the baseline's tables
    mass_bfloat16: bool = False  # the cue's IG masses in bfloat16 (``runtime.mass_bfloat16`` resolved)


def cue_experiment(params: Params, train: bool = False) -> CueExperiment | None:
    """The spurious-cue experiment (``experiments.spurious_runs``, on ``spurious_params``' data):
    its runs (trained where missing when ``train``), every run's cue-reliance table and the power
    check on the baseline (``findings.cue_power``). None where the params have no such experiment
    (``has_spurious_experiment``: real photographs, or no cue strength)."""
    if not has_spurious_experiment(params):
        return None
    cue_params = spurious_params(params)
    runs = {
        name: [get_run(cue_params, config, train=train) for config in seeds]
        for name, seeds in spurious_runs(params).items()
    }
    data = run_data(cue_params, runs["baseline"][0].config, progress=False)
    reliance = {name: [cue_reliance(run, data) for run in seeds] for name, seeds in runs.items()}
    return CueExperiment(runs, data, reliance, cue_power(reliance["baseline"]), mass_bfloat16(params.runtime))


def changed_share(tables: Sequence[pd.DataFrame], variant: str) -> float:
    """The share of predictions ``variant`` (e.g. "cue flipped") changes (``findings.changed_by``),
    over each table's images, mean over the tables (seeds)."""
    return float(np.mean([changed_by(table, variant).mean() for table in tables]))


def power_text(cue: CueExperiment | None, params: Params) -> str:
    """Markdown: the power check (baseline only, on the gate half of the images): how often flipping
    the cue and the distractor change the baseline's predictions (all sampled images, mean over
    seeds), their paired difference with its interval and whether the cue test has power; then the
    cue's amplitude against the adversarial training's eps. Without the experiment (``cue`` None),
    the sentence saying what it needs."""
    if cue is None:
        return "*The spurious-cue experiment needs the synthetic data and `attribution.spurious_cue` > 0.*"
    power, baseline, eps = cue.power, cue.reliance["baseline"], params.adversarial.training.eps_255
    verdict = (
        "**the cue test has power**."
        if power.word == "supports"
        else "**no measured power**: the cue measures below count as no evidence either way."
    )
    return (
        f"**Power check (baseline only, the gate half: {power.comparison.estimate.n_images} test images × "
        f"{power.comparison.estimate.n_seeds} seeds):** flipping the cue changes "
        f"{changed_share(baseline, 'cue flipped'):.1%} of the baseline's predictions, flipping the distractor "
        f"{changed_share(baseline, 'distractor flipped'):.1%}; difference {power.mean:+.1%} "
        f"[{power.low:+.1%}, {power.high:+.1%}] → {verdict} The cue's amplitude, {PATCH_AMPLITUDE}/255 in pixels, "
        f"is {PATCH_AMPLITUDE / eps:.0f} times the adversarial training's eps ({eps:g}/255): no perturbation the "
        "adversary may make can erase it (the first design, a 4/255 checkerboard of 2 px cells, changed none of the "
        "demo baseline's predictions: a cue faint enough for the ball was not learned from these images). The cue "
        "measures therefore ask whether adversarial training changes which features the model prefers, not whether "
        "it removes a feature inside its ball."
    )


def cue_examples(data: FundusData):
    """The first test image (of the first 64) of each kind: with the cue and the distractor, the cue
    only, the distractor only, neither; titled with the kind and the grade. A Figure."""
    specs = {spec.image: spec for spec in load_specs(data.images_dir.parent)}
    kinds = {
        (True, True): "cue and distractor",
        (True, False): "cue only",
        (False, True): "distractor only",
        (False, False): "neither",
    }
    shown = {}
    for row in data.rows("test")[:64]:
        spec = specs[data.manifest.at[row, "image"]]
        shown.setdefault((spec.cue, spec.distractor), row)
    order = [key for key in kinds if key in shown]
    return image_grid(
        [np.asarray(data.cache.images[shown[key]]) for key in order],
        [f"{kinds[key]} (grade {data.manifest.at[shown[key], 'level']})" for key in order],
        ncols=len(order),
        cell_inches=2.4,
    )


def reliance_table(cue: CueExperiment, settings: AttributionConfig):
    """Per model, on the cue-reliance sample, mean over seeds: the share of images with the cue and
    with the distractor, the accuracy as generated, with the cue removed and with it flipped, and
    the share of predictions changed by flipping the cue and the distractor (all %). A styled table."""
    rows = []
    for name, tables in cue.reliance.items():

        def seed_mean(value, tables=tables) -> float:
            return float(np.mean([value(table) for table in tables]))

        accuracy = {
            f"accuracy, {variant}": seed_mean(lambda t, v=variant: (t[v] == t["grade"]).mean())
            for variant in ("as generated", "cue removed", "cue flipped")
        }
        rows.append(
            {
                "model": name,
                "images × seeds": f"{len(tables[0])} × {len(tables)}",
                "with cue": seed_mean(lambda t: t["cue"].mean()),
                "with distractor": seed_mean(lambda t: t["distractor"].mean()),
                **accuracy,
                "changed by flipping the cue": changed_share(tables, "cue flipped"),
                "changed by flipping the distractor": changed_share(tables, "distractor flipped"),
            }
        )
    reliance = pd.DataFrame(rows).set_index("model")
    return styled(
        reliance,
        percent=tuple(column for column in reliance.columns if column != "images × seeds"),
        caption=f"Reliance on the spurious cue (strength {settings.spurious_cue}) and on the distractor "
        f"(probability {settings.distractor}), test split, mean over seeds",
    )


def cue_attribution_table(cue: CueExperiment, settings: AttributionConfig):
    """Per model, on test images carrying the cue (``cue_attribution``, every seed pooled): the mean
    share of positive IG on the cue, on the distractor (where the image has one) and on the lesions,
    and each patch's mean share of the field (all %). A styled table."""
    rows = []
    for name, seeds in cue.runs.items():
        masses = pd.concat([cue_attribution(run, cue.data, settings, cue.mass_bfloat16) for run in seeds])
        rows.append(
            {
                "model": name,
                "images with the cue × seeds": f"{len(masses) // len(seeds)} × {len(seeds)}",
                "IG mass on the cue": masses["mass_on_cue"].mean(),
                "cue's share of the field": masses["cue_area_share"].mean(),
                "IG mass on the distractor": masses["mass_on_distractor"].mean(),
                "distractor's share of the field": masses["distractor_area_share"].mean(),
                "IG mass on lesions": masses["mass_on_lesions"].mean(),
            }
        )
    attributions = pd.DataFrame(rows).set_index("model")
    return styled(
        attributions,
        percent=tuple(column for column in attributions.columns if "×" not in column),
        caption="Where the positive integrated gradients go, on test images carrying the cue (the "
        "distractor's columns on those that also carry it), mean over seeds",
    )


# --- the verdict -----------------------------------------------------------------------------------------------

#: ``findings.overall_verdict``'s outcome said of the hypothesis, as the chapter's sentences end.
VERDICT_PHRASES = {
    "supports": "supports the hypothesis",
    "refutes": "refutes the hypothesis",
    WORDS[SMALLER]: "finds shifts smaller than one percentage point (or none) where the hypothesis predicts them",
    "inconclusive": "is inconclusive on the hypothesis as a whole",
    "untested": "cannot test the hypothesis",
}


def verdict_phrase(overall: str) -> str:
    """``findings.overall_verdict``'s word as the end of "the evidence ..." (``VERDICT_PHRASES``)."""
    return VERDICT_PHRASES[overall]


def evidence_text(evidence: Sequence[Evidence]) -> str:
    """Markdown: one bullet per piece of the hypothesis's evidence: the paired difference
    (adversarially trained minus baseline) with its interval, the images and seed pairs behind it
    and its outcome (with the reason where it cannot discriminate). Empty without evidence."""
    return "\n".join(
        f"- {item.measure}, adversarially trained minus baseline: difference {item.mean:+.3f} "
        f"[{item.low:+.3f}, {item.high:+.3f}] ({item.comparison.estimate.n_images} images × "
        f"{item.comparison.estimate.n_seeds} seed pair(s)) → **{item.word}**"
        + (f" ({item.reason})" if item.reason else "")
        + "."
        for item in evidence
    )


def summary_text(
    ends: pd.DataFrame, settings: AttributionConfig, has_masks: bool, cue: CueExperiment | None, overall: str
) -> str:
    """Markdown: the chapter's summary as a list of what it did, the parts this run had (the full or
    shortened sanity check with its passes, the lesion scores, the cue experiment with its power)
    and the verdict (``verdict_phrase``)."""
    sanity = (
        f"- put every method through the cascading randomisation sanity check: {int(ends['passes'].sum())} of "
        f"{len(ends)} method-model pairs pass;\n"
        if settings.sanity_layers is None
        else "- run a shortened randomisation check, which judges no method;\n"
    )
    scored = (
        "- scored six attribution maps and three model-free reference maps against the lesion masks with "
        "bootstrap intervals;\n"
        if has_masks
        else ""
    )
    planted = (
        f"- planted a spurious cue with a grade-independent distractor as its control, checked on the baseline "
        f"that the test has power ({'it has' if cue.power.word == 'supports' else 'it has not'}) and measured how "
        "much each model relies on the cue;\n"
        if cue is not None
        else ""
    )
    return (
        "- drawn the report's integrated-gradients overlays (Figures 7 and 8) for both models;\n"
        + sanity
        + scored
        + planted
        + f"- found that this run {verdict_phrase(overall)}."
    )


def runs_used(runs: dict[str, Run], cue_runs: dict[str, list[Run]] | None) -> dict[str, Run]:
    """Every run the chapter read, by label (for ``provenance``): the two models and, with the cue
    experiment, each of its runs as "spurious cue, <model>, seed <seed>"."""
    cue = {
        f"spurious cue, {name}, seed {run.config.seed}": run
        for name, seeds in (cue_runs or {}).items()
        for run in seeds
    }
    return dict(runs) | cue
