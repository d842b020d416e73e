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
# (chapter-build)=
# # How this book was built
#
# Every number in this book was computed by the build that rendered it; so was the time that
# build took. `make book` writes a timing record as it goes (`fundus_lib.report.build_record`): the
# install step, the data step (generating or reading the photographs, the preprocessed caches and
# the split), then for each chapter the training of the runs it is the first to need and the
# execution of the chapter itself, and finally the HTML. This page shows that record, the machine
# it ran on, and the earlier builds kept in the same run store. Nothing on it is typed by hand.
#
# On a CPU with two cores or more, two runs train at once, and the chapters before the
# conclusions execute two at a time, each on its share of the cores (`runtime.side_by_side`): their
# steps overlap, so the build's time is its wall clock, shorter than the sum of its steps.
#
# This page is executed before its own execution and the HTML step are timed: those two appear
# in the history below once the build has finished, and in the next build's page.

# %% tags=["parameters", "remove-cell"]
params_file = "params/demo.yaml"
record_dir = "book/generated"  # where the build's record is (the executed chapters' folder)

# %% tags=["hide-input"]
from IPython.display import Markdown, display

from fundus_lib.report.build_record import build_summary, chapters_frame, read_history, read_record, steps_frame
from fundus_lib.report.plots import build_minutes
from fundus_lib.report.tables import styled

record = read_record(record_dir)
Markdown(build_summary(record, record_dir))

# %% [markdown]
# ## This build, step by step
#
# A chapter's training time is that of the runs it is the first chapter to read (a run shared by
# two chapters is trained once, under the first); runs already in the store cost nothing here.

# %% tags=["hide-input"]
if record is not None:
    steps = steps_frame(record)
    shown = steps.assign(seconds=steps["seconds"].round(0).astype(int), minutes=steps["minutes"].round(1))
    display(styled(shown.set_index(["step", "chapter"]), caption="This build's steps (wall clock of each; the "
                   "chapters executed side by side overlap)"))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Minutes per chapter in this build: training the runs it is the first to read, and executing it.", "name": "fig-build-minutes"}}
build_minutes(chapters_frame(record)) if record is not None and len(chapters_frame(record)) else None

# %% [markdown]
# ## Earlier builds from this run store
#
# Each finished `make book` appends its record to the run store (`builds.jsonl` beside the runs),
# so the history lasts as long as the store: a build from an empty store trains every run, a
# later one mostly reads them back.

# %% tags=["hide-input"]
history, unreadable = read_history()
if len(history):
    display(styled(history.round(1).set_index("started"), caption="Finished builds in this run store, oldest first "
                   "(minutes per step, summed over chapters; total: the wall clock)"))
else:
    display(Markdown("No finished build is recorded in this run store yet (a build is recorded once its HTML is "
                     "written)."))
if unreadable:
    display(Markdown("Lines of the history left out: " + "; ".join(unreadable)))
