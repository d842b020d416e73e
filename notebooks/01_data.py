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
# (chapter-data)=
# # Dataset, preprocessing and augmentation
#
# This chapter reproduces Tables 1 and 3 and Figure 1 of the report (its sections 2.1 and 2.2).
# We will:
#
# - build the dataset named by the parameters (by default the synthetic fundus photographs, see
#   {ref}`the introduction <synthetic-data>`), preprocess it into a cache and split it by patient;
# - compare its class balance and its split with the report's Tables 1 and 3;
# - show Graham's preprocessing (Figure 1), the training augmentation and the lesion masks.
#
# Every table and figure below is computed by the run that built this page; the report's own
# numbers come from one data file and are labelled as the report's.

# %% tags=["parameters", "remove-cell"]
params_file = "params/demo.yaml"

# %% tags=["hide-input"]
import numpy as np
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from fundus_lib.config import load_params
from fundus_lib.data.augment import build_augmentation
from fundus_lib.data.pipeline import prepare_data
from fundus_lib.data.synthetic import LESION_CODES
from fundus_lib.report import dataset as views
from fundus_lib.report.numbers import report_table
from fundus_lib.report.plots import image_grid
from fundus_lib.report.provenance import provenance
from fundus_lib.report.tables import beside_report, grade_distribution, run_label, styled

# %% tags=["hide-input"]
params = load_params(params_file)
ours = run_label(params)
data = prepare_data(params)
usable = views.usable(data)

# %% [markdown]
# ## The data
#
# The report used the 35,126 photographs of the Kaggle EyePACS training set. This run uses the
# data named in the params file; the next cell says which, how many images were usable, and
# why any were skipped.

# %% tags=["hide-input"]
display(Markdown(views.data_text(params, data)))
if len(data.skipped):
    display(styled(data.skipped.groupby("reason").size().rename("images").to_frame(),
                   caption="Skipped images by reason"))

# %% [markdown]
# ## Duplicates and conflicting labels
#
# The same photograph under two names would be trained on twice, or trained on and tested on. Files
# with the same content hash are resolved in one place (`fundus_lib.data.duplicates`): a duplicate
# whose grades agree is kept once; a group whose grades disagree is excluded (its true grade is
# unknown). Both are recorded as skips above. Near-duplicates (the same photograph re-encoded or
# resized: a 256-bit difference hash of the cached images within 32 bits) are counted, not removed.
# Where the parameters name an external test set (`data.external`, e.g. IDRiD's grading set, Porwal
# et al. 2020), its photographs are checked the same way, and against this data set: an external
# photograph that is also a training or validation photograph is not external and is excluded.

# %% tags=["hide-input"]
counts_table, conflict_tables, near = views.duplicates_tables(params, data, ours)
display(styled(counts_table, caption="Duplicates, conflicting grades and non-fundus "
               "photographs per data set (byte-identical: kept once; with other grades: excluded)"))
for name, table in conflict_tables.items():
    if len(table):
        display(styled(table, caption=f"{name}: byte-identical photographs with different grades (excluded)"))
if len(near):
    display(styled(near.head(20), caption="Near-duplicate pairs of this data set (the first 20; bits: Hamming "
                                          "distance of the hashes)"))

# %% [markdown]
# ## Class balance (Table 1)
#
# The grades are as imbalanced as in the report: about three images in four show no
# retinopathy, so a model that always answers 0 is right 73 % of the time. The synthetic
# generator draws grades with the report's Table 1 shares by default.

# %% tags=["hide-input"]
table1 = beside_report(report_table("table1"), grade_distribution(usable["level"]), "grade", ours)
styled(table1, percent=("share",), caption="Table 1: images per grade, the report's beside this run's")

# %% [markdown]
# ## The patient-level split (Table 3)
#
# The report split the images 7:3 at random, image by image, into a training and a validation
# split, and reported the best epoch on that validation split. Two things change here, on
# purpose (see {doc}`../deviations`):
#
# - the split is by **patient**: both eyes of a patient, whose grades agree most of the time, are
#   always in the same split, so the model cannot score on an eye whose twin it trained on;
# - a separate **test** split holds the reported numbers; validation only picks the epoch.

# %% tags=["hide-input"]
styled(views.table3(data, ours), percent=("share",), caption="Table 3: grade distribution per split")

# %% tags=["hide-input"]
for key, value in views.split_counts(data).items():
    glue(key, value, display=False)

# %% [markdown]
# Patients whose eyes fall in more than one split: **{glue:text}`patients-in-two-splits`** (of
# {glue:text}`patients:,`). Patients whose two eyes have the same grade: **{glue:text}`eyes-agree:.0%`**,
# which is why an image-level split leaks.

# %% tags=["hide-input"]
if params.data.source == "synthetic":  # the generator knows each image's true grade: what its label noise costs
    noise, ceiling = views.label_noise(data)
    display(styled(noise, percent=("labelled otherwise", "labels that are right"),
                   caption=f"Label noise on the test split (label_noise = {params.data.synthetic.label_noise}: the "
                           "average; the generator keeps the class balance, so the rare grades are relabelled most)"))
    display(Markdown(
        f"A model that knew every true grade would score, against these labels, accuracy **{ceiling['accuracy']:.1%}**, "
        f"balanced accuracy **{ceiling['balanced_accuracy']:.1%}** and kappa **{ceiling['kappa']:.3f}** on the test "
        "split: the ceiling for every model of this book. Attributions (chapter 6) explain the true grade."))

# %% [markdown]
# ## Graham preprocessing (Figure 1)
#
# Following the Kaggle winner Ben Graham, each photograph is scaled so that the fundus has a
# fixed radius, the local average colour (a Gaussian blur with sigma = radius / 30) is
# subtracted, `4 * image - 4 * blur + 128`, and only a circle of 95 % of the radius is kept.
# Vessels, haemorrhages and exudates stand out; the camera's brightness and colour cast fade.
# JPEGs are decoded directly at 1/2, 1/4 or 1/8 of their size when the fundus stays at least as
# large as the cache needs (DCT scaling; see the benchmark in the README).

# %% tags=["hide-input"] mystnb={"figure": {"caption": "One photograph per grade: as taken (top) and after Graham preprocessing (bottom). The report's Figure 1 shows one pair.", "name": "fig-graham"}}
rng = np.random.default_rng(0)  # Figure 1 and the lesion masks draw their examples from it, in this order
views.graham_figure(data, rng)

# %% tags=["hide-input"]
Markdown(views.reductions_text(data))

# %% [markdown]
# ## Augmentation
#
# During training each image is randomly transformed, each step with probability 50 % as in the
# report: scaling 90-110 %, translation up to 5 %, rotation -30 to 10 degrees, shear -10 to 10
# degrees, brightness and contrast 85-115 %, and a horizontal flip (left and right eyes are
# mirror images, so a flipped eye is still a plausible eye of the same grade).

# %% tags=["hide-input"] mystnb={"figure": {"caption": "One training image (top left) and seven random augmentations of it.", "name": "fig-augmentation"}}
augment = build_augmentation(params.augment)
image = np.array(data.cache.images[data.rows("train")[0]])
torch.manual_seed(0)
image_grid([image] + [augment(image) for _ in range(7)],
           ["original"] + [f"augmented {index}" for index in range(1, 8)], ncols=4)

# %% [markdown]
# (lesion-masks)=
# ## Lesion masks
#
# The report could not say whether its models looked at lesions, for lack of ground truth. The
# synthetic photographs carry a mask of every lesion they contain, preprocessed with the same
# geometry as the image, so chapter 6 can measure where attributions land. (Real EyePACS data
# has no masks; this section is then skipped.)

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Preprocessed synthetic images of grades 1 to 4 (top) and the same images with their lesion masks (bottom).", "name": "fig-lesion-masks"}}
if data.cache.masks is None:
    display(Markdown("*This dataset has no lesion masks.*"))
else:
    display(views.lesion_figure(data, rng))

# %% tags=["hide-input"]
if data.cache.masks is not None:
    display(styled(views.lesion_table(data), percent=tuple(LESION_CODES.values()),
                   caption="Share of images per label whose cached mask contains each lesion type"))

# %% [markdown]
# ## Summary
#
# In this chapter we have:

# %% tags=["hide-input"]
glue("n-usable", len(usable), display=False)
glue("n-skipped", len(data.skipped), display=False)
glue("grade-0-share", float(grade_distribution(usable["level"])["share"][0]), display=False)
glue("split-sizes", Markdown(", ".join(f"{name} {len(data.rows(name)):,}" for name in views.SPLITS)), display=False)

# %% [markdown]
# - built a dataset of {glue:text}`n-usable:,` usable images ({glue:text}`n-skipped:,` skipped, with
#   reasons) whose grade-0 share is {glue:text}`grade-0-share:.1%` (report: 73.5 %);
# - split it by patient into {glue:md}`split-sizes` images, with no patient in two splits;
# - shown Graham preprocessing, the augmentation and the lesion masks later chapters measure against.

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
provenance(params_file, params, data)
