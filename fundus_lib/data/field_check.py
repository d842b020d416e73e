"""Is a photograph a fundus? The dark-corner test that keeps ordinary photographs out of the cache.

A fundus camera images the retina through a round aperture: the field of view is a bright disc
(sometimes cut at top and bottom) on a dark background, so the corners of the frame lie outside
it and are dark. An ordinary photograph (a cat, a cup of coffee, a portrait) has scene in its
corners. The test compares the corners with the field: the mean brightness (channel sum) of
each corner patch (1/16 of the shorter side) against the median brightness inside the field
(within 90 % of its radius), and asks for at least two dark corners, which allows a field shifted
against one side or cut at top and bottom.

Measured with ``benchmarks/check_fundus_filter.py`` on every real photograph of ``../shared/data``
(EyePACS, IDRiD): the second-darkest corner is at most 0.22 of the field's brightness (EyePACS
crops whose background was brightened to grey included); on scikit-image's and matplotlib's
ordinary photographs it is 0.49 (Grace Hopper, astronaut) to 1.13 (Hubble deep field). A colour test
(red > blue) does not separate them: colour-adjusted EyePACS crops go down to red / blue = 0.82.
What passes anyway: an ordinary photograph with black corners (a vignetted or round-framed picture).
"""

from __future__ import annotations

import numpy as np

from fundus_lib.data.preprocess import FieldOfView

#: How every skip reason for a photograph that is not a fundus starts (chapter 1 counts them).
NOT_A_FUNDUS = "not a fundus photograph"
#: A corner is dark when its brightness is below this share of the field's median brightness.
MAX_CORNER_SHARE = 0.35
#: Corner patch side as a share of the image's shorter side.
CORNER_SIDE = 1 / 16
#: The field's brightness is measured within this share of its radius.
FIELD_CORE = 0.9


def corner_brightness(rgb: np.ndarray, fov: FieldOfView) -> np.ndarray:
    """Mean brightness of the four corner patches relative to the field's median, sorted (darkest first)."""
    height, width = rgb.shape[:2]
    brightness = rgb.astype(np.int32).sum(axis=2)
    yy, xx = np.ogrid[:height, :width]
    core = (xx - fov.cx) ** 2 + (yy - fov.cy) ** 2 <= (FIELD_CORE * fov.radius) ** 2
    field = max(float(np.median(brightness[core])) if core.any() else 0.0, 1.0)
    side = max(2, round(min(height, width) * CORNER_SIDE))
    corners = [
        brightness[:side, :side],
        brightness[:side, -side:],
        brightness[-side:, :side],
        brightness[-side:, -side:],
    ]
    return np.sort([corner.mean() / field for corner in corners])


def not_a_fundus(rgb: np.ndarray, fov: FieldOfView) -> str:
    """The reason ``rgb`` is not a fundus photograph, or "" when at least two of its corners are dark."""
    second = corner_brightness(rgb, fov)[1]
    if second <= MAX_CORNER_SHARE:
        return ""
    return (
        f"{NOT_A_FUNDUS}: no dark border around a round field (three of its corners are "
        f"{second:.2f} times as bright as the field or more; a fundus has at least two below {MAX_CORNER_SHARE})"
    )
