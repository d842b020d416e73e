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
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from fundus_lib.config import load_params
from fundus_lib.experiments import balancing_runs, seeded
from fundus_lib.metrics import REPORT_METRICS
from fundus_lib.report.numbers import report_table
from fundus_lib.report.plots import confusion_heatmaps, prediction_shares
from fundus_lib.report.provenance import provenance
from fundus_lib.report.tables import REPORT_LABEL, beside_report, duration, over_seeds, run_label, spread_text, styled
from fundus_lib.runs import get_run

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
    + f". Numbers are on the test split, the mean over {params.seeds} training seed(s) ± the half-width of its 95 % "
    "interval over seeds (the per-seed numbers are in the run store); the epoch is chosen on validation "
    f"{params.train.select_on.replace('_', ' ')} (the report: balanced accuracy). Figures show the first seed."
))

# %% [markdown]
# ## Results (Table 5)

# %% tags=["hide-input"]
seed_runs = {name: [get_run(params, config, train=train_missing) for config in seeds]
             for name, seeds in seeded(params, configs).items()}
runs = {name: seeds[0] for name, seeds in seed_runs.items()}
means = over_seeds({name: [run.metrics("test") for run in seeds] for name, seeds in seed_runs.items()})
spread = spread_text(means, REPORT_METRICS, percent=("accuracy", "balanced_accuracy"))
rows = pd.DataFrame([
    {"method": name, "batch_size": run.config.batch_size, "epochs": run.record["epochs_run"],
     **spread.loc[name], "training_time": duration(run.total_seconds / 3600)}
    for name, run in runs.items()
])
report5 = report_table("table5")[["method", "batch_size", *REPORT_METRICS, "training_time"]]
order: dict[str, int] = {}
for name in [*runs, *report5["method"]]:  # this run's order, then the report's extra rows
    order.setdefault(name, len(order))
SHORT = {"batch_size": "batch", "accuracy": "acc.", "balanced_accuracy": "bal. acc.", "training_time": "time"}
table5 = beside_report(report5, rows, "method", ours).rename(columns=SHORT, level=1)
table5 = table5.iloc[np.argsort([order[name] for name in table5.index])]
for column in [(REPORT_LABEL, "batch"), (ours, "batch"), (ours, "epochs")]:
    table5[column] = table5[column].astype("Int64")
styled(table5, percent=("acc.", "bal. acc."), decimals=3,
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
true_shares = runs[baseline_name].confusion("test").sum(axis=1) / runs[baseline_name].confusion("test").sum()
shares = pd.DataFrame({name: run.confusion("test").sum(axis=0) / run.confusion("test").sum()
                       for name, run in runs.items()}).T
shares.loc["true grades (test split)"] = true_shares
shares = shares.loc[["true grades (test split)", *runs]]
shares.columns.name = "predicted grade"
prediction_shares(shares)

# %% tags=["hide-input"]
zero_share = shares[0].drop("true grades (test split)")
styled(pd.DataFrame({"predicted grade 0": zero_share, "change vs baseline": zero_share - zero_share[baseline_name]}),
       percent=("predicted grade 0", "change vs baseline"), caption="Share of test predictions that are grade 0")

# %% [markdown]
# ## What this run says

# %% tags=["hide-input"]
report_rows = report5.set_index("method")
on_valid = over_seeds({name: [run.metrics("valid") for run in seeds] for name, seeds in seed_runs.items()})
lines = []
for metric, label in (("balanced_accuracy", "balanced accuracy"), ("kappa", "kappa")):
    best_here, best_report = on_valid[metric].idxmax(), report_rows[metric].idxmax()  # chosen on validation
    verdict = "the same method as" if best_here == best_report else "not the method that won in"
    lines.append(
        f"- Best {label} on validation here: **{best_here}** (on test {means.at[best_here, metric]:.3f}; the baseline "
        f"{means.at[baseline_name, metric]:.3f}), {verdict} the report, whose best was {best_report} "
        f"({report_rows.at[best_report, metric]:.3f})."
    )
moved = zero_share.drop(baseline_name)
lines.append(
    f"- The method that moved most predictions away from grade 0 is **{(moved - zero_share[baseline_name]).idxmin()}** "
    f"({moved.min():.0%} grade-0 predictions against the baseline's {zero_share[baseline_name]:.0%}; true share "
    f"{true_shares[0]:.0%})."
)
loss_rows = [name for name in means.index if "loss" in name]
if loss_rows:
    loss_shift = (zero_share[loss_rows] - zero_share[baseline_name]).mean()
    lines.append(
        f"- Re-weighted losses change the share of grade-0 predictions by {loss_shift:+.1%} on average: "
        + ("little, as the report found (\"they have little influence on balancing the decision distribution\")."
           if abs(loss_shift) < 0.05 else "more than the report's \"little influence\".")
    )
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Summary
#
# In this chapter we have:

# %% tags=["hide-input"]
display(Markdown(
    f"- trained {len(runs)} balancing methods on {model_row.model} at {model_row.image_size} px, each beside the "
    f"report's number;\n"
    f"- compared the confusion matrices of Figures 2 and 3 and the share of predictions per grade;\n"
    f"- found the best validation balanced accuracy with {on_valid['balanced_accuracy'].idxmax()} and the best "
    f"validation kappa with {on_valid['kappa'].idxmax()} (the findings with their intervals are in the conclusions)."
))

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
provenance(params_file, params, runs={f"{name}, seed {run.config.seed}": run for name, seeds in seed_runs.items()
                                     for run in seeds})
