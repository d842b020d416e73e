"""Procedural fundus photographs with diabetic-retinopathy lesions and ground truth.

The embedded default dataset: EyePACS-like colour fundus photographs of both eyes of each
patient, graded 0-4 (ICDR), each with a lesion mask, written in the Kaggle layout.

What lives where (each module imports only the ones above it):

- ``specs``: ``EyeSpec``, the grades, labels, cue, distractor and acquisition of every eye (``sample_specs``).
- ``anatomy``: a patient's optic disc, macula and vessel tree.
- ``lesions``: ``LESION_CODES``, the lesions a grade gets and their shapes (``lesion_counts``).
- ``render``: one eye's image and lesion mask, the spurious cue and the distractor included (``render_eye``;
  ``render_variants``: one eye under several patch settings, rendered once).
- ``disk``: the dataset in the Kaggle layout (``generate_dataset``, ``load_specs``; ``generate_datasets``: the
  plain and the cue data sets together, each eye rendered once).

Conventions used throughout:

- Images are RGB uint8 (H, W, 3) with H = round(2/3 W), like EyePACS' 3:2 frames.
- Geometry is in units of the fundus radius R (in px: ``field_scale * H / 2``), with the origin at
  the fundus centre, x to the right and y down, so nothing depends on the image width.
- Anatomy (optic disc, macula, vessel tree) is built for a right eye (disc on the right, the
  nasal side) and mirrored for a left eye; lesions are placed in the mirrored frame; an
  "inverted" image (taken through an indirect ophthalmoscope) is the result turned by 180 degrees,
  mask included. The spurious cue and the distractor are drawn last, at fixed places relative to the fundus centre.
- All randomness of one image comes from ``spec.seed`` (lesions, texture, noise: independent
  streams) and ``spec.anatomy_seed`` (shared by the patient's two eyes), so ``render_eye`` is a
  pure function and ``dataclasses.replace(spec, cue=False)`` changes only the cue's pixels.

Example::

    specs = sample_specs(SyntheticConfig(n_patients=10, seed=0))
    rgb, mask = render_eye(specs[0], width=576, difficulty=1.0)
    generate_dataset(Path("data/synthetic/demo"), SyntheticConfig(n_patients=10, seed=0))
"""

from fundus_lib.data.synthetic.disk import PATCH_SETTINGS, generate_dataset, generate_datasets, load_specs
from fundus_lib.data.synthetic.lesions import CUE_CODE, DISTRACTOR_CODE, LESION_CODES, lesion_counts
from fundus_lib.data.synthetic.render import (
    CUE_OFFSET,
    DISTRACTOR_OFFSET,
    PATCH_AMPLITUDE,
    PATCH_SIZE,
    render_eye,
    render_variants,
)
from fundus_lib.data.synthetic.specs import GENERATOR_VERSION, N_GRADES, EyeSpec, sample_specs

__all__ = [
    "CUE_CODE",
    "CUE_OFFSET",
    "DISTRACTOR_CODE",
    "DISTRACTOR_OFFSET",
    "PATCH_AMPLITUDE",
    "PATCH_SETTINGS",
    "PATCH_SIZE",
    "GENERATOR_VERSION",
    "LESION_CODES",
    "N_GRADES",
    "EyeSpec",
    "generate_dataset",
    "generate_datasets",
    "lesion_counts",
    "load_specs",
    "render_eye",
    "render_variants",
    "sample_specs",
]
