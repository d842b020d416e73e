"""Counterfactual versions of synthetic test images: the same eye re-rendered with the spurious
cue or the distractor switched on or off, then put through the cache's own path (JPEG at the generator's quality,
field-of-view estimate, Graham preprocessing at the cache size). Everything else about the image
(anatomy, lesions, camera, the other patch) stays the same, because ``render_eye`` is a pure function of its spec;
``rerender_variants`` renders each eye once for several variants.

Example::

    without_cue = rerender(data, data.rows("test"), cue=False)     # uint8 (N, S, S, 3)
    flipped = rerender(data, rows, distractor=~present)          # one bool per row
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
from tqdm import tqdm

from fundus_lib.data.decode import decode_fundus_bytes
from fundus_lib.data.pipeline import FundusData
from fundus_lib.data.preprocess import preprocess
from fundus_lib.data.synthetic import load_specs, render_variants


def _as_cached(rgb: np.ndarray, size: int, circle: float, quality: int) -> np.ndarray:
    """A rendered photograph encoded as the generator encodes it and decoded and preprocessed as
    the cache builder does: uint8 (size, size, 3)."""
    ok, buffer = cv2.imencode(".jpeg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = decode_fundus_bytes(buffer.tobytes(), size / 2)
    return preprocess(decoded.rgb, decoded.fov, size, circle)


def rerender(
    data: FundusData, rows, cue: bool | np.ndarray | None = None, distractor: bool | np.ndarray | None = None
) -> np.ndarray:
    """The images of manifest ``rows`` with the cue and/or the distractor forced on/off (a bool, or
    one bool per row; None keeps the eye's own).

    Only for synthetic data (it needs the generator's specs). Returns uint8 (len(rows), S, S, 3).
    """
    return rerender_variants(data, rows, {"images": {"cue": cue, "distractor": distractor}}, progress=False)["images"]


def rerender_variants(data: FundusData, rows, changes: dict[str, dict], progress: bool = True) -> dict[str, np.ndarray]:
    """Several ``rerender`` variants of the same rows at once, each eye rendered once
    (``render_variants``): name -> the images with that variant's ``cue``/``distractor`` forcing."""
    if data.config.source != "synthetic":
        raise ValueError("counterfactual images exist only for the synthetic data")
    generator, size = data.config.synthetic, data.config.image_size
    by_image = {spec.image: spec for spec in load_specs(data.images_dir.parent)}
    specs = [by_image[data.manifest.at[row, "image"]] for row in rows]
    forced = {
        name: {
            patch: np.broadcast_to(np.asarray(value, dtype=bool), (len(rows),))
            for patch, value in change.items()
            if value is not None
        }
        for name, change in changes.items()
    }
    out = {name: np.empty((len(rows), size, size, 3), np.uint8) for name in changes}
    for position, spec in enumerate(
        tqdm(specs, desc="counterfactual images", unit="img", leave=False, disable=not progress)
    ):
        variants = [
            replace(spec, **{patch: bool(values[position]) for patch, values in forcing.items()})
            for forcing in forced.values()
        ]
        rendered = render_variants(variants, generator.raw_width, generator.difficulty)
        for name, (rgb, _) in zip(out, rendered):
            out[name][position] = _as_cached(rgb, size, data.config.graham_circle, generator.jpeg_quality)
    return out
