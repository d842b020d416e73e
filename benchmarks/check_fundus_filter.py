"""The non-fundus check measured: what it rejects among real photographs and ordinary ones.

Decodes every photograph of the real folders under ``../shared/data`` (EyePACS mini, the EyePACS
sample, IDRiD grading, IDRiD lesions) as the cache builder does (at the radius of a ``--size``
cache; grayscale files allowed, so that every file reaches the test), then scikit-image's cat,
coffee, astronaut, rocket and Hubble deep field and matplotlib's Grace Hopper, each written as
a JPEG. Prints per folder the photographs accepted, those the non-fundus check rejects (none is
expected on real folders) and the other skips by reason, with the largest second-darkest corner
share of the accepted photographs (the check rejects above ``MAX_CORNER_SHARE``), then each
ordinary photograph's verdict.

    python benchmarks/check_fundus_filter.py [--shared ../shared/data] [--size 256]
"""

from __future__ import annotations

import argparse
import io
from collections import Counter
from pathlib import Path

import numpy as np
import skimage.data
from matplotlib import cbook
from PIL import Image
from tqdm import tqdm

from fundus_lib.data.decode import UnusableImage, decode_fundus_bytes
from fundus_lib.data.eyepacs import IMAGE_SUFFIXES
from fundus_lib.data.field_check import MAX_CORNER_SHARE, NOT_A_FUNDUS, corner_brightness

FOLDERS = ("eyepacs_mini", "fundus_real", "idrid_grading", "idrid_lesions")
DARK_BORDER = f"{NOT_A_FUNDUS}: no dark border"


def ordinary_photographs() -> dict[str, bytes]:
    """Ordinary (non-fundus) photographs as JPEG bytes."""
    arrays = {
        name: getattr(skimage.data, name)()
        for name in ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field")
    }
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as image:
        arrays["grace_hopper"] = np.asarray(image.convert("RGB"))
    encoded = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=90)
        encoded[name] = buffer.getvalue()
    return encoded


def verdict(data: bytes, size: int) -> tuple[str, float]:
    """("ok" or the skip reason, the second-darkest corner share; nan when decoding stopped earlier)."""
    try:
        decoded = decode_fundus_bytes(data, size / 2, allow_grayscale=True)
    except UnusableImage as exc:
        return str(exc), float("nan")
    return "ok", float(corner_brightness(decoded.rgb, decoded.fov)[1])


def check_folder(folder: Path, size: int) -> None:
    files = sorted(
        path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and "masks" not in path.parts
    )
    outcomes, shares = Counter(), []
    for path in tqdm(files, desc=folder.name, unit="img", mininterval=5):
        outcome, share = verdict(path.read_bytes(), size)
        outcomes[outcome] += 1
        shares.append(share)
    rejected = sum(count for outcome, count in outcomes.items() if outcome.startswith(DARK_BORDER))
    print(
        f"{folder.name}: {len(files):,} photographs, {outcomes['ok']:,} accepted, {rejected} rejected as not a "
        f"fundus; largest second-darkest corner share of the accepted {np.nanmax(shares):.3f}"
    )
    for outcome, count in outcomes.items():
        if outcome != "ok" and not outcome.startswith(DARK_BORDER):
            print(f"  {count} skipped: {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--size", type=int, default=256, help="cache size whose decode radius is used (px)")
    args = parser.parse_args()
    print(f"rejected when the second-darkest corner is above {MAX_CORNER_SHARE} of the field's brightness")
    for name in FOLDERS:
        if (args.shared / name).is_dir():
            check_folder(args.shared / name, args.size)
        else:
            print(f"{name}: not found under {args.shared}")
    for name, data in ordinary_photographs().items():
        outcome, share = verdict(data, args.size)
        print(
            f"{name}: {'accepted' if outcome == 'ok' else 'rejected'}"
            + (f" ({outcome})" if outcome != "ok" else f" (second-darkest corner share {share:.3f})")
        )


if __name__ == "__main__":
    main()
