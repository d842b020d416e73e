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
# adds the test-image sampling (a paired bootstrap) to the seed variance net of it, and a
# **margin** says how large a difference must be to count as the report's effect. A comparison
# is **reproduced** when its interval lies wholly beyond the margin on the report's side,
# **smaller than reported** when it lies wholly short of the margin (the effect is absent or too
# small to count, but not reversed), **contradicted** only when it lies wholly beyond the
# *opposite* margin (the effect goes the other way by at least what counts), and
# **inconclusive** when the data cannot decide (the interval straddles the margin, a single
# seed, or a measure that cannot show the effect). A finding states how its comparisons combine
# (all must hold, or "most" for Table 4) and keeps its family-wise rate of false calls at 5 %:
# 2.5 % for a false "reproduced", 2.5 % for a false "smaller" or "contradicted" (each
# comparison's far bound is widened for the number of comparisons). The finding's **MDD**
# (minimum detectable difference) is the true difference at which the *whole finding* would be
# reproduced with 80 % probability: where the report's effect lies below it, an inconclusive
# outcome says nothing about the report. No row is chosen and no gate is decided on the test
# evidence it serves.

# %% tags=["parameters", "remove-cell"]
params_file = "params/demo.yaml"
train_missing = True  # False: read runs from the store only, never train (`fundus run --from-store`)

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown
from myst_nb import glue

from fundus_lib.config import load_params
from fundus_lib.experiments import baseline_runs, seeds_phrase
from fundus_lib.findings import report_findings
from fundus_lib.report import conclusions as views
from fundus_lib.report.plots import findings_forest
from fundus_lib.report.provenance import provenance
from fundus_lib.report.tables import run_label, styled
from fundus_lib.runs import run_data
from fundus_lib.statistics import OUTCOMES

# %% tags=["hide-input"]
params = load_params(params_file)
findings = report_findings(params, train=train_missing)
comparisons = views.comparisons_frame(findings)

# %% [markdown]
# ## At a glance
#
# Every tested difference of the findings below, this run's against the report's.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Every comparison behind the findings: this run's mean over seeds with its 95 % interval (coloured by the comparison's verdict), the report's value of the same difference (cross, where it published one) and the margin of the rule (grey tick). Differences are in the units of their measure (kappa, or a share for accuracy, balanced accuracy and robust accuracy).", "name": "fig-findings-at-a-glance"}}
findings_forest(comparisons) if len(comparisons) else Markdown("No comparison was tested in this run.")

# %% tags=["hide-input"]
verdicts = pd.Series([item.verdict for item in findings])
counts = {verdict: int((verdicts == verdict).sum()) for verdict in OUTCOMES}
glue("n-findings", len(findings), display=False)
glue("n-seeds", Markdown(seeds_phrase(params)), display=False)
glue("run-name", Markdown(params.name), display=False)
for verdict, count in counts.items():
    glue(f"n-{verdict.replace(' ', '-')}", count, display=False)
glue("data-note", Markdown(
    "This run used the **synthetic** fundus data, so a reproduced finding means the same pattern appears on a "
    "different, simpler dataset with the project's CPU-sized models, not a confirmation of the report's EyePACS "
    "numbers." if params.data.source == "synthetic" else
    f"This run used real **EyePACS** photographs ({params.description}). Where its networks are smaller than the "
    "report's or trained from scratch (chapter 2 says which), a finding that holds here holds for these photographs "
    "and these networks; one that does not may still hold for the report's networks."), display=False)

# %% [markdown]
# Of the {glue:text}`n-findings` findings, this run ({glue:md}`run-name`, {glue:md}`n-seeds` seed(s)
# per compared configuration) reproduces **{glue:text}`n-reproduced`**, finds
# **{glue:text}`n-smaller-than-reported`** smaller than reported (absent or below the margin, not
# reversed), contradicts **{glue:text}`n-contradicted`** (the opposite effect), is inconclusive on
# **{glue:text}`n-inconclusive`** and does not test **{glue:text}`n-not-tested`**. {glue:md}`data-note`

# %% [markdown]
# ## The findings, one by one
#
# Each finding in a sentence: its outcome, the estimate of its first comparison (treatment minus
# reference, mean over seeds, its interval at the finding's error split) beside the report's
# value, the images and seeds behind it, and whether this run had the power to see the report's
# effect. The tables below give every comparison, and per finding its error rate and MDD.

# %% tags=["hide-input"]
for number, item in enumerate(findings, 1):
    glue(f"finding-{number}", Markdown(views.finding_sentence(item)), display=False)

# %% [markdown]
# 1. {glue:md}`finding-1`
# 2. {glue:md}`finding-2`
# 3. {glue:md}`finding-3`
# 4. {glue:md}`finding-4`
# 5. {glue:md}`finding-5`
# 6. {glue:md}`finding-6`
# 7. {glue:md}`finding-7`
# 8. {glue:md}`finding-8`
# 9. {glue:md}`finding-9`
# 10. {glue:md}`finding-10`
# 11. {glue:md}`finding-11`
# 12. {glue:md}`finding-12`
# 13. {glue:md}`finding-13`
# 14. {glue:md}`finding-14`

# %% tags=["hide-input"]
views.findings_table(findings)

# %% tags=["hide-input"]
styled(views.rules_table(findings), caption="How each finding's comparisons combine, with its false-call "
       "rates, and what was chosen or left out")

# %% [markdown]
# ## Where more seeds would buy power
#
# A finding's MDD shrinks with the seeds in two ways: the seed term of the interval falls with
# their number, and its t quantile falls with their degrees of freedom (t(2) = 4.30 for three
# seeds, t(4) = 2.78 for five). The table projects each finding's MDD to more seeds on the same
# test images, from this run's own variance components (its seed spread and its image variance;
# `Estimate.with_seeds`), and gives the fewest seeds at which this run's power at the report's
# effect would reach 80 %. It is a projection for planning, not a result: the seed spread it uses
# is itself estimated from this run's seeds, with two degrees of freedom for three seeds, so it
# can be off by a factor of two or more either way; train the projected seeds and read the table
# again. Where the image term dominates, more seeds buy little and more test images would.

# %% tags=["hide-input"]
power = views.power_table(findings)
(styled(power, percent=("test images' share of the variance",),
        caption="Each finding's MDD on this run's seeds and projected to 5 and 10 seeds (same test images), the "
                "seeds that 80 % power at the report's effect would need, and the share of the variance that comes "
                "from the test images (the largest over the finding's comparisons)") if len(power)
 else Markdown("No finding has an interval over seeds in this run."))

# %% [markdown]
# ## Every comparison
#
# The differences behind the verdicts, one per line: treatment minus reference, the rule it is
# held to (its margin), the report's value of the same difference (where it published one) beside
# our estimate with its interval (at the finding's error split), the comparison's own minimum
# detectable difference and its outcome.

# %% tags=["hide-input"]
(views.comparisons_table(comparisons, run_label(params)) if len(comparisons)
 else Markdown("No comparison was tested in this run."))

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
provenance(params_file, params, run_data(params, next(iter(baseline_runs(params).values())), progress=False))
