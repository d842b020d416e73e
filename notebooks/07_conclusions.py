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
# (chapter-conclusions)=
# # Conclusions: what this run reproduces
#
# The report's findings, one per line, each checked against the runs the chapters above computed.
# A finding is one or more differences between configurations on the same test images (for
# example "SMOTE's kappa minus each other row's"), judged by rules fixed in advance in
# `fundus_lib.statistics`: the estimate is the mean over the training seeds, its 95 % interval
# combines a paired bootstrap over the test images with the spread over seeds, and a **margin**
# says how large a difference must be to count as the report's effect. A finding is
# **reproduced** when every interval lies on the report's side of its margin, **contradicted**
# when one lies wholly on the other side, and **inconclusive** when the data cannot decide (an
# interval straddles the margin, a single seed, or a measure that cannot show the effect). The
# **MDD** (minimum detectable difference) is the true difference this run would detect with 80 %
# probability: a report effect smaller than it cannot be reproduced here, whatever the truth. No
# row is chosen on the test split.

# %% tags=["parameters", "remove-cell"]
params_file = "params/demo.yaml"
train_missing = True  # False: read runs from the store only, never train (`fundus run --from-store`)

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display

from fundus_lib.config import load_params
from fundus_lib.experiments import baseline_runs
from fundus_lib.findings import report_findings
from fundus_lib.provenance import provenance
from fundus_lib.runs import run_data
from fundus_lib.statistics import CONTRADICTED, INCONCLUSIVE, NOT_TESTED, REPRODUCED
from fundus_lib.tables import REPORT_LABEL, run_label, styled

params = load_params(params_file)
findings = report_findings(params, train=train_missing)

# %% tags=["hide-input"]
table = pd.DataFrame([{"where": item.section, "the report's finding": item.claim, REPORT_LABEL: item.report,
                       f"{run_label(params)}: estimate [95 % interval]": item.ours, "n": item.n,
                       "margin": item.margin, "MDD": item.mdd, "verdict": item.verdict, "note": item.note}
                      for item in findings])
colours = {REPRODUCED: "background-color: #d9f2d9", CONTRADICTED: "background-color: #f8d7d7",
           INCONCLUSIVE: "background-color: #fff3cd", NOT_TESTED: "background-color: #eeeeee"}
styled(table.set_index(["where", "the report's finding"]), caption="The report's findings against this run"
       ).map(lambda verdict: colours.get(verdict, ""), subset=["verdict"])

# %% tags=["hide-input"]
counts = table["verdict"].value_counts()
data_note = ("This run used the **synthetic** fundus data, so a reproduced finding means the same pattern appears "
             "on a different, simpler dataset with the project's CPU-sized models, not a confirmation of the report's "
             "EyePACS numbers." if params.data.source == "synthetic" else
             f"This run used real **EyePACS** photographs ({params.description}). Where its networks are smaller "
             "than the report's or trained from scratch (chapter 2 says which), a finding that holds here holds for "
             "these photographs and these networks; one that does not may still hold for the report's networks.")
display(Markdown(
    f"Of the {len(findings)} findings, this run ({params.name}, {params.seeds} seed(s) per compared configuration) "
    f"reproduces **{counts.get(REPRODUCED, 0)}**, contradicts **{counts.get(CONTRADICTED, 0)}**, is inconclusive on "
    f"**{counts.get(INCONCLUSIVE, 0)}** and does not test **{counts.get(NOT_TESTED, 0)}**. {data_note}"
))

# %% [markdown]
# ## Every comparison
#
# The differences behind the verdicts, one per line: treatment minus reference, the rule it is
# held to, our estimate with its interval and the report's value of the same difference (where
# it published one).

# %% tags=["hide-input"]
rows = [{"where": item.section, "comparison": comparison.label, "rule": comparison.claim(),
         REPORT_LABEL: float("nan") if reported is None else reported, "estimate": comparison.estimate.mean, "low": comparison.estimate.low,
         "high": comparison.estimate.high, "MDD": comparison.mdd, "seeds": comparison.estimate.n_seeds,
         "images": comparison.estimate.n_images, "verdict": comparison.verdict}
        for item in findings for comparison, reported in zip(item.comparisons, item.reported)]
styled(pd.DataFrame(rows).set_index(["where", "comparison"]), caption="Every comparison of the findings"
       ).map(lambda verdict: colours.get(verdict, ""), subset=["verdict"])

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
provenance(params_file, params, run_data(params, next(iter(baseline_runs(params).values())), progress=False))
