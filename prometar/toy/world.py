"""The toy world: procedurally rendered coloured shapes and their captions.

CLIP weights and the real benchmark datasets are not available everywhere, and a randomly
initialised CLIP makes every accuracy meaningless. The toy world gives the pipeline something real
to learn from on a CPU in minutes: a **pretraining distribution** of 32-pixel images of one
coloured shape (8 colours × 8 shapes × 2 sizes × 5 positions, small rotation and colour jitter,
mild noise) with captions that always name the colour and the shape. 16 colour × shape
combinations are held out of it entirely, to measure compositional zero-shot transfer of the toy
CLIP (``prometar/toy/clip.py``). A ``Style`` also describes the downstream datasets' shifts
(``prometar/toy/datasets.py``).

Rendering is deterministic: the same seed gives the same pixels and captions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond", "ring", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 225),
    "yellow": (235, 220, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "cyan": (40, 210, 220),
    "pink": (245, 140, 190),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: dict[str, str] = {  # position -> caption phrase
    "center": "in the center",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}

# Held out of pretraining: each colour and each shape appears in exactly two held-out pairs.
HELD_OUT_COMBINATIONS: tuple[tuple[str, str], ...] = tuple(
    (COLOUR_NAMES[i], SHAPES[(i + offset) % len(SHAPES)])
    for offset in (0, 3)
    for i in range(len(COLOUR_NAMES))
)
SEEN_COMBINATIONS: tuple[tuple[str, str], ...] = tuple(
    (c, s) for c in COLOUR_NAMES for s in SHAPES if (c, s) not in set(HELD_OUT_COMBINATIONS)
)
ALL_COMBINATIONS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOUR_NAMES for s in SHAPES)

# Caption templates: every one names the colour and the shape ({c} {s}); some add size and position.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} {s}.",
    "a {c} {s}.",
    "a photo of a {z} {c} {s}.",
    "a {z} {c} {s} {p}.",
    "a photo of a {c} {s} {p}.",
    "a photo of a {z} {c} {s} {p}.",
    "a rendering of a {c} {s}.",
    "a drawing of the {c} {s}.",
    "a picture of one {z} {c} {s}.",
    "there is a {c} {s} {p}.",
)

RENDER_SCALE = 2  # shapes are drawn at 2x and downsampled (cheap anti-aliasing)
WORLD_VERSION = 4  # bump when rendering or the toy datasets change, so cached builds are rebuilt


@dataclass(frozen=True)
class Style:
    """How a set of images is rendered (the pretraining look, or a downstream style shift).

    Attributes:
        name: Short name used in reports.
        systematic: True if the shift is the same for every image (a prompt can learn to undo it).
        background: ``grey`` (plain, jittered grey), ``random`` (one random colour per image) or
            ``gradient`` (a random two-colour gradient per image).
        fill: ``solid``, ``outline`` (only the contour is drawn) or ``stripes`` (colour and white).
        rotation_deg: Maximum absolute rotation of the shape, in degrees.
        squash: Maximum fraction by which one axis of the shape is shrunk (viewpoint change).
        scale: Range of a multiplier on the shape's radius.
        clutter: Number of distractors (grey shapes and coloured lines) drawn behind the object.
        occluders: Number of thick lines of random colours drawn over the object.
        blur: Gaussian blur radius in output pixels.
        motion_blur: Length in output pixels of a horizontal box blur (0 = none; 3 or 5).
        noise: Standard deviation of additive Gaussian pixel noise (0..255 scale).
        colour_jitter: Maximum per-channel jitter of the object's colour.
        colour_cast: Added to every pixel (r, g, b) after drawing.
        contrast: Pixel values are pulled towards 128 by this factor (1 = unchanged).
    """

    name: str
    systematic: bool = True
    background: Literal["grey", "random", "gradient"] = "grey"
    fill: Literal["solid", "outline", "stripes"] = "solid"
    rotation_deg: float = 15.0
    squash: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    clutter: int = 0
    occluders: int = 0
    blur: float = 0.0
    motion_blur: int = 0
    noise: float = 6.0
    colour_jitter: float = 20.0
    colour_cast: tuple[float, float, float] = (0.0, 0.0, 0.0)
    contrast: float = 1.0


PRETRAINING_STYLE = Style(name="pretraining")


@dataclass(frozen=True)
class Scene:
    """What one image shows."""

    colour: str
    shape: str
    size: str
    position: str


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _unit_outline(shape: str) -> list[np.ndarray]:
    """Polygons of a shape of radius 1 centred on the origin; a second polygon is a hole."""
    if shape in ("circle", "ring"):
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        outer = np.stack([np.cos(t), np.sin(t)], axis=1)  # [32, 2]
        return [outer, 0.58 * outer] if shape == "ring" else [outer]
    if shape == "square":
        t = np.deg2rad(45 + 90 * np.arange(4))
        return [0.9 * np.stack([np.cos(t), np.sin(t)], axis=1)]
    if shape == "diamond":
        t = np.deg2rad(90 * np.arange(4))
        return [np.stack([0.62 * np.cos(t), 1.05 * np.sin(t)], axis=1)]
    if shape == "triangle":
        t = np.deg2rad(-90 + 120 * np.arange(3))
        return [1.1 * np.stack([np.cos(t), np.sin(t)], axis=1)]
    if shape == "star":
        t = np.deg2rad(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.1, 0.45)
        return [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)]
    if shape == "cross":
        a, b = 0.32, 0.95
        pts = [
            (-a, -b),
            (a, -b),
            (a, -a),
            (b, -a),
            (b, a),
            (a, a),
            (a, b),
            (-a, b),
            (-a, a),
            (-b, a),
            (-b, -a),
            (-a, -a),
        ]
        return [np.array(pts, dtype=np.float64)]
    if shape == "heart":
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return [np.stack([x, -y - 2.5], axis=1) / 16.0]
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


_OUTLINES: dict[str, list[np.ndarray]] = {s: _unit_outline(s) for s in SHAPES}


def _transform(
    poly: np.ndarray, cx: float, cy: float, radius: float, angle: float, sx: float, sy: float
) -> list[tuple[float, float]]:
    """Scale, rotate and translate a unit polygon into canvas coordinates."""
    p = poly * np.array([sx, sy]) * radius  # [P, 2]
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    p = p @ rot.T + np.array([cx, cy])  # [P, 2]
    return [tuple(xy) for xy in p.tolist()]


def _draw_mask(
    canvas_size: int,
    shape: str,
    cx: float,
    cy: float,
    radius: float,
    angle: float,
    sx: float,
    sy: float,
    outline_width: int = 0,
) -> Image.Image:
    """A binary 'L' mask of one shape (filled, or only its contour if outline_width > 0)."""
    mask = Image.new("L", (canvas_size, canvas_size), 0)
    draw = ImageDraw.Draw(mask)
    polys = [_transform(p, cx, cy, radius, angle, sx, sy) for p in _OUTLINES[shape]]
    if outline_width > 0:
        for poly in polys:
            draw.polygon(poly, outline=255, width=outline_width)
    else:
        draw.polygon(polys[0], fill=255)
        for hole in polys[1:]:
            draw.polygon(hole, fill=0)
    return mask


def _background(rng: np.random.Generator, style: Style, n: int) -> Image.Image:
    if style.background == "grey":
        g = int(rng.integers(110, 150))
        return Image.new("RGB", (n, n), (g, g, g))
    if style.background == "random":
        return Image.new("RGB", (n, n), tuple(int(v) for v in rng.integers(0, 256, 3)))
    if style.background == "gradient":
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
        t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]  # [n, 1]
        row = a[None, :] * (1 - t) + b[None, :] * t  # [n, 3]
        img = np.repeat(row[:, None, :], n, axis=1)  # [n, n, 3]
        if rng.random() < 0.5:
            img = img.transpose(1, 0, 2)
        return Image.fromarray(img.astype(np.uint8), "RGB")
    raise ValueError(f"unknown background {style.background!r}")


def _draw_clutter(img: Image.Image, rng: np.random.Generator, style: Style, n: int) -> None:
    draw = ImageDraw.Draw(img)
    for k in range(style.clutter):
        if k % 2 == 0:  # a desaturated distractor shape
            g = int(rng.integers(60, 200))
            tint = rng.integers(-25, 26, 3)
            colour = tuple(int(np.clip(g + t, 0, 255)) for t in tint)
            mask = _draw_mask(
                n,
                SHAPES[int(rng.integers(len(SHAPES)))],
                float(rng.uniform(0, n)),
                float(rng.uniform(0, n)),
                float(rng.uniform(0.08, 0.16) * n),
                float(rng.uniform(0, 2 * math.pi)),
                1.0,
                1.0,
            )
            img.paste(colour, mask=mask)
        else:  # a thin line of a random colour
            x0, y0, x1, y1 = rng.uniform(0, n, 4).tolist()
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=max(1, n // 40))


def render(scene: Scene, style: Style, rng: np.random.Generator, image_size: int = 32) -> np.ndarray:
    """Render one scene.

    Args:
        scene: Colour, shape, size and position of the object.
        style: How to draw it.
        rng: Source of every random choice (jitter, rotation, noise); consumed in a fixed order.
        image_size: Output side in pixels.

    Returns:
        uint8 array [image_size, image_size, 3].
    """
    n = image_size * RENDER_SCALE
    img = _background(rng, style, n)
    if style.clutter:
        _draw_clutter(img, rng, style, n)

    radius = (0.17 if scene.size == "small" else 0.29) * n * float(rng.uniform(*style.scale))
    offsets = {
        "center": (0.0, 0.0),
        "left": (-0.24, 0.0),
        "right": (0.24, 0.0),
        "top": (0.0, -0.24),
        "bottom": (0.0, 0.24),
    }
    dx, dy = offsets[scene.position]
    cx = n * (0.5 + dx) + float(rng.uniform(-0.05, 0.05)) * n
    cy = n * (0.5 + dy) + float(rng.uniform(-0.05, 0.05)) * n
    angle = math.radians(float(rng.uniform(-style.rotation_deg, style.rotation_deg)))
    squash = 1.0 - float(rng.uniform(0.0, style.squash))
    sx, sy = (squash, 1.0) if rng.random() < 0.5 else (1.0, squash)
    base = np.array(COLOURS[scene.colour], dtype=np.float64)
    colour = np.clip(base + rng.uniform(-style.colour_jitter, style.colour_jitter, 3), 0, 255)
    colour_t = tuple(int(v) for v in colour)

    outline_width = max(2, n // 16) if style.fill == "outline" else 0
    mask = _draw_mask(n, scene.shape, cx, cy, radius, angle, sx, sy, outline_width)
    if style.fill == "stripes":
        period = max(4, n // 8)
        yy, xx = np.mgrid[0:n, 0:n]
        on = ((xx + yy) // (period // 2)) % 2 == 0  # [n, n]
        layer = np.where(on[..., None], colour[None, None, :], 245.0).astype(np.uint8)  # [n, n, 3]
        img.paste(Image.fromarray(layer, "RGB"), mask=mask)
    else:
        img.paste(colour_t, mask=mask)
    if style.occluders:
        draw = ImageDraw.Draw(img)
        for _ in range(style.occluders):
            x0, y0, x1, y1 = (cx, cy, cx, cy) + rng.uniform(-0.45, 0.45, 4) * n
            draw.line(
                [(x0, y0), (x1, y1)],
                fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                width=max(2, n // 14),
            )

    img = img.reduce(RENDER_SCALE)
    if style.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(style.blur))
    if style.motion_blur > 1:
        k = 3 if style.motion_blur <= 3 else 5  # PIL kernels are 3x3 or 5x5
        img = img.filter(ImageFilter.Kernel((k, k), _motion_kernel(k)))
    out = np.asarray(img, dtype=np.float32)  # [H, W, 3]
    if style.contrast != 1.0:
        out = 128.0 + (out - 128.0) * style.contrast
    if any(style.colour_cast):
        out = out + np.asarray(style.colour_cast, dtype=np.float32)
    if style.noise > 0:
        out = out + rng.normal(0.0, style.noise, out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _motion_kernel(k: int) -> list[float]:
    """A horizontal box blur of length k as a k×k PIL kernel (rows of zeros except the middle)."""
    kernel = [0.0] * (k * k)
    for i in range(k):
        kernel[(k // 2) * k + i] = 1.0 / k
    return kernel


def sample_scene(rng: np.random.Generator, combinations: Sequence[tuple[str, str]]) -> Scene:
    """Draw a scene uniformly: a (colour, shape) pair from ``combinations``, a size and a position."""
    colour, shape = combinations[int(rng.integers(len(combinations)))]
    size = SIZES[int(rng.integers(len(SIZES)))]
    position = tuple(POSITIONS)[int(rng.integers(len(POSITIONS)))]
    return Scene(colour, shape, size, position)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption that always names the colour and the shape (sometimes also size and position)."""
    template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    return template.format(c=scene.colour, s=scene.shape, z=scene.size, p=POSITIONS[scene.position])


@dataclass(frozen=True)
class RenderedSet:
    """Images with their captions and (colour, shape) labels.

    Attributes:
        images: uint8 [N, H, W, 3].
        captions: N captions.
        colours: int64 [N], indices into ``COLOUR_NAMES``.
        shapes: int64 [N], indices into ``SHAPES``.
    """

    images: np.ndarray
    captions: list[str]
    colours: np.ndarray
    shapes: np.ndarray

    @property
    def combination_index(self) -> np.ndarray:
        """int64 [N], index into ``ALL_COMBINATIONS`` (colour-major)."""
        return self.colours * len(SHAPES) + self.shapes


def render_set(
    n: int,
    seed: int,
    combinations: Sequence[tuple[str, str]] = SEEN_COMBINATIONS,
    style: Style = PRETRAINING_STYLE,
    image_size: int = 32,
) -> RenderedSet:
    """Render ``n`` captioned images of the given combinations, deterministically from ``seed``.

    Args:
        n: Number of images.
        seed: Seed of the only random generator used.
        combinations: (colour, shape) pairs to draw from uniformly; the pretraining set uses
            ``SEEN_COMBINATIONS`` (held-out pairs never appear).
        style: Rendering style.
        image_size: Output side in pixels.

    Returns:
        The rendered set.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    captions: list[str] = []
    colours = np.empty(n, dtype=np.int64)
    shapes = np.empty(n, dtype=np.int64)
    for i in range(n):
        scene = sample_scene(rng, combinations)
        images[i] = render(scene, style, rng, image_size)
        captions.append(caption(scene, rng))
        colours[i] = COLOUR_NAMES.index(scene.colour)
        shapes[i] = SHAPES.index(scene.shape)
    return RenderedSet(images, captions, colours, shapes)


def render_per_combination(
    combinations: Sequence[tuple[str, str]],
    per_combination: int,
    seed: int,
    style: Style = PRETRAINING_STYLE,
    image_size: int = 32,
) -> RenderedSet:
    """Render ``per_combination`` images of every pair (evaluation sets), sizes and positions random."""
    rng = np.random.default_rng(seed)
    total = len(combinations) * per_combination
    images = np.empty((total, image_size, image_size, 3), dtype=np.uint8)
    captions: list[str] = []
    colours = np.empty(total, dtype=np.int64)
    shapes = np.empty(total, dtype=np.int64)
    i = 0
    for colour, shape in combinations:
        for _ in range(per_combination):
            scene = sample_scene(rng, [(colour, shape)])
            images[i] = render(scene, style, rng, image_size)
            captions.append(caption(scene, rng))
            colours[i], shapes[i] = COLOUR_NAMES.index(colour), SHAPES.index(shape)
            i += 1
    return RenderedSet(images, captions, colours, shapes)
