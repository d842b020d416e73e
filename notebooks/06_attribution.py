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
from IPython.display import Markdown
from myst_nb import glue

from fundus_lib.config import load_params
from fundus_lib.evaluation.attribution import label_randomisation_checks
from fundus_lib.experiments import adversarial_runs, seeded, shuffled_label_run
from fundus_lib.findings import hypothesis_evidence, overall_verdict
from fundus_lib.report import attribution as views
from fundus_lib.report.plots import randomisation_curves
from fundus_lib.report.provenance import provenance
from fundus_lib.runs import get_run, run_data
from fundus_lib.statistics import RANDOMISATION_PASS, failing_methods

params = load_params(params_file)
settings = params.attribution
runs = {name: get_run(params, config, train=train_missing) for name, config in adversarial_runs(params).items()}
data = run_data(params, runs["baseline"].config, progress=False)

# %% [markdown]
# ## Figures 7 and 8
#
# Integrated gradients with the report's settings: 100 steps on the straight path from a baseline
# image of uniform random pixels to the image, trapezoid rule, for the true grade. The attribution
# is summed over the colour channels and drawn over the faded image, positive in green and
# negative in red, as in the report.
#
# Completeness check, sum of attributions - (f(x) - f(baseline)) per image: {glue:text}`ig-completeness`

# %% tags=["hide-input"]
sample = views.figure_sample(data, settings.seed)
ig = views.report_ig(runs, sample, settings)
glue("ig-completeness", views.completeness_text(ig), display=False)

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figures 7 (top, grade 0) and 8 (bottom, grade 4): the image and the integrated gradients of the baseline and of the adversarially trained model (green positive, red negative).", "name": "fig-ig-overlays"}}
views.overlay_figure(sample, ig)

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
views.ig_baseline_table(runs, data, settings)

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
#
# {glue:md}`sanity-note`

# %% tags=["hide-input"]
checks = views.cascade_checks(runs, data, settings)
ends = views.cascade_ends(checks)
failing = failing_methods(ends.index.get_level_values("method"), ends["passes"], judged=settings.sanity_layers is None)
glue("sanity-note", Markdown(views.cascade_note(settings)), display=False)
views.cascade_table(ends)

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
failing |= failing_methods(label_checks.index, label_checks["passes"])
views.label_check_table(label_checks, shuffled_run, runs["baseline"])

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
has_masks = data.cache.masks is not None
scores = views.lesion_scores(runs, data, settings) if has_masks else None
glue("lesion-margins", Markdown(views.margin_text(scores)), display=False)
views.score_table(scores, failing) if has_masks else None

# %% [markdown]
# ```{glue:md} lesion-margins
# ```

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Every method on one test image with lesions (top row: baseline; bottom row: adversarially trained), next to the lesion mask.", "name": "fig-methods"}}
views.methods_figure(runs, data, scores, settings) if has_masks else None

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
idrid, skipped = views.lesion_photographs(params, runs["baseline"].config.image_size)
idrid_scores = views.idrid_scores(runs, idrid, settings) if idrid is not None else None
glue("idrid-text", Markdown(views.idrid_text(idrid_scores, runs, skipped)), display=False)
views.idrid_table(idrid_scores, failing) if idrid is not None else None

# %% [markdown]
# ```{glue:md} idrid-text
# ```

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Two IDRiD photographs (Porwal et al. 2020, CC BY 4.0): the image, the clinicians' masks (haemorrhages red, hard exudates yellow) and the integrated gradients of both models for their predicted grade.", "name": "fig-idrid"}}
views.idrid_figure(idrid, runs, settings) if idrid is not None else None

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
#
# {glue:md}`cue-power`

# %% tags=["hide-input"]
cue = views.cue_experiment(params, train=train_missing)
cue_runs = cue.runs if cue is not None else None
glue("cue-power", Markdown(views.power_text(cue, params)), display=False)

# %% tags=["hide-input"]
views.cue_examples(cue.data) if cue is not None else None

# %% tags=["hide-input"]
views.reliance_table(cue, settings) if cue is not None else None

# %% tags=["hide-input"]
views.cue_attribution_table(cue, settings) if cue is not None else None

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
# pairs, and count as inconclusive when the power check above failed. Both only sum integrated
# gradients into masses, which `runtime.mass_bfloat16` lets run in bfloat16 (the deviations page).

# %% tags=["hide-input"]
seed_runs = {name: [get_run(params, config, train=train_missing) for config in seeds]
             for name, seeds in seeded(params, adversarial_runs(params)).items()}
evidence = hypothesis_evidence(params, seed_runs, cue_runs)
overall = overall_verdict(evidence)
glue("evidence", Markdown(views.evidence_text(evidence)), display=False)
glue("data-source", params.data.source, display=False)
glue("run-name", params.name, display=False)
glue("overall", views.verdict_phrase(overall), display=False)
glue("summary", Markdown(views.summary_text(ends, settings, has_masks, cue, overall)), display=False)

# %% [markdown]
# ```{glue:md} evidence
# ```
#
# On the {glue:text}`data-source` data of this run ({glue:text}`run-name`), the evidence
# **{glue:text}`overall`**.

# %% [markdown]
# ## Summary
#
# In this chapter we have:
#
# ```{glue:md} summary
# ```

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
provenance(params_file, params, data, runs=views.runs_used(runs, cue_runs))
