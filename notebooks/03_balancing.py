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
# (chapter-balancing)=
# # Dataset balancing
#
# This chapter reproduces Table 5 and Figures 2 and 3 of the report (its section 3). We will:
#
# - train one model with every balancing method of the report: focal loss, class-balanced loss,
#   inverse-frequency loss, oversampling with three dropout rates, oversampling restarted from the
#   baseline's weights, and SMOTE on images;
# - compare accuracy, balanced accuracy, kappa and training time with the report's Table 5;
# - look at what each method does to the predictions: the confusion matrices the report compares,
#   and how far each method moves predictions away from grade 0, which is the report's argument.

# %% tags=["parameters", "remove-cell"]
params_file = "params/demo.yaml"
train_missing = True  # False: read runs from the store only, never train (`fundus run --from-store`)

# %% tags=["hide-input"]
from IPython.display import Markdown, display
from myst_nb import glue

from fundus_lib.config import load_params
from fundus_lib.experiments import balancing_runs, seed_count, seeded
from fundus_lib.report import balancing as views
from fundus_lib.report.plots import confusion_heatmaps, prediction_shares
from fundus_lib.report.provenance import provenance
from fundus_lib.report.tables import run_label, styled
from fundus_lib.runs import get_run

# %% tags=["hide-input"]
params = load_params(params_file)
ours = run_label(params)
model_row = params.balancing.model
configs = balancing_runs(params)
baseline_name = params.balancing.methods[0].name

# %% [markdown]
# ## The methods
#
# With $p_t$ the softmax probability the model gives the true grade $y$ of an image and $n_y$ the
# number of training images of that grade:
#
# - **Focal loss** (the report's eqs. 6-7, written there for two classes) multiplies the
#   cross-entropy by $(1 - p_t)^\gamma$, so images the model already gets right (mostly grade 0)
#   count less; $\gamma = 0$ is cross-entropy:
#
#   $$\mathrm{FL}(p_t) = -(1 - p_t)^{\gamma} \log p_t$$
#
# - **Class-balanced loss** (eqs. 8-9, Cui et al.) weights each grade by the inverse of its
#   "effective number" of images $E_n = (1 - \beta^{n}) / (1 - \beta)$; as $\beta \to 1$ it becomes
#   inverse frequency. Here the weights are normalised to sum to K (as Cui et al.; the report's
#   text does not say), so the loss keeps the scale of cross-entropy:
#
#   $$\mathrm{CB}(p_t) = -\frac{1 - \beta}{1 - \beta^{n_y}} \log p_t$$
#
# - **Inverse-frequency loss** weights each grade by $1 / n_y$, normalised the same way.
# - **Oversampling** repeats the images of every grade until each has as many as grade 0 (the
#   report: 25,810 x 5 images per epoch), with dropout 0, 0.75 or 0.9 before the last layer;
#   **oversampling + restart** fine-tunes the cross-entropy model on the oversampled set.
# - **SMOTE** adds synthetic images `x_i + u (x_j - x_i)` between an image and one of its nearest
#   same-grade neighbours in pixel space, until the grades are balanced; the time it takes counts
#   as training time, as in the report.

# %% tags=["hide-input"]
epochs = {name: config.epochs for name, config in configs.items()}
display(Markdown(
    f"Every method trains **{model_row.model}** at **{model_row.image_size} px** (the report: efficientnet-b0 at "
    f"512 px) with batch size {model_row.batch_size}, for "
    + ", ".join(f"{count} epochs ({', '.join(n for n, e in epochs.items() if e == count)})"
                for count in sorted(set(epochs.values()), reverse=True))
    + f". Numbers are on the test split, the mean over {seed_count(params, 'balancing')} training seed(s) ± the half-width of its 95 % "
    "interval over seeds (the per-seed numbers are in the run store); the epoch is chosen on validation "
    f"{params.train.select_on.replace('_', ' ')} (the report: balanced accuracy). Figures show the first seed."
))

# %% [markdown]
# ## Results (Table 5)

# %% tags=["hide-input"]
seed_runs = {name: [get_run(params, config, train=train_missing) for config in seeds]
             for name, seeds in seeded(params, configs, "balancing").items()}
runs = {name: seeds[0] for name, seeds in seed_runs.items()}
styled(views.table5(seed_runs, ours), percent=("acc.", "bal. acc."), decimals=3,
       caption="Table 5: the report's balancing methods beside this run's (mean over seeds ± 95 % interval "
               "half-width; epochs and training time of the first seed; training time includes SMOTE's generation time)")

# %% [markdown]
# ## Confusion matrices (Figures 2 and 3)
#
# The report compares the baseline with oversampling (dropout 0.9) and oversampling restarted from
# the baseline (Figure 2), and with focal loss (gamma 2) and class-balanced loss (beta 0.99)
# (Figure 3). Rows are the true grades, each normalised to 1.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figure 2: the baseline, oversampling with dropout 0.9 and oversampling restarted from the baseline, on the test split.", "name": "fig-balancing-oversampling"}}
def matrices(names):
    return {name: runs[name].confusion("test") for name in names if name in runs}


confusion_heatmaps(matrices([baseline_name, "oversampling dropout=0.9", "oversampling + restart"]))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figure 3: the baseline, focal loss (gamma 2) and class-balanced loss (beta 0.99), on the test split.", "name": "fig-balancing-losses"}}
confusion_heatmaps(matrices([baseline_name, "focal loss gamma=2", "class-balanced loss beta=0.99"]))

# %% [markdown]
# ## Where the predictions go
#
# The report's argument is about the *distribution* of decisions: a model trained on imbalanced
# data answers grade 0 too often, and a balancing method is worth something if it moves
# predictions towards the minority grades without losing too much accuracy. Below, the share of
# test predictions per grade for every method, and the true shares for reference.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Share of test predictions per grade for each method; the first bar shows the true grades of the test split.", "name": "fig-prediction-shares"}}
shares = views.prediction_shares_frame(runs)
prediction_shares(shares)

# %% tags=["hide-input"]
styled(views.zero_shares(shares, baseline_name), percent=("predicted grade 0", "change vs baseline"),
       caption="Share of test predictions that are grade 0")

# %% [markdown]
# ## What this run says

# %% tags=["hide-input"]
Markdown(views.reading_text(seed_runs, shares, baseline_name))

# %% [markdown]
# ## Summary
#
# In this chapter we have:

# %% tags=["hide-input"]
glue("n-methods", len(runs), display=False)
glue("model-row", f"{model_row.model} at {model_row.image_size} px", display=False)
glue("best-bacc", views.best_on_validation(seed_runs, "balanced_accuracy"), display=False)
glue("best-kappa", views.best_on_validation(seed_runs, "kappa"), display=False)

# %% [markdown]
# - trained {glue:text}`n-methods` balancing methods on {glue:text}`model-row`, each beside the
#   report's number;
# - compared the confusion matrices of Figures 2 and 3 and the share of predictions per grade;
# - found the best validation balanced accuracy with {glue:text}`best-bacc` and the best validation
#   kappa with {glue:text}`best-kappa` (the findings with their intervals are in the conclusions).

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
provenance(params_file, params, runs={f"{name}, seed {run.config.seed}": run for name, seeds in seed_runs.items()
                                     for run in seeds})
