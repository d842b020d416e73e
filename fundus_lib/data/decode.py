"""Decoding fundus photographs, with DCT-scaled JPEG decoding.

A JPEG can be decoded directly at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling, Pillow's
``draft``), which skips most of the work for a 3888 x 2592 EyePACS photograph cached at 512 or
256 px. :func:`decode_fundus` takes the largest reduction that keeps the fundus radius at or above
the radius the cache needs, and decodes again at the next smaller reduction if the first guess
(from the header's size) went below it.

Every reason a file cannot be used raises :class:`UnusableImage`, whose message is recorded in
the cache manifest: a missing or empty file, a file that is not an image, truncated data,
grayscale or 16-bit images, images under 32 px, images with no fundus (e.g. all black), bright
fields far from round (a strip or banner) and photographs without the dark corners of a fundus
camera's round field (an ordinary photograph; see :mod:`fundus_lib.data.field_check`).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fundus_lib.data.field_check import NOT_A_FUNDUS, not_a_fundus
from fundus_lib.data.preprocess import FieldOfView, estimate_field_of_view, field_aspect

REDUCTIONS = (8, 4, 2, 1)
#: The fundus radius is assumed to be at least this share of min(width, height) / 2 when
#: choosing the first reduction; a smaller fundus triggers one more, less reduced decode.
RADIUS_GUESS = 0.9
_CONVERTIBLE = {
    "RGB": "",
    "CMYK": "converted from CMYK",
    "RGBA": "alpha channel dropped",
    "P": "converted from a palette image",
    "YCbCr": "converted from YCbCr",
    "L": "grayscale: channel replicated",
    "LA": "grayscale: channel replicated",
}
_GRAYSCALE = ("L", "LA")
#: Smaller images are skipped as too small (the smallest cache is 32 px).
MIN_SIDE_PX = 32
#: Fields lower than this share of their width are not fundus photographs (the real sample's cut fields: 0.65 and up).
MIN_FIELD_ASPECT = 0.4


class UnusableImage(Exception):
    """An image file that cannot be used; ``str(exc)`` is the reason recorded in the manifest."""


@dataclass(frozen=True)
class Decoded:
    """A decoded fundus photograph.

    rgb: uint8 (H, W, 3) at 1/reduction of the file's size; fov: its field of view in those
    pixels; width/height: the file's full size; sha1: of the file's bytes; note: a conversion
    made on the way (e.g. ``converted from CMYK``), or "".
    """

    rgb: np.ndarray
    fov: FieldOfView
    reduction: int
    width: int
    height: int
    sha1: str
    note: str


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes; UnusableImage for a missing or empty file."""
    if not path or not Path(path).is_file():
        raise UnusableImage("file not found")
    data = Path(path).read_bytes()
    if not data:
        raise UnusableImage("empty file (0 bytes)")
    return data


def _open(data: bytes, allow_grayscale: bool) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnusableImage("not an image file (unknown format)") from None
    if image.mode in _GRAYSCALE and not allow_grayscale:
        raise UnusableImage(
            f"grayscale image (mode {image.mode}); a colour fundus photograph is needed "
            "(set data.allow_grayscale to use it with its channel replicated)"
        )
    if image.mode not in _CONVERTIBLE:
        raise UnusableImage(f"unsupported pixel format (mode {image.mode}, e.g. 16-bit); 8-bit RGB is needed")
    return image


def choose_reduction(width: int, height: int, target_radius: float) -> int:
    """Largest JPEG reduction whose guessed fundus radius stays >= target_radius (px)."""
    guess = RADIUS_GUESS * min(width, height) / 2
    return next((k for k in REDUCTIONS if guess / k >= target_radius), 1)


def _decode_at(data: bytes, reduction: int, allow_grayscale: bool) -> np.ndarray:
    """uint8 RGB; a JPEG is decoded at (at least) 1/reduction of its size, other formats in full."""
    image = _open(data, allow_grayscale)
    if image.format == "JPEG" and reduction > 1:
        image.draft(image.mode, (image.width // reduction, image.height // reduction))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnusableImage(f"truncated or corrupt image data ({exc})") from None
    return np.asarray(image.convert("RGB"))


def decode_fundus(path: str | Path, target_radius: float, allow_grayscale: bool = False) -> Decoded:
    """Decode ``path`` at the largest reduction that keeps the fundus radius >= target_radius px.

    Grayscale files are unusable unless ``allow_grayscale`` (then the channel is replicated and
    the note says so).
    """
    return decode_fundus_bytes(read_bytes(path), target_radius, allow_grayscale)


def decode_fundus_bytes(data: bytes, target_radius: float, allow_grayscale: bool = False) -> Decoded:
    """:func:`decode_fundus` on a file's bytes."""
    header = _open(data, allow_grayscale)
    width, height = header.size
    if min(width, height) < MIN_SIDE_PX:
        raise UnusableImage(f"image too small ({width} x {height} px; at least {MIN_SIDE_PX} px a side)")
    reduction = choose_reduction(width, height, target_radius)
    while True:
        rgb = _decode_at(data, reduction, allow_grayscale)
        fov = estimate_field_of_view(rgb)
        if fov is None:
            raise UnusableImage("no fundus found (the image is black or blank)")
        if (aspect := field_aspect(rgb, fov)) < MIN_FIELD_ASPECT:
            raise UnusableImage(
                f"{NOT_A_FUNDUS}: its bright field is {aspect:.2f} times as high as wide "
                f"(a round field is about 1, a field cut at top and bottom above {MIN_FIELD_ASPECT})"
            )
        if fov.radius >= target_radius or reduction == 1:
            break
        reduction //= 2
    if reason := not_a_fundus(rgb, fov):
        raise UnusableImage(reason)
    return Decoded(
        rgb=rgb,
        fov=fov,
        reduction=round(width / rgb.shape[1]),
        width=width,
        height=height,
        sha1=hashlib.sha1(data).hexdigest(),
        note=_CONVERTIBLE[header.mode],
    )


def load_thumbnail(path: str | Path, max_side: int = 512) -> np.ndarray:
    """uint8 RGB (H, W, 3) of a whole photograph, at most ``max_side`` px wide/high (for figures)."""
    image = _open(read_bytes(path), allow_grayscale=True)
    image.draft(image.mode, (max_side, max_side))
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side))
    return np.asarray(image)
