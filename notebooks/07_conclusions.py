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
# A finding is written as a test on a table (for example "SMOTE gives the lowest kappa of all
# methods"). The same test runs on the report's published numbers and on this run's, so nothing
# here is typed in: a finding is **reproduced** when this run's numbers pass the test the report's
# numbers pass, **not reproduced** when they fail it, and **not tested** when the params file has
# no run for it.

# %% tags=["parameters", "remove-cell"]
params_file = "params/demo.yaml"
train_missing = True  # False: read runs from the store only, never train (`fundus run --from-store`)

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display

from fundus_lib.config import load_params
from fundus_lib.experiments import baseline_runs
from fundus_lib.findings import NOT_REPRODUCED, NOT_TESTED, REPRODUCED, report_findings
from fundus_lib.provenance import provenance
from fundus_lib.runs import run_data
from fundus_lib.tables import REPORT_LABEL, run_label, styled

params = load_params(params_file)
findings = report_findings(params, train=train_missing)

# %% tags=["hide-input"]
table = pd.DataFrame([{"where": item.section, "the report's finding": item.claim, REPORT_LABEL: item.report,
                       run_label(params): item.ours, "verdict": item.verdict} for item in findings])
colours = {REPRODUCED: "background-color: #d9f2d9", NOT_REPRODUCED: "background-color: #f8d7d7",
           NOT_TESTED: "background-color: #eeeeee"}
styled(table.set_index(["where", "the report's finding"]), caption="The report's findings against this run"
       ).map(lambda verdict: colours.get(verdict, ""), subset=["verdict"])

# %% tags=["hide-input"]
counts = table["verdict"].value_counts()
tested = counts.get(REPRODUCED, 0) + counts.get(NOT_REPRODUCED, 0)
data_note = ("This run used the **synthetic** fundus data, so a reproduced finding means the same pattern appears "
             "on a different, simpler dataset with the project's CPU-sized models, not a confirmation of the report's "
             "EyePACS numbers." if params.data.source == "synthetic" else
             "This run used the **EyePACS** data of the report.")
failed = [f"{item.section} ({item.claim})" for item in findings if item.verdict == NOT_REPRODUCED]
display(Markdown(
    f"Of the {len(findings)} findings, this run ({params.name}) tested **{tested}** and reproduced "
    f"**{counts.get(REPRODUCED, 0)}**" + (f"; not reproduced: {'; '.join(failed)}" if failed else "") + f". {data_note}"
))

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
provenance(params_file, params, run_data(params, next(iter(baseline_runs(params).values())), progress=False))
