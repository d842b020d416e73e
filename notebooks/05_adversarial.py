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
# (chapter-adversarial)=
# # PGD attacks and adversarial training
#
# This chapter reproduces Table 9 and Figure 6 of the report (its sections 4 and 5) and answers
# the question it left open. We will:
#
# - attack a baseline and an adversarially trained model with L-inf PGD, in pixel units, and
#   measure both the report's success rate and the robust accuracy as the budget grows;
# - compare the clean performance of the two models with the report's Table 9;
# - attack both with a decision-based attack (HopSkipJump), which sees only the predicted
#   grades: does PGD training also resist an attack that uses no gradients?

# %% tags=["parameters", "remove-cell"]
params_file = "params/demo.yaml"
train_missing = True  # False: read runs from the store only, never train (`fundus run --from-store`)

# %% tags=["hide-input"]
from IPython.display import Markdown, display
from myst_nb import glue

from fundus_lib.config import load_params
from fundus_lib.evaluation.robustness import sweep_outcomes
from fundus_lib.experiments import adversarial_runs, corruption_runs, seeded
from fundus_lib.report import adversarial as views
from fundus_lib.report.provenance import provenance
from fundus_lib.report.tables import run_label, styled, with_spread
from fundus_lib.runs import get_run, run_data
from fundus_lib.statistics import MASKING_TOLERANCE, WORST_CASE, ZERO_AT_LARGEST

# %% tags=["hide-input"]
params = load_params(params_file)
ours = run_label(params)
settings = params.attacks
seed_runs = {name: [get_run(params, config, train=train_missing) for config in seeds]
             for name, seeds in seeded(params, adversarial_runs(params)).items()}
runs = {name: seeds[0] for name, seeds in seed_runs.items()}  # the first seed: gallery and decision attack
data = run_data(params, runs["baseline"].config, progress=False)
strong = settings.robustness

# %% [markdown]
# ## Units: the report's eps and this project's
#
# In the report's code the images were normalised with ImageNet statistics *before* the attack, so
# its eps (written as k/255) was measured in normalised units, and its clamp to [0, 1] cut the
# normalised image itself. Here the normalisation is a layer inside the model and the attack works
# on [0, 1] pixels: eps = k/255 means at most k grey levels of change. One normalised unit is
# about 0.226 pixel units (the mean ImageNet standard deviation), so the report's eps values are
# much smaller in pixels than they look:

# %% tags=["hide-input"]
styled(views.eps_units(), decimals=3,
       caption="The report's eps values (Figures 5-6, adversarial training at 2.5) converted to [0, 1] pixel units")

# %% [markdown]
# ## Adversarial training (Table 9)
#
# As in the report, each batch's loss is the mean of the clean loss and the loss on PGD examples
# $x^{\text{adv}}$ of the same batch, $\tfrac12 L(\theta, x, y) + \tfrac12 L(\theta, x^{\text{adv}}, y)$
# (the weight 1/2 is the params' `weight`); unlike the report's code, the examples are made with the model in eval mode
# (BatchNorm and dropout frozen), and the update is made in train mode.
#
# {glue:md}`training-text`

# %% tags=["hide-input"]
glue("training-text", Markdown(views.training_text(params, runs["baseline"])), display=False)
table9 = views.table9(seed_runs, ours)
styled(table9, percent=with_spread(("accuracy", "balanced_accuracy")),
       caption=f"Table 9: clean performance (report: validation split; this run: test split, mean over {params.seeds} "
               "seed(s) ± the half-width of the 95 % interval over seeds; training time of the first seed)")

# %% [markdown]
# ### Table 9 on another camera (external test set)
#
# Where the params name an external test set (`data.external`: IDRiD's grading set in the
# real-data editions, Porwal et al. 2020, CC BY 4.0, another camera, population and grading team),
# both models grade it as they are (first seed; readout fitted on EyePACS validation), and the
# report's PGD attacks a seeded sample of it at every eps of Figure 6. The report's hypothesis, that
# adversarial training moves a model to robust features, predicts a smaller loss on another camera;
# the conclusions page judges that as a finding over every seed.

# %% tags=["hide-input"]
from fundus_lib.evaluation.grading import external_grades, external_table

if params.data.external is not None:
    display(external_table(runs, external_grades(params, runs)))
    display(views.external_pgd_table(params, runs))
else:
    display(Markdown("This params file names no external test set (`data.external`): the synthetic demo has none."))

# %% [markdown]
# ## PGD success rate against eps (Figure 6)
#
# Each model is attacked on the same fixed, seeded sample of test images with L-inf PGD (random
# start, the report's 5 steps, step size 2.5 eps / steps; the update and both measures are written
# out in {ref}`chapter 4 <chapter-corruption>`). The **success rate** is the report's
# measure: the share of images whose prediction changes. The **robust accuracy** is the share still
# graded correctly, the measure used elsewhere (e.g. RobustBench); the report did not give it. The
# success rate misleads as a robustness measure: an image the model already misgrades rarely
# changes its grade, so a model with a lower clean accuracy looks more robust. The conclusions
# judge Figure 6 on the robust accuracy under the strongest white-box attack of the sweep below
# (dashed: per image the worst of APGD-CE and APGD-T), not under this PGD. Lines: the mean over
# the seeds.
#
# Attacked images: **{glue:text}`pgd-images`** of the test split (seed {glue:text}`pgd-seed`); eps x 255
# in pixel units: {glue:md}`pgd-eps`.

# %% tags=["hide-input"]
curves = views.mean_pgd_curves(seed_runs, data, settings)
glue("pgd-images", min(settings.n_images, len(data.rows("test"))), display=False)
glue("pgd-seed", settings.seed, display=False)
glue("pgd-eps", Markdown(", ".join(map(str, settings.eps_255))), display=False)

# %% tags=["hide-input"] mystnb={"figure": {"caption": "PGD success rate (left, the report's measure) and robust accuracy (right; dashed: under the strongest white-box attack, the findings' measure) against eps in pixel units, for the baseline and the adversarially trained model. Crosses: the report's baseline on EyePACS (its Figure 5 values), converted to pixel units.", "name": "fig-pgd-curves"}}
views.pgd_figure(curves, seed_runs, data, params, ours)

# %% tags=["hide-input"]
wide = curves.pivot(index="eps_255", columns="model", values=["success_rate", "robust_accuracy"])
styled(wide, percent=("baseline", "adversarially trained"), caption="PGD on the attack sample, per eps (x 255, pixel units)")

# %% [markdown]
# ## A decision-based attack
#
# PGD follows the model's gradients, which adversarial training is built to defend against. The
# report asked whether the adversarially trained model also resists an attack that needs only
# decisions. HopSkipJump (Chen et al. 2020; a faster successor of the Boundary Attack the report
# named) starts from a misclassified image, walks along the decision boundary towards the original
# and estimates the boundary's direction from decisions alone. It attacks the images of the sample
# that **both** models grade correctly (the first seed of each), so the two are compared on the
# same images, with a query budget per image; the table gives the median size of the perturbation
# it needed (L2 over all pixels and channels, and L-inf, in pixel units x 255), and the figure
# whether the budget converges: the median L2 against the iterations. Per pixel, at 128 px and
# more, HopSkipJump needs tens of thousands of queries per image to converge, beyond a CPU build;
# the params can draw its random directions in a low-frequency subspace instead (a coarse grid
# upsampled to the image, as QEBA-S, Li et al. 2020), which converges in a fraction of the
# queries to a larger perturbation: an upper bound on the smallest one, the same bound for both
# models (see the deviations page).

# %% tags=["hide-input"]
decision = views.decision_sizes(runs, data, settings)
styled(views.decision_summary(decision), percent=("adversarial found",), decimals=2,
       caption=views.decision_caption(settings))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "HopSkipJump: the median over the attacked images of the smallest L2 perturbation found so far, against the iterations (pixel units x 255). A flat end means the budget converged.", "name": "fig-hsj-convergence"}}
views.convergence_figure(decision)

# %% tags=["hide-input"]
Markdown(views.decision_text(decision, runs, curves, settings))

# %% [markdown]
# ## Robustness as a reviewer measures it
#
# Five steps of one attack are not an evaluation a robustness reviewer accepts: a model can look
# robust because its gradients are unhelpful (gradient masking), and such numbers cannot be
# compared with published ones. So each model is also attacked, on a fixed seeded sample of test
# images, with the attacks of AutoAttack (Croce & Hein 2020), in the authors' own code
# (`pyautoattack`), in eval mode and [0, 1] pixel units:
#
# - **APGD-CE**: PGD with an adaptive step size and momentum, on the cross-entropy;
# - **APGD-T**: APGD on the targeted DLR loss, once towards each of the 4 most likely other grades;
# - **Square**: a black-box random search that sees only the model's scores, so masked gradients
#   cannot stop it.
#
# The **worst case** counts an image as robust only if both white-box attacks fail on it
# (AutoAttack's rule). Besides the robust accuracy, the **robust kappa** is the quadratic kappa of
# the grades under attack, the measure of the report's tables. Models: the first seed of this
# chapter's two and of chapter 4's corruption-trained models (trained on corruption levels 1-k);
# Square, the dear part on a CPU, attacks this chapter's two.
#
# {glue:md}`sweep-settings`

# %% tags=["hide-input"]
sweep_runs = runs | {f"corruption-trained {name}": get_run(params, config, train=train_missing)
                     for name, config in corruption_runs(params)["table6"].items() if name != "baseline"}
sweeps = {name: sweep_outcomes(run, run_data(params, run.config, progress=False), strong,
                               with_square=name in runs, progress=False) for name, run in sweep_runs.items()}
sweep_tables = views.sweep_table(sweeps)
glue("sweep-settings", Markdown(views.sweep_settings_text(sweep_tables, strong)), display=False)
wide_sweep = views.wide_sweep(sweep_tables)
styled(wide_sweep, percent=tuple(wide_sweep.columns), caption="Robust accuracy per attack and eps (pixel units)")

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The eps sweep: robust accuracy (left) and robust quadratic kappa (right) under the worst case of APGD-CE and APGD-T (solid) and under Square (dotted), per model, against eps in pixel units (symmetric log scale).", "name": "fig-robustness-sweep"}}
views.sweep_figure(sweep_tables)

# %% [markdown]
# **Does the attack work?** An attack that works drives the robust accuracy to about 0 at a large
# enough eps, and never lets it rise with eps. The check in `fundus_lib.statistics.sweep_failures`
# (fixed before any result: a rise of more than one image, or a worst case above
# {glue:text}`zero-at-largest` % at the largest eps) runs on every model:

# %% tags=["hide-input"]
glue("zero-at-largest", round(ZERO_AT_LARGEST * 100), display=False)
sweep_check = views.sweep_checks(sweeps)
Markdown(views.sweep_checks_text(sweep_check))

# %% [markdown]
# ## Gradient masking
#
# Three checks per model of this chapter, with the tolerance fixed in
# `fundus_lib.statistics.MASKING_TOLERANCE` (a check fails when the white-box robust accuracy
# exceeds the other attack's by more than that):
#
# - **not weaker than Square**: at every eps of the sweep, the white-box worst case against the
#   black-box Square (the table gives the eps with the largest gap);
# - **not weaker than a transfer attack**: APGD-CE against the model itself, against APGD-CE
#   crafted on an independently trained seed of the same configuration and graded by this model;
# - **more effort never helps the model**: a ladder of ever stronger attacks at one eps, from the
#   report's 5-step PGD to APGD with restarts, must never raise the robust accuracy.

# %% tags=["hide-input"]
masking, ladder_table = views.masking_checks(seed_runs, sweeps, data, strong)
styled(masking, percent=("white-box robust accuracy", "other attack's", "gap"),
       caption=f"Gradient-masking checks (tolerance {MASKING_TOLERANCE:.0%}; the ladder row compares its strongest "
               "rung with the report's 5-step PGD)")

# %% tags=["hide-input"]
styled(ladder_table, percent=tuple(ladder_table.columns),
       caption=f"The ladder: robust accuracy at {strong.check_eps_255:g}/255 under ever stronger attacks (top: the report's)")

# %% [markdown]
# ## The report's attack as its code ran it
#
# The report's PGD ran on ImageNet-normalised tensors: its eps was in normalised units, and its
# `clamp(0, 1)` cut the normalised image itself, so every pixel darker than its channel's mean was
# set to the mean before any gradient was followed (see the deviations page). Its success-rate
# script attacked in eval mode; its adversarial training attacked in train mode. Here the same
# images are attacked three ways at the report's eps of Figures 5-6 (and at 0): as shipped, as
# shipped in train mode, and with this project's fixed attack at the same eps converted to pixels.
# The success rate is the report's measure (the share of grades that change).

# %% tags=["hide-input"]
shipped = views.report_code_rates(runs, data, strong)
shipped_rates = views.shipped_rates(shipped)
styled(shipped_rates, percent=tuple(shipped_rates.columns),
       caption=f"Success rate (share of grades changed) at the report's eps, on {shipped['row'].nunique()} test images")

# %% tags=["hide-input"]
differences = views.shipped_differences(shipped)
styled(differences, percent=("as shipped - fixed", "low", "high"),
       caption="How much of the success rate comes from the report's code: as shipped minus fixed (95 % paired "
               "bootstrap over the images, one seed)")

# %% [markdown]
# ## The clinical view
#
# What an attacker could do to a screening decision, at the report's adversarial-training eps
# ({glue:text}`clinical-eps`/255 in pixel units), on a sample of test images per grade: the share of
# correctly graded grade-0 images that targeted PGD turns into grade 4, of grade-4 images turned
# into grade 0, and the sensitivity for referable DR (grade 2 or more, the referral threshold of
# screening programmes) clean, under untargeted APGD-CE and under targeted PGD towards grade 0
# (a missed referral). Intervals: 95 % Wilson intervals over the images.

# %% tags=["hide-input"]
glue("clinical-eps", float(strong.clinical_eps_255), display=False)
styled(views.clinical_table(runs, data, strong), percent=("share", "low", "high"),
       caption=f"The clinical view at {strong.clinical_eps_255:g}/255 (pixel units; targeted PGD {strong.ladder_steps} "
               f"steps x {strong.ladder_restarts} restarts)")

# %% [markdown]
# ## A gallery of adversarial examples
#
# Three test images attacked with PGD at the largest eps of the sweep that is at most 4/255: the
# clean image, the adversarial image and the perturbation amplified to the full grey range, for
# each model, with the grades it predicts.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Clean image with its true grade; for each model the adversarial image with the model's prediction (clean -> attacked) and the amplified perturbation.", "name": "fig-adversarial-gallery"}}
views.adversarial_gallery(runs, data, settings)

# %% [markdown]
# ## Summary
#
# In this chapter we have:

# %% tags=["hide-input"]
clean = {name: run.metrics("test") for name, run in runs.items()}
reported9 = views.report_table9().set_index("model")["kappa"]
glue("eps-trained", float(params.adversarial.training.eps_255), display=False)
glue("eps-largest", float(settings.eps_255[-1]), display=False)
glue("kappa-adversarial", float(clean["adversarially trained"]["kappa"]), display=False)
glue("kappa-baseline", float(clean["baseline"]["kappa"]), display=False)
glue("report-kappa-adversarial", float(reported9["adversarially trained"]), display=False)
glue("report-kappa-baseline", float(reported9["baseline"]), display=False)

# %% [markdown]
# - trained a model adversarially (PGD, eps {glue:text}`eps-trained`/255 pixels): its test kappa
#   (first seed) is {glue:text}`kappa-adversarial:.3f` against the baseline's
#   {glue:text}`kappa-baseline:.3f` (the report: {glue:text}`report-kappa-adversarial:.3f` against
#   {glue:text}`report-kappa-baseline:.3f` on EyePACS);
# - measured PGD's success rate and the robust accuracy from eps 0 to {glue:text}`eps-largest`/255
#   in pixel units, for both models;
# - measured the perturbation a decision-based attack needs against each model, the report's open
#   question.

# %% tags=["hide-input"]
at_report = differences.xs("baseline").iloc[-1]
worst = sweep_tables[sweep_tables["attack"] == WORST_CASE].pivot(index="eps_255", columns="model",
                                                                 values="robust_accuracy").iloc[-1]
glue("sweep-largest", Markdown(f"{strong.eps_255[-1]:g}"), display=False)
glue("worst-at-largest", Markdown(", ".join(f"{value:.0%} ({name})" for name, value in worst.items())), display=False)
glue("sweep-failing", sum(bool(failures) for failures in sweep_check.values()), display=False)
glue("sweep-models", len(sweep_check), display=False)
glue("masking-run", int(masking["passed"].notna().sum()), display=False)
glue("masking-passed", int(masking["passed"].eq(True).sum()), display=False)
glue("shipped-eps", Markdown(at_report.name), display=False)
for key, column in (("gap", "as shipped - fixed"), ("low", "low"), ("high", "high")):
    glue(f"shipped-{key}", Markdown(f"{at_report[column]:+.0%}"), display=False)

# %% [markdown]
# - attacked every model with APGD-CE, APGD-T and (this chapter's two) Square from eps 0 to
#   {glue:md}`sweep-largest`/255: at {glue:md}`sweep-largest`/255 the worst-case robust accuracy
#   is {glue:md}`worst-at-largest`; the sweep check fails for {glue:text}`sweep-failing` of
#   {glue:text}`sweep-models` models;
# - ran {glue:text}`masking-run` gradient-masking checks, of which {glue:text}`masking-passed` pass;
# - attacked the baseline as the report's code did: at {glue:md}`shipped-eps` its success rate is
#   {glue:md}`shipped-gap` [{glue:md}`shipped-low`,
#   {glue:md}`shipped-high`] above the fixed attack's, the share that comes from the clamp and
#   the units, not from the model.

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
provenance(params_file, params, data, runs={f"{name}, seed {run.config.seed}": run for name, seeds in seed_runs.items()
                                            for run in seeds})
