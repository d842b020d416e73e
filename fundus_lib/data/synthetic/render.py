"""Rendering one eye: background, vessels, lesions, the camera, the spurious cue and the distractor
(``render_eye``; ``render_variants``: one eye with and without its patches, rendered once)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from fundus_lib.data.synthetic.anatomy import _Anatomy, _anatomy
from fundus_lib.data.synthetic.lesions import CUE_CODE, DISTRACTOR_CODE, _Lesion, _sample_lesions
from fundus_lib.data.synthetic.specs import EyeSpec

_SHIFT = 4  # cv2 drawing: sub-pixel coordinates with 4 fractional bits
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class _Frame:
    """Pixel geometry of one image before inversion: size, fundus centre and radius (px)."""

    width: int
    height: int
    cx: float
    cy: float
    radius: float
    mirror: float  # -1 for a left eye: the right-eye anatomy is mirrored in x

    @classmethod
    def of(cls, spec: EyeSpec, width: int) -> _Frame:
        height = round(2 * width / 3)
        radius = spec.field_scale * height / 2
        cx = (width - 1) / 2 + spec.offset_x * radius
        cy = (height - 1) / 2 + spec.offset_y * radius
        return cls(width, height, cx, cy, radius, -1.0 if spec.side == "left" else 1.0)

    def reduced(self, radius_px: float) -> _Frame:
        """The same scene in an image scaled so the radius is at most ``radius_px`` (pixel centres
        aligned as cv2.resize aligns them)."""
        scale = min(1.0, radius_px / self.radius)
        width, height = max(2, round(self.width * scale)), max(2, round(self.height * scale))
        sx, sy = width / self.width, height / self.height
        cx, cy = (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5
        return _Frame(width, height, cx, cy, self.radius * sx, self.mirror)

    def px(self, x: float, y: float) -> tuple[int, int]:
        """Fixed-point pixel coordinates (for cv2 with shift) of a point in units of R."""
        return round((self.cx + x * self.radius) * _ONE), round((self.cy + y * self.radius) * _ONE)

    def grid(self, x: float, y: float, extent: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        """The image window covering a square of half-side ``extent`` (R) around (x, y), and its
        coordinates in units of R: (rows, cols) slices, xs (1, w), ys (h, 1) float32."""
        x0 = min(self.width, max(0, int(self.cx + (x - extent) * self.radius)))
        x1 = max(x0, min(self.width, int(self.cx + (x + extent) * self.radius) + 2))
        y0 = min(self.height, max(0, int(self.cy + (y - extent) * self.radius)))
        y1 = max(y0, min(self.height, int(self.cy + (y + extent) * self.radius) + 2))
        xs = ((np.arange(x0, x1, dtype=np.float32) - self.cx) / self.radius)[None, :]
        ys = ((np.arange(y0, y1, dtype=np.float32) - self.cy) / self.radius)[:, None]
        return (slice(y0, y1), slice(x0, x1)), xs, ys


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur with sigma in px; no-op below 0.3 px. Wide blurs (sigma >= 8 px) run on an
    image reduced by sigma / 4 and are upscaled again (the result has no fine detail to lose)."""
    if sigma_px < 0.3:
        return image
    factor = int(sigma_px / 4)
    if factor < 2:
        return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma_px, borderType=cv2.BORDER_REFLECT)
    height, width = image.shape[:2]
    reduced_size = (max(1, width // factor), max(1, height // factor))
    small = cv2.resize(image, reduced_size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma_px / factor, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _smooth_noise(rng: np.random.Generator, frame: _Frame, cells_per_r: float) -> np.ndarray:
    """Zero-mean smooth random field (H, W) float32, std ~1, with ~``cells_per_r`` cells per R."""
    shape = (
        max(2, math.ceil(cells_per_r * frame.height / frame.radius)),
        max(2, math.ceil(cells_per_r * frame.width / frame.radius)),
    )
    grid = rng.standard_normal(shape, dtype=np.float32)
    return cv2.resize(grid, (frame.width, frame.height), interpolation=cv2.INTER_CUBIC)


#: The smooth background is rendered with the fundus radius at most this many px, then upscaled.
_BACKGROUND_RADIUS_PX = 96


def _background(spec: EyeSpec, frame: _Frame, anatomy: _Anatomy) -> np.ndarray:
    """The retina without vessels or lesions: RGB float32 (H, W, 3), ~0-1.

    Orange-red base colour, radial darkening, low-frequency illumination and choroidal texture,
    an occasional glare patch near the rim, the darker macula and the bright optic disc. Smooth, so
    it is rendered small (``_BACKGROUND_RADIUS_PX``) and upscaled bilinearly.
    """
    rng = np.random.default_rng([spec.seed, 2])
    small = frame.reduced(_BACKGROUND_RADIUS_PX)
    xs = ((np.arange(small.width, dtype=np.float32) - small.cx) / small.radius)[None, :]
    ys = ((np.arange(small.height, dtype=np.float32) - small.cy) / small.radius)[:, None]
    r2 = np.minimum(xs * xs + ys * ys, 1.2)
    texture = 1 + 0.12 * _smooth_noise(rng, small, 1.5) + 0.035 * _smooth_noise(rng, small, 12)
    light = (1 - anatomy.vignette * r2 * np.sqrt(r2)) * texture
    rgb = light[..., None] * np.asarray(anatomy.colour, dtype=np.float32)
    if rng.random() < 0.3:
        angle = rng.uniform(0, 2 * math.pi)
        gx, gy = 0.85 * math.cos(angle), 0.85 * math.sin(angle)
        glare = rng.uniform(0.06, 0.16) * np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * 0.25**2))
        rgb += glare[..., None] * np.float32([0.9, 0.9, 1.0])
    _draw_blobs(rgb, small, rng)
    _draw_macula(rgb, small, anatomy)
    _draw_disc(rgb, small, anatomy, rng)
    if small.width == frame.width:
        return rgb
    return cv2.resize(rgb, (frame.width, frame.height), interpolation=cv2.INTER_LINEAR)


def _random_points(rng: np.random.Generator, count: int, radius: float = 0.9) -> np.ndarray:
    """``count`` points uniform over the disc of ``radius`` (units of R): (count, 2)."""
    r = radius * np.sqrt(rng.random(count))
    angle = rng.uniform(0, 2 * math.pi, count)
    return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)


def _gaussian_spots(rng: np.random.Generator, frame: _Frame, mean_count: float, sigmas: tuple, strengths: tuple):
    """Yield (window, alpha (h, w, 1) float32) of a Poisson number of Gaussian spots placed uniformly
    in the field, sigma and peak alpha uniform in the given ranges (sigma in units of R)."""
    count = rng.poisson(mean_count)
    for (x, y), sigma, strength in zip(
        _random_points(rng, count), rng.uniform(*sigmas, count), rng.uniform(*strengths, count)
    ):
        window, xs, ys = frame.grid(x, y, 3 * sigma)
        yield window, strength * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))[..., None]


def _draw_blobs(rgb: np.ndarray, frame: _Frame, rng: np.random.Generator) -> None:
    """Soft distractors that are not lesions (in place): grey shadows of dust on the optics and
    small whitish nerve-fibre reflexes."""
    for window, alpha in _gaussian_spots(rng, frame, 1.2, (0.015, 0.04), (0.1, 0.25)):
        rgb[window] *= 1 - alpha
    for window, alpha in _gaussian_spots(rng, frame, 1.0, (0.008, 0.02), (0.1, 0.25)):
        rgb[window] += alpha * (np.float32([0.95, 0.95, 0.9]) - rgb[window])


def _draw_macula(rgb: np.ndarray, frame: _Frame, anatomy: _Anatomy) -> None:
    """Darken (in place) a broad macula and a small foveal pit, browner than the retina."""
    fx, fy = frame.mirror * anatomy.fovea[0], anatomy.fovea[1]
    window, xs, ys = frame.grid(fx, fy, 0.5)
    d2 = (xs - fx) ** 2 + (ys - fy) ** 2
    dark = 0.35 * np.exp(-d2 / (2 * 0.13**2)) + 0.25 * np.exp(-d2 / (2 * 0.035**2))
    rgb[window] *= 1 - dark[..., None] * np.float32([0.6, 1.0, 1.0])


def _draw_disc(rgb: np.ndarray, frame: _Frame, anatomy: _Anatomy, rng: np.random.Generator) -> None:
    """Blend (in place) a bright yellowish, slightly tall optic disc with a paler cup and a glow."""
    dx, dy = frame.mirror * anatomy.disc[0], anatomy.disc[1]
    a, b = anatomy.disc_radius, anatomy.disc_radius * anatomy.disc_aspect
    window, xs, ys = frame.grid(dx, dy, 3 * b)
    dist = np.sqrt(((xs - dx) / a) ** 2 + ((ys - dy) / b) ** 2)
    glow = 0.3 * np.exp(-(np.maximum(dist - 1, 0) ** 2) / (2 * 0.45**2))
    alpha = np.maximum(np.clip((1.08 - dist) / 0.2, 0, 1) ** 1.5, glow)
    cup_x = dx - frame.mirror * a * rng.uniform(0.1, 0.3)
    cup = np.clip((rng.uniform(0.4, 0.6) - np.hypot(xs - cup_x, ys - dy) / a) / 0.25, 0, 1)
    colour = np.float32([1.0, 0.82, 0.5]) + cup[..., None] * np.float32([0.0, 0.13, 0.3])
    region = rgb[window]
    rgb[window] = region + alpha[..., None] * (colour - region)


def _polyline_groups(lines, frame: _Frame) -> dict[tuple[int, float], list[np.ndarray]]:
    """Group lines (points (n, 2) and widths (n,), units of R, image frame) into runs of equal
    pixel thickness and intensity for cv2.polylines: {(thickness px, intensity 0-1): [int32 (k, 2)]}.
    Sub-pixel widths are drawn 1 px wide with proportionally lower intensity (quarters)."""
    groups: dict[tuple[int, float], list[np.ndarray]] = {}
    for points, widths in lines:
        px = np.round((points * frame.radius + [frame.cx, frame.cy]) * _ONE).astype(np.int32)
        wpx = widths * frame.radius
        thickness = np.maximum(1, np.round(wpx)).astype(int)
        quarters = np.round(np.minimum(1.0, wpx) * 4).astype(int)
        key = thickness * 8 + quarters
        cuts = np.flatnonzero(np.diff(key)) + 1
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(key)]):
            if quarters[start] > 0:
                run = px[start : min(stop + 1, len(px))]
                groups.setdefault((int(thickness[start]), quarters[start] / 4), []).append(run)
    return groups


def _draw_lines(canvas: np.ndarray, lines, frame: _Frame, colour: tuple, anti_alias: bool = True) -> None:
    """Draw lines (see _polyline_groups) on a uint8 canvas: anti-aliased in ``colour`` (one value
    per channel) times the width's intensity, or as a hard mask in ``colour``."""
    for (thickness, intensity), runs in _polyline_groups(lines, frame).items():
        if anti_alias:
            shade = tuple(round(value * intensity) for value in colour)
            cv2.polylines(canvas, runs, False, shade, thickness, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(canvas, runs, False, colour, thickness, cv2.LINE_8, _SHIFT)


def _draw_shape(canvas: np.ndarray, shape: tuple, frame: _Frame, size: float, colour: tuple, anti_alias: bool) -> None:
    """Draw one lesion shape (see _Lesion), its sizes scaled by ``size``, onto a uint8 canvas."""
    if shape[0] == "line":
        _, points, width = shape
        _draw_lines(canvas, [(points, np.full(len(points), width * size))], frame, colour, anti_alias)
        return
    line_type = cv2.LINE_AA if anti_alias else cv2.LINE_8
    centre = frame.px(shape[1], shape[2])
    if shape[0] == "circle":
        radius = round(shape[3] * size * frame.radius * _ONE)
        cv2.circle(canvas, centre, radius, colour, -1, line_type, _SHIFT)
    else:
        axes = (round(shape[3] * size * frame.radius * _ONE), round(shape[4] * size * frame.radius * _ONE))
        cv2.ellipse(canvas, centre, axes, shape[5], 0, 360, colour, -1, line_type, _SHIFT)


#: Per-channel absorption (share of light removed at full strength) of vessels, dark lesions and
#: pigment speckles (brown, not lesions: distractors that look like microaneurysms).
_PIGMENT_ABSORPTION = (0.45, 0.55, 0.55)
_VEIN_ABSORPTION = (0.38, 0.62, 0.58)
_ARTERY_ABSORPTION = (0.2, 0.42, 0.38)
_LESION_ABSORPTION = {1: (0.55, 0.9, 0.85), 2: (0.6, 0.92, 0.88), 5: (0.45, 0.85, 0.8)}
#: Bright lesions: (softness, blur sigma in units of R; the RGB colour they blend towards).
_LESION_TINT = {3: (0.003, (1.0, 0.92, 0.45)), 4: (0.018, (0.95, 0.92, 0.82))}
#: Uint8 absorption canvas value -> transmitted share of light.
_TRANSMISSION = 1 - np.arange(256, dtype=np.float32) / 255


def _draw_absorbers(
    rgb: np.ndarray,
    spec: EyeSpec,
    frame: _Frame,
    anatomy: _Anatomy,
    lesions: list[_Lesion],
    contrast: float,
    size: float,
) -> None:
    """Darken ``rgb`` (in place) under pigment speckles, along the vessels (veins darker and wider
    than arteries) and under the dark lesions (microaneurysms, haemorrhages, neovascularisation),
    all drawn anti-aliased on one (H, W, 3) absorption canvas that is slightly blurred."""
    canvas = np.zeros((frame.height, frame.width, 3), np.uint8)
    rng = np.random.default_rng([spec.seed, 4])
    count = rng.poisson(2.5)
    for (x, y), radius, strength in zip(
        _random_points(rng, count), rng.uniform(0.012, 0.022, count), rng.uniform(0.2, 0.5, count)
    ):
        colour = tuple(255 * strength * a for a in _PIGMENT_ABSORPTION)
        _draw_shape(canvas, ("circle", x, y, radius), frame, 1.0, colour, anti_alias=True)
    for vein, absorption in ((False, _ARTERY_ABSORPTION), (True, _VEIN_ABSORPTION)):
        lines = [(v.points * [frame.mirror, 1.0], v.widths) for v in anatomy.vessels if v.vein == vein]
        _draw_lines(canvas, lines, frame, tuple(255 * a for a in absorption))
    for lesion in lesions:
        if lesion.code in _LESION_ABSORPTION:
            strength = min(1.0, lesion.strength * contrast)
            colour = tuple(255 * strength * a for a in _LESION_ABSORPTION[lesion.code])
            for shape in lesion.shapes:
                _draw_shape(canvas, shape, frame, size, colour, anti_alias=True)
    rgb *= _TRANSMISSION[_blur(canvas, 0.004 * frame.radius)]


def _draw_tints(rgb: np.ndarray, frame: _Frame, lesions: list[_Lesion], contrast: float, size: float) -> None:
    """Blend ``rgb`` (in place) towards the colour of the bright lesions (exudates, cotton-wool spots)."""
    for code, (softness, colour) in _LESION_TINT.items():
        of_code = [lesion for lesion in lesions if lesion.code == code]
        if not of_code:
            continue
        canvas = np.zeros((frame.height, frame.width), np.uint8)
        for lesion in of_code:
            value = round(255 * min(1.0, lesion.strength * contrast))
            for shape in lesion.shapes:
                _draw_shape(canvas, shape, frame, size, value, anti_alias=True)
        alpha = _blur(canvas, softness * frame.radius)[..., None] * np.float32(1 / 255)
        rgb += alpha * (np.float32(colour) - rgb)


def _lesion_mask(frame: _Frame, lesions: list[_Lesion], size: float) -> np.ndarray:
    """The lesion mask: uint8 (H, W) of codes 0-5, the hard (not anti-aliased) lesion shapes,
    higher codes drawn over lower ones."""
    mask = np.zeros((frame.height, frame.width), np.uint8)
    for lesion in sorted(lesions, key=lambda lesion: lesion.code):
        for shape in lesion.shapes:
            _draw_shape(mask, shape, frame, size, lesion.code, anti_alias=False)
    return mask


def _camera_lut(spec: EyeSpec) -> np.ndarray:
    """float32 (3 * 4096,) table from a channel's quantised scene value (index c * 4096 + v,
    scene = v / 2048, i.e. 0-2) to its grey level 0-255: exposure gain and colour cast, contrast
    around 0.35, clipping to 0-1 and gamma."""
    scene = np.arange(4096, dtype=np.float64) / 2048
    gains = spec.brightness * np.array([spec.cast_r, spec.cast_g, spec.cast_b])
    levels = np.clip((scene[None, :] * gains[:, None] - 0.35) * spec.contrast + 0.35, 0, 1)
    return (255 * levels**spec.gamma).astype(np.float32).ravel()


def _acquire(rgb: np.ndarray, spec: EyeSpec, frame: _Frame) -> np.ndarray:
    """The camera: defocus, exposure, colour cast, contrast, gamma, the circular field of view
    (anti-aliased edge) and sensor noise. float32 (H, W, 3) scene -> RGB uint8 (H, W, 3), black
    (plus noise) outside the field."""
    rgb = _blur(rgb, spec.blur * frame.radius)
    index = cv2.add(rgb * np.float32(2048), 0.0, dtype=cv2.CV_16U)  # rounds, saturates at 0
    np.minimum(index, 4095, out=index)
    index += np.array([0, 4096, 8192], dtype=np.uint16)
    out = _camera_lut(spec)[index]
    field = np.zeros((frame.height, frame.width), np.uint8)
    cv2.circle(field, frame.px(0, 0), round(frame.radius * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
    rng = np.random.default_rng([spec.seed, 3])
    noise = rng.standard_normal((frame.height, frame.width), dtype=np.float32) * np.float32(spec.noise)
    out *= field[..., None] * np.float32(1 / 255)
    out += noise[..., None]
    return cv2.add(out, 0.0, dtype=cv2.CV_8U)  # rounds and saturates to 0-255


#: The spurious cue and the distractor: two patches PATCH_SIZE R across, amplitude PATCH_AMPLITUDE
#: grey levels around the image, centred 0.6 R from the fundus centre (in the final image, whatever
#: the side or inversion): the cue a checkerboard towards the lower left, the distractor horizontal
#: stripes towards the upper right, both with cells of R / 16 (about 4 px at 128 px, so that the
#: JPEG and the cache's resizing keep them). Equally salient, different in texture: a network that
#: uses the cue's texture has no reason to answer the stripes.
CUE_OFFSET = (-0.6 / math.sqrt(2), 0.6 / math.sqrt(2))
DISTRACTOR_OFFSET = (0.6 / math.sqrt(2), -0.6 / math.sqrt(2))
PATCH_SIZE = 0.2
PATCH_AMPLITUDE = 32
PATCH_CELL = 1 / 16


def _draw_patch(
    image: np.ndarray,
    mask: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    offset: tuple[float, float],
    code: int,
) -> None:
    """Add a patch (in place) at ``offset`` R from the fundus centre px and ``code`` to the mask:
    the checkerboard for the cue's code, stripes for the distractor's."""
    half = PATCH_SIZE / 2 * radius
    x0, y0 = centre[0] + offset[0] * radius - half, centre[1] + offset[1] * radius - half
    cols = np.arange(math.ceil(x0), math.floor(x0 + 2 * half) + 1)
    rows = np.arange(math.ceil(y0), math.floor(y0 + 2 * half) + 1)
    cell = PATCH_CELL * radius
    row_cells = np.floor((rows - y0) / cell)[:, None]
    col_cells = np.floor((cols - x0) / cell)[None, :] if code == CUE_CODE else np.zeros((1, len(cols)))
    sign = ((row_cells + col_cells) % 2) * 2 - 1
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    image[window] = np.clip(image[window] + PATCH_AMPLITUDE * sign[..., None], 0, 255).astype(np.uint8)
    mask[window] = code


def _render_unpatched(spec: EyeSpec, width: int, difficulty: float) -> tuple[np.ndarray, np.ndarray, tuple, float]:
    """The eye without the cue and the distractor: image, mask, the fundus centre (px, inversion
    applied) and radius (px), where ``_draw_patch`` places the patches."""
    frame = _Frame.of(spec, width)
    anatomy = _anatomy(spec.anatomy_seed)
    lesions = _sample_lesions(spec)
    size, contrast = difficulty**-0.5, 1 / difficulty
    rgb = _background(spec, frame, anatomy)
    _draw_absorbers(rgb, spec, frame, anatomy, lesions, contrast, size)
    _draw_tints(rgb, frame, lesions, contrast, size)
    image = _acquire(rgb, spec, frame)
    mask = _lesion_mask(frame, lesions, size)
    cx, cy = frame.cx, frame.cy
    if spec.inverted:
        image, mask = np.ascontiguousarray(image[::-1, ::-1]), np.ascontiguousarray(mask[::-1, ::-1])
        cx, cy = frame.width - 1 - cx, frame.height - 1 - cy
    return image, mask, (cx, cy), frame.radius


def render_variants(specs: Sequence[EyeSpec], width: int, difficulty: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """``render_eye`` of each spec, for specs of one eye that differ at most in ``cue`` and
    ``distractor`` (the patches are drawn last, on the finished image): the eye is rendered once
    and each spec gets its own patches, bit-identical to rendering it alone. ValueError for specs
    of different eyes."""
    unpatched = [replace(spec, cue=False, distractor=False) for spec in specs]
    if any(other != unpatched[0] for other in unpatched[1:]):
        raise ValueError("render_variants: the specs differ in more than the cue and the distractor")
    image, mask, centre, radius = _render_unpatched(unpatched[0], width, difficulty)
    out = []
    for spec in specs:
        patched, patched_mask = image.copy(), mask.copy()
        if spec.cue:
            _draw_patch(patched, patched_mask, centre, radius, CUE_OFFSET, CUE_CODE)
        if spec.distractor:
            _draw_patch(patched, patched_mask, centre, radius, DISTRACTOR_OFFSET, DISTRACTOR_CODE)
        out.append((patched, patched_mask))
    return out


def render_eye(spec: EyeSpec, width: int, difficulty: float) -> tuple[np.ndarray, np.ndarray]:
    """Render one eye: RGB uint8 (H, W, 3) with H = round(2/3 W), and its lesion mask uint8 (H, W)
    holding LESION_CODES values (0 = none), in the same geometry (inversion applied to both).

    Difficulty d scales lesion sizes by d^-0.5 and lesion contrast by 1/d. A pure function of its
    arguments: the same inputs give bit-identical outputs.
    """
    return render_variants([spec], width, difficulty)[0]
