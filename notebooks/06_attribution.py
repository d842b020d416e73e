# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# (chapter-attribution)=
# # Integrated gradients: does adversarial training make attributions meaningful?
#
# This chapter reproduces Figures 7 and 8 of the report (its section 5) and tests, with numbers,
# the hypothesis the report could only illustrate: adversarial training penalises non-robust
# features, so the model's attributions move to real structures such as lesions. We will:
#
# - show integrated-gradients overlays of a grade-0 and a grade-4 image for the baseline and the
#   adversarially trained model of chapter 5 (Figures 7 and 8);
# - score the attributions of both models against the lesion masks of the synthetic images
#   (relevance mass, pointing game, lesion AUC, deletion), with bootstrap confidence intervals,
#   for integrated gradients and three other methods;
# - plant a spurious cue correlated with the grade and a grade-independent distractor, train both
#   kinds of model on it, check on the baseline that the test has power, and measure how much
#   each relies on the cue and how much attribution it puts there;
# - state, from these numbers, whether this run supports the report's hypothesis.

# %% tags=["parameters", "remove-cell"]
params_file = "params/demo.yaml"
train_missing = True  # False: read runs from the store only, never train (`fundus run --from-store`)

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from fundus_lib.attribution.methods import integrated_gradients, overlay, pixel_map
from fundus_lib.attribution.scores import reference_margin
from fundus_lib.config import load_params, resolve_path
from fundus_lib.data.dataset import to_tensor
from fundus_lib.data.idrid import IdridError, idrid_cache, lesion_masks
from fundus_lib.data.synthetic import PATCH_AMPLITUDE, load_specs
from fundus_lib.evaluation.attribution import (
    REPORT_IG,
    attribution_maps,
    attribution_scores,
    cue_attribution,
    cue_reliance,
    ig_baseline_scores,
    label_randomisation_checks,
    lesion_type_scores,
    randomisation_checks,
)
from fundus_lib.experiments import (
    adversarial_runs,
    has_spurious_experiment,
    seeded,
    shuffled_label_run,
    spurious_params,
    spurious_runs,
)
from fundus_lib.findings import WORDS, cue_power, hypothesis_evidence, overall_verdict
from fundus_lib.report.numbers import other_study
from fundus_lib.report.plots import image_grid, randomisation_curves
from fundus_lib.report.provenance import provenance
from fundus_lib.report.tables import styled
from fundus_lib.runs import get_run, run_data
from fundus_lib.statistics import RANDOMISATION_PASS, SMALLER, mean_interval

params = load_params(params_file)
settings = params.attribution
runs = {name: get_run(params, config, train=train_missing) for name, config in adversarial_runs(params).items()}
data = run_data(params, runs["baseline"].config, progress=False)
has_masks = data.cache.masks is not None

# %% [markdown]
# ## Figures 7 and 8
#
# Integrated gradients with the report's settings: 100 steps on the straight path from a baseline
# image of uniform random pixels to the image, trapezoid rule, for the true grade. The attribution
# is summed over the colour channels and drawn over the faded image, positive in green and
# negative in red, as in the report.

# %% tags=["hide-input"]
test_rows = data.rows("test")
levels = data.manifest.loc[test_rows, "level"].to_numpy()
rng = np.random.default_rng(settings.seed)
picked = {grade: rng.choice(test_rows[levels == grade]) for grade in (0, 4) if (levels == grade).any()}
figure_rows = list(picked.values())
images = torch.stack([to_tensor(np.array(data.cache.images[row])) for row in figure_rows])
labels = torch.as_tensor(data.manifest.loc[figure_rows, "level"].to_numpy())
ig = {}
for name, run in runs.items():
    attributions, delta = integrated_gradients(run.load_model(), images, labels, settings.ig_baseline, settings.ig_steps,
                                               settings.ig_method, settings.internal_batch_size,
                                               torch.Generator().manual_seed(settings.seed), return_delta=True)
    ig[name] = (pixel_map(attributions), delta)
display(Markdown("Completeness check, sum of attributions - (f(x) - f(baseline)) per image: " + "; ".join(
    f"{name}: " + ", ".join(f"{value:+.4f}" for value in delta.tolist()) for name, (_, delta) in ig.items())))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figures 7 (top, grade 0) and 8 (bottom, grade 4): the image and the integrated gradients of the baseline and of the adversarially trained model (green positive, red negative).", "name": "fig-ig-overlays"}}
pictures, titles = [], []
for position, row in enumerate(figure_rows):
    image = images[position].permute(1, 2, 0).numpy()
    pictures.append(image)
    titles.append(f"grade {labels[position].item()} ({data.manifest.at[row, 'image']})")
    for name, (maps, _) in ig.items():
        pictures.append(overlay(image, maps[position]))
        titles.append(name)
image_grid(pictures, titles, ncols=1 + len(ig), cell_inches=2.8)

# %% [markdown]
# ## Integrated gradients from four baselines
#
# Integrated gradients explains the change of the grade's score from a baseline image to the
# image, so the baseline is part of the method. The report's text draws it as uniform noise in
# pixels; its code drew the noise in ImageNet-normalised units (`torch.rand_like` on normalised
# tensors), which in pixels is a narrower, brighter noise, within [mean, mean + std] per channel
# (see the deviations page); captum's default is black; a blurred copy of the image removes only
# the fine structure (Sturmfels et al. 2020). For each, on the images of the sanity check below:
# the **completeness gap** (the attributions should sum to f(x) - f(baseline); the gap measures
# how well the report's 100-step trapezoid rule integrates), relative to that change, and the
# relevance mass on the lesions.

# %% tags=["hide-input"]
baseline_scores = pd.concat({name: ig_baseline_scores(run, data, settings) for name, run in runs.items()},
                            names=["model"]).reset_index("model")
baseline_table = baseline_scores.groupby(["model", "baseline"], sort=False).agg(
    images=("row", "size"), median_relative_gap=("relative_gap", "median"),
    largest_gap=("completeness_gap", lambda gaps: gaps.abs().max()), relevance_mass=("relevance_mass", "mean"))
if baseline_table["relevance_mass"].isna().all():
    baseline_table = baseline_table.drop(columns="relevance_mass")
styled(baseline_table, percent=("median_relative_gap", "relevance_mass"), decimals=4,
       caption=f"IG ({settings.ig_steps} steps, {settings.ig_method}) from each baseline: completeness gap "
               "(|sum of attributions - (f(x) - f(baseline))|, of the true grade's logit) and mean relevance mass")

# %% [markdown]
# ## Sanity check: do the maps depend on what the model learned?
#
# Before any map is read as the model's reasons, it must change when the model's knowledge is
# destroyed (Adebayo et al. 2018, "Sanity checks for saliency maps"): the layers are
# re-initialised one after another, from the output down to the input, and after each step the
# maps are compared with the trained model's (rank correlation and SSIM of the absolute values,
# median over images). A method passes when, with every layer re-initialised, the rank
# correlation is below the threshold fixed in `fundus_lib.statistics.RANDOMISATION_PASS`; one
# that fails draws much the same picture for any weights (often the image's edges), and is marked
# wherever its scores appear below.

# %% tags=["hide-input"]
checks = pd.concat({name: randomisation_checks(run, data, settings) for name, run in runs.items()}, names=["model"])
checks = checks.reset_index("model").reset_index(drop=True)
ends = checks.groupby(["method", "model"], sort=False).last()
failing = set(ends.index.get_level_values("method")[~ends["passes"].to_numpy()])
if settings.sanity_layers is not None:  # a rehearsal's shortened cascade judges nothing
    failing = set()
    display(Markdown(f"**Shortened check** (`attribution.sanity_layers: {settings.sanity_layers}`): only the top "
                     f"{settings.sanity_layers} layers were re-initialised, so no method is judged and none is marked below."))
display(styled(ends[["images", "layers", "rank_correlation", "ssim", "passes"]].rename(columns={
    "layers": "layers re-initialised", "rank_correlation": "rank correlation", "passes": f"passes (< {RANDOMISATION_PASS})"}),
    caption="Every layer re-initialised: similarity to the trained model's maps (median over images)"))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Cascading randomisation: each method's rank correlation with the trained model's maps as layers are re-initialised from the output down (dashed: the pass threshold).", "name": "fig-randomisation"}}
randomisation_curves(checks, RANDOMISATION_PASS)

# %% [markdown]
# The second check of Adebayo et al. randomises the data instead of the weights: the baseline's
# configuration is trained again, with the same seed and amounts, on the training labels permuted
# at random, so that the grades no longer belong to their images. Whatever that model learned is
# not the relation between lesions and grade, so a method whose maps of the two models agree (rank
# correlation of the absolute values at or above the same threshold, median over the same images,
# for the true grade) explains the image, not the model, and is marked below like a method that
# fails the cascade.

# %% tags=["hide-input"]
shuffled_run = get_run(params, shuffled_label_run(params), train=train_missing)
label_checks = label_randomisation_checks(runs["baseline"], shuffled_run, data, settings).set_index("method")
failing |= set(label_checks.index[~label_checks["passes"].to_numpy()])
shuffled_accuracy = shuffled_run.metrics("test")["accuracy"]
display(styled(label_checks[["images", "rank_correlation", "ssim", "passes"]].rename(columns={
    "rank_correlation": "rank correlation", "passes": f"passes (< {RANDOMISATION_PASS})"}),
    caption=f"The baseline's maps against those of its configuration trained on shuffled labels (median over images; "
            f"the shuffled-label model's test accuracy: {shuffled_accuracy:.1%}, the baseline's: "
            f"{runs['baseline'].metrics('test')['accuracy']:.1%})"))

# %% [markdown]
# ## Do attributions land on lesions?
#
# For a fixed sample of test images that contain lesions, each method's attribution map is
# compared with the lesion mask:
#
# - **relevance mass**: the share of the positive attribution that falls on lesion pixels (lesions
#   cover a few per cent of the image, so chance is small);
# - **pointing game**: how often the most attributed pixel is a lesion pixel;
# - **lesion AUC**: the map used as a pixel-wise lesion detector inside the field of view (0.5 is
#   chance);
# - **deletion**: the model's probability for the true grade, averaged while the most attributed
#   pixels (up to half the image) are greyed out first; lower means the map found what the model
#   uses (faithfulness).
#
# Three model-free **reference maps** are scored exactly like the methods: a random map, the
# Sobel edge magnitude of the input and its intensity (the Graham-filtered image the model sees).
# Vessels and exudates are salient edges and bright spots, so a method that lands on lesions no
# more than the edge or intensity map has not shown that the *model* looks at lesions. Intervals
# are 95 % bootstrap intervals over images.

# %% tags=["hide-input"]
if not has_masks:
    display(Markdown("*This data has no lesion masks (real photographs): only the pictures above.*"))
else:
    scores = pd.concat({name: attribution_scores(run, data, settings) for name, run in runs.items()}, names=["model"])
    scores = scores.reset_index("model").reset_index(drop=True)
    summary = []
    for (method, model), group in scores.groupby(["method", "model"], sort=False):
        shown = f"{method} (fails the sanity check)" if method in failing else method
        entry = {"method": shown, "model": model, "images": len(group)}
        for measure in ("relevance_mass", "pointing_game", "lesion_auc", "deletion"):
            mean, low, high = mean_interval(group[measure].astype(float))
            entry[measure] = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        summary.append(entry)
    display(styled(pd.DataFrame(summary).set_index(["method", "model"]),
                   caption="Attribution scores against the lesion masks: mean [95 % bootstrap interval]"))
    margin = reference_margin(scores, REPORT_IG)
    display(Markdown("Integrated gradients with the report's settings against the best reference map, relevance "
                     "mass, paired over the same images:\n\n" + "\n".join(
        f"- {item['model']}: {item['method']:.3f} against {item['reference']:.3f} ({item['best reference']}), "
        f"difference {item['difference']:+.3f} [{item['low']:+.3f}, {item['high']:+.3f}] over {item['images']} "
        "images: " + ("**beats the references**" if item["beats"] else "**does not beat the references**")
        for _, item in margin.iterrows())))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Every method on one test image with lesions (top row: baseline; bottom row: adversarially trained), next to the lesion mask.", "name": "fig-methods"}}
if has_masks:
    row = scores["row"].iloc[0]
    image = to_tensor(np.array(data.cache.images[row])).permute(1, 2, 0).numpy()
    lesion_picture = np.repeat(((np.asarray(data.cache.masks[row]) >= 1) & (np.asarray(data.cache.masks[row]) <= 5))[..., None], 3, axis=2).astype(float)
    pictures, titles = [], []
    for name, run in runs.items():
        maps = attribution_maps(run, data, [row], settings)
        pictures += [image if name == "baseline" else lesion_picture] + [overlay(image, method_map[0]) for method_map in maps.values()]
        titles += ["image" if name == "baseline" else "lesion mask"] + [f"{name}: {method}" for method in maps]
    display(image_grid(pictures, [title.replace("integrated gradients", "IG") for title in titles], ncols=1 + len(maps),
                       cell_inches=2.2))

# %% [markdown]
# ## Real lesions drawn by clinicians (IDRiD)
#
# The same scores on real photographs: the 20 photographs of the IDRiD segmentation set
# (Porwal et al., *Medical Image Analysis* 59, 2020; CC BY 4.0) whose haemorrhages and hard
# exudates were outlined by clinicians. Each photograph and its masks are cropped and scaled
# together, exactly like the training images. IDRiD comes from another camera and country than
# EyePACS, so the models see a domain shift here; and the set has no grades, so each model's
# attributions explain its own predicted grade. The difference is paired: the same photographs,
# adversarially trained minus baseline, with a 95 % bootstrap interval over photographs.

# %% tags=["hide-input"]
idrid, idrid_scores = None, None
if settings.lesion_photographs is None:
    display(Markdown("*Skipped: no lesion photographs configured (`attribution.lesion_photographs`).*"))
else:
    try:
        idrid = idrid_cache(resolve_path(settings.lesion_photographs), runs["baseline"].config.image_size,
                            params.data.graham_circle)
    except IdridError as error:
        display(Markdown(f"*Skipped: {error}*"))
if idrid is not None:
    idrid_scores = pd.concat({name: lesion_type_scores(run, idrid, settings) for name, run in runs.items()},
                             names=["model"]).reset_index("model").reset_index(drop=True)
    summary = []
    for (lesion, method, model), group in idrid_scores.groupby(["lesion", "method", "model"], sort=False):
        shown = f"{method} (fails the sanity check)" if method in failing else method
        entry = {"lesion": lesion, "method": shown, "model": model, "photographs": len(group)}
        for measure in ("relevance_mass", "pointing_game", "lesion_auc"):
            mean, low, high = mean_interval(group[measure].astype(float))
            entry[measure] = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        summary.append(entry)
    display(styled(pd.DataFrame(summary).set_index(["lesion", "method", "model"]),
                   caption="IDRiD photographs (real lesions, clinicians' masks): mean [95 % bootstrap interval]"))
    published = other_study("idrid_saliency")
    display(Markdown(
        f"For scale, published elsewhere ({published['source']}): {published['measure']} "
        f"{published['low']:.2f}-{published['high']:.2f}, best {published['best']}. That score is not one of the "
        "measures above, so the range says how far CNN saliency usually lands from clinicians' outlines, not a "
        "number these can be compared with. IDRiD (Porwal et al. 2020) is another camera and population than "
        "EyePACS."))
    report_ig = idrid_scores[idrid_scores["method"] == REPORT_IG]
    paired = report_ig.pivot_table(index=["lesion", "image"], columns="model", values="relevance_mass")
    lines = []
    for lesion, table in paired.groupby(level="lesion"):
        mean, low, high = mean_interval(table["adversarially trained"] - table["baseline"])
        share = report_ig.loc[report_ig["lesion"] == lesion, "lesion share"].mean()
        lines.append(f"- {lesion} ({len(table)} photographs; lesions cover {share:.1%} of the field on average): "
                     f"relevance mass of IG, adversarially trained minus baseline, {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
    display(Markdown("\n".join(lines)))
    grades = report_ig.drop_duplicates(["model", "image"]).groupby("model", sort=False)["predicted grade"]
    display(Markdown(
        "Each model explains its own predicted grade, so the grades it gives these photographs (all of them show "
        "lesions, so grade 1 or more) say what the maps explain: "
        + "; ".join(f"{name} (quadratic kappa {runs[name].metrics('test')['kappa']:.2f} on its own test split) "
                    + ", ".join(f"grade {grade}: {count}" for grade, count in sorted(counts.value_counts().items()))
                    for name, counts in grades)
        + ". A model that gives nearly every photograph one grade explains that grade everywhere."))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Two IDRiD photographs (Porwal et al. 2020, CC BY 4.0): the image, the clinicians' masks (haemorrhages red, hard exudates yellow) and the integrated gradients of both models for their predicted grade.", "name": "fig-idrid"}}
if idrid is not None:
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
            attributions = integrated_gradients(model, tensor, predicted, settings.ig_baseline, settings.ig_steps,
                                                settings.ig_method, settings.internal_batch_size,
                                                torch.Generator().manual_seed(settings.seed))
            pictures.append(overlay(image, pixel_map(attributions)[0]))
            titles.append(f"{name}: IG for grade {predicted.item()}")
    image_grid(pictures, titles, ncols=2 + len(runs), cell_inches=2.4)

# %% [markdown]
# ## The spurious cue
#
# The report's hypothesis is about non-robust features. The synthetic generator can plant one: a
# checkerboard patch (0.2 R across, 32 grey levels either side of the image) at a fixed place in
# the lower left, drawn with probability `attribution.spurious_cue` on every referable eye (true
# grade 2-4) and never on grades 0-1, so it tells a model the first decision a grader makes. Its
# control is a **distractor**: horizontal stripes as large and as strong, in the upper right,
# drawn on half of the eyes whatever their grade. Both kinds of model are trained (every seed)
# on data with both patches; then each test image is shown as generated, with the cue removed,
# with the cue flipped (added where it was absent, removed where present) and with the distractor
# flipped. A model that relies on the cue changes its answers when the cue changes, and no more
# when the equally salient distractor does than chance.
#
# **Power first, on the baseline alone.** The cue measures can show adversarial training reducing
# a reliance only if the baseline has one. Before the adversarially trained model is looked at,
# the share of the baseline's predictions that flipping the cue changes, minus the share that
# flipping the distractor changes (paired over images, every seed), must exceed one percentage
# point with its 95 % interval. The check uses a fixed half of the test images (by a hash of
# their row) and the cue measures the other half, so a baseline that flips often by chance
# cannot both pass the gate and bias the evidence. Without power, the cue measures of the
# verdict are no evidence either way.

# %% tags=["hide-input"]
if not has_spurious_experiment(params):
    display(Markdown("*The spurious-cue experiment needs the synthetic data and `attribution.spurious_cue` > 0.*"))
else:
    cue_params = spurious_params(params)
    cue_runs = {name: [get_run(cue_params, config, train=train_missing) for config in seeds]
                for name, seeds in spurious_runs(params).items()}
    cue_data = run_data(cue_params, cue_runs["baseline"][0].config, progress=False)
    reliance_tables = {name: [cue_reliance(run, cue_data) for run in runs] for name, runs in cue_runs.items()}
    power = cue_power(reliance_tables["baseline"])
    display(Markdown(
        f"**Power check (baseline only, the gate half: {power.comparison.estimate.n_images} test images × "
        f"{power.comparison.estimate.n_seeds} seeds):** flipping the cue changes "
        f"{np.mean([(t['cue flipped'] != t['as generated']).mean() for t in reliance_tables['baseline']]):.1%} of the "
        f"baseline's predictions, flipping the distractor "
        f"{np.mean([(t['distractor flipped'] != t['as generated']).mean() for t in reliance_tables['baseline']]):.1%}; "
        f"difference {power.mean:+.1%} [{power.low:+.1%}, {power.high:+.1%}] → "
        + ("**the cue test has power**." if power.word == "supports" else
           "**no measured power**: the cue measures below count as no evidence either way.")
        + f" The cue's amplitude, {PATCH_AMPLITUDE}/255 in pixels, is "
        f"{PATCH_AMPLITUDE / params.adversarial.training.eps_255:.0f} times the adversarial training's eps "
        f"({params.adversarial.training.eps_255:g}/255): no perturbation the adversary may make can erase it (the first design, "
        "a 4/255 checkerboard of 2 px cells, changed none of the demo baseline's predictions: a cue faint enough "
        "for the ball was not learned from these images). The cue "
        "measures therefore ask whether adversarial training changes which features the model prefers, "
        "not whether it removes a feature inside its ball."))

# %% tags=["hide-input"]
if has_spurious_experiment(params):
    examples = cue_data.rows("test")[:64]
    specs = {spec.image: spec for spec in load_specs(cue_data.images_dir.parent)}
    kinds = {(True, True): "cue and distractor", (True, False): "cue only", (False, True): "distractor only",
             (False, False): "neither"}
    shown = {}
    for row in examples:
        spec = specs[cue_data.manifest.at[row, "image"]]
        shown.setdefault((spec.cue, spec.distractor), row)
    order = [key for key in kinds if key in shown]
    image_grid([np.asarray(cue_data.cache.images[shown[key]]) for key in order],
               [f"{kinds[key]} (grade {cue_data.manifest.at[shown[key], 'level']})" for key in order],
               ncols=len(order), cell_inches=2.4)

# %% tags=["hide-input"]
if has_spurious_experiment(params):
    variants = ("as generated", "cue removed", "cue flipped")
    reliance_rows, attribution_rows = [], []
    for name, tables in reliance_tables.items():
        def seed_mean(value, tables=tables) -> float:
            return float(np.mean([value(table) for table in tables]))
        reliance_rows.append({"model": name, "images × seeds": f"{len(tables[0])} × {len(tables)}",
                              "with cue": seed_mean(lambda t: t["cue"].mean()),
                              "with distractor": seed_mean(lambda t: t["distractor"].mean()),
                              **{f"accuracy, {variant}": seed_mean(lambda t, v=variant: (t[v] == t["grade"]).mean())
                                 for variant in variants},
                              "changed by flipping the cue": seed_mean(lambda t: (t["cue flipped"] != t["as generated"]).mean()),
                              "changed by flipping the distractor":
                                  seed_mean(lambda t: (t["distractor flipped"] != t["as generated"]).mean())})
        masses = pd.concat([cue_attribution(run, cue_data, settings) for run in cue_runs[name]])
        attribution_rows.append({"model": name, "images with the cue × seeds": f"{len(masses) // len(tables)} × {len(tables)}",
                                 "IG mass on the cue": masses["mass_on_cue"].mean(),
                                 "cue's share of the field": masses["cue_area_share"].mean(),
                                 "IG mass on the distractor": masses["mass_on_distractor"].mean(),
                                 "distractor's share of the field": masses["distractor_area_share"].mean(),
                                 "IG mass on lesions": masses["mass_on_lesions"].mean()})
    reliance = pd.DataFrame(reliance_rows).set_index("model")
    display(styled(reliance, percent=tuple(column for column in reliance.columns if column != "images × seeds"),
                   caption=f"Reliance on the spurious cue (strength {settings.spurious_cue}) and on the distractor "
                           f"(probability {settings.distractor}), test split, mean over seeds"))
    attributions = pd.DataFrame(attribution_rows).set_index("model")
    display(styled(attributions, percent=tuple(column for column in attributions.columns if "×" not in column),
                   caption="Where the positive integrated gradients go, on test images carrying the cue (the "
                           "distractor's columns on those that also carry it), mean over seeds"))

# %% [markdown]
# ## Does this run support the report's hypothesis?
#
# The hypothesis predicts two things: the adversarially trained model puts **more** of its
# attribution on lesions, and it relies **less** on the non-robust cue. Each is judged by the
# rule of `fundus_lib.statistics` on the paired difference (adversarially trained minus baseline)
# over the same images, for every seed pair (the first seed of each model, then the second, ...):
# its interval (bootstrap over the images plus the spread over seed pairs net of it) wholly beyond
# one percentage point in the predicted direction supports, wholly short of it shows no shift of
# a point (absent or smaller), wholly beyond one point the other way refutes, otherwise
# inconclusive; one seed pair is inconclusive at best. The pieces form one family, all must
# hold, with each far bound widened for their number (false calls at most 5 % in all, as on the
# conclusions page). The lesion measure uses the
# report's integrated gradients on a larger sample of test images with lesions
# (`attribution.verdict_images`) for every seed; the cue measures use the cue experiment's seed
# pairs, and count as inconclusive when the power check above failed.

# %% tags=["hide-input"]
seed_runs = {name: [get_run(params, config, train=train_missing) for config in seeds]
             for name, seeds in seeded(params, adversarial_runs(params)).items()}
evidence = hypothesis_evidence(params, seed_runs, cue_runs if has_spurious_experiment(params) else None)
overall = overall_verdict(evidence)
overall_words = {"supports": "supports the hypothesis", "refutes": "refutes the hypothesis",
                 WORDS[SMALLER]: "finds shifts smaller than one percentage point (or none) where the hypothesis "
                 "predicts them",
                 "inconclusive": "is inconclusive on the hypothesis as a whole",
                 "untested": "cannot test the hypothesis"}[overall]
display(Markdown("\n".join(f"- {item.measure}, adversarially trained minus baseline: difference {item.mean:+.3f} "
                           f"[{item.low:+.3f}, {item.high:+.3f}] ({item.comparison.estimate.n_images} images × "
                           f"{item.comparison.estimate.n_seeds} seed pair(s)) → **{item.word}**"
                           + (f" ({item.reason})" if item.reason else "") + "." for item in evidence)
                 + f"\n\nOn the {params.data.source} data of this run ({params.name}), the evidence **{overall_words}**."))

# %% [markdown]
# ## Summary
#
# In this chapter we have:

# %% tags=["hide-input"]
display(Markdown(
    "- drawn the report's integrated-gradients overlays (Figures 7 and 8) for both models;\n"
    + (f"- put every method through the cascading randomisation sanity check: {int(ends['passes'].sum())} of "
       f"{len(ends)} method-model pairs pass;\n" if settings.sanity_layers is None else
       "- run a shortened randomisation check, which judges no method;\n")
    + ("- scored six attribution maps and three model-free reference maps against the lesion masks with "
       "bootstrap intervals;\n" if has_masks else "")
    + (f"- planted a spurious cue with a grade-independent distractor as its control, checked on the baseline "
       f"that the test has power ({'it has' if power.word == 'supports' else 'it has not'}) and measured how much "
       "each model relies on the cue;\n" if has_spurious_experiment(params) else "")
    + f"- found that this run {overall_words}."
))

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
all_runs_used = dict(runs) | ({f"spurious cue, {name}, seed {run.config.seed}": run for name, seeds in cue_runs.items()
                               for run in seeds} if has_spurious_experiment(params) else {})
provenance(params_file, params, data, runs=all_runs_used)
