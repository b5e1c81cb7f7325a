"""A broad procedural classification task: the tiny backbone's stand-in for ImageNet.

ImageNet is broad and was not made from VOC. This task is broad and not made from the
embedded benchmark (`icam.data.synthetic`): it shares none of its class definitions, shape
families or textures. A class is a shape family crossed with a texture family (12 × 4 = 48
classes). Like the objects of a photograph, each class has a typical hue (the golden angle
apart from class to class, ±18° per instance), so colour helps but never decides the class
alone: neighbouring hues belong to other shapes and textures. Saturation, brightness, size,
rotation, position, the background and the clutter on it are drawn at random for every crop.
(A first version drew every colour at random and taught the backbone to ignore colour: a
linear probe of its features separated the benchmark's classes worse than one of random
features.)

- Shapes: regular figures and glyphs (stars, cross, triangle, crescent, annulus, L, T,
  arrow, hexagon, heart, diamond), none of the benchmark's ellipses, blobs or
  irregular polygons.
- Textures: smooth shading, low-frequency value noise, fine speckle, radial shading; none of
  the benchmark's stripes, checkers, dots, rings, crosshatch or waves.
- Backgrounds: a two-colour low-frequency noise field with 0-3 clutter figures of other
  families drawn smaller, partly hidden behind the object or beside it.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("star5", "star8", "cross", "triangle", "crescent", "annulus", "ell", "tee", "arrow",
          "hexagon", "heart", "diamond")
TEXTURES = ("shading", "value_noise", "speckle", "radial")
NUM_CLASSES = len(SHAPES) * len(TEXTURES)
CROP = 64
HUE_SPREAD = 0.05
"""An object's hue lies within ±0.05 turns (18°) of its class's typical hue (`class_hue`)."""


def _grid(size: int, angle: float, scale: float, centre: tuple[float, float]):
    """Rotated, scaled coordinates u, v in about [-1, 1] inside the figure's box."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = (x - centre[1]) / scale, (y - centre[0]) / scale
    c, s = np.cos(angle), np.sin(angle)
    return c * x + s * y, -s * x + c * y


def _star(u, v, points: int, inner: float):
    r, t = np.hypot(u, v), np.arctan2(v, u)
    phase = np.abs(((t * points / (2 * np.pi)) % 1) - 0.5) * 2  # 1 at tips, 0 between
    return r <= inner + (1 - inner) * phase


def _regular(u, v, sides: int):
    t = np.arctan2(v, u)
    sector = 2 * np.pi / sides
    local = (t % sector) - sector / 2
    return np.hypot(u, v) * np.cos(local) <= np.cos(sector / 2)


def shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of shape family `name` on the coordinates of `_grid`."""
    au, av = np.abs(u), np.abs(v)
    if name == "star5":
        return _star(u, v, 5, 0.45)
    if name == "star8":
        return _star(u, v, 8, 0.65)
    if name == "cross":
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if name == "triangle":
        return _regular(u, v, 3)
    if name == "crescent":
        return (np.hypot(u, v) <= 0.95) & (np.hypot(u - 0.45, v) > 0.75)
    if name == "annulus":
        return (np.hypot(u, v) <= 0.95) & (np.hypot(u, v) >= 0.55)
    if name == "ell":
        return ((u >= -0.9) & (u <= -0.4) & (av <= 0.9)) | ((v >= 0.4) & (v <= 0.9) & (au <= 0.9))
    if name == "tee":
        bar = (v >= -0.9) & (v <= -0.45) & (au <= 0.9)
        return bar | ((au <= 0.25) & (v >= -0.9) & (v <= 0.9))
    if name == "arrow":
        head = (u >= 0.1) & (u <= 0.95) & (av <= 1.0 - u)
        return ((u >= -0.95) & (u <= 0.15) & (av <= 0.25)) | head
    if name == "hexagon":
        return _regular(u, v, 6)
    if name == "heart":
        x, y = u * 1.25, -v * 1.25 + 0.25
        return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
    if name == "diamond":
        return au + av <= 0.95
    raise ValueError(f"unknown shape family {name!r}")


def _value_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [0, 1]: a random cells×cells grid, bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    pos = np.linspace(0, cells, size, dtype=np.float32)
    i = np.minimum(pos.astype(int), cells - 1)
    f = pos - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]


def texture(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An intensity field in [0, 1] of texture family `name`."""
    size = u.shape[0]
    if name == "shading":
        return np.clip(0.5 + 0.35 * (u * np.cos(rng.uniform(0, 6.3)) + v * np.sin(1.0)), 0, 1)
    if name == "value_noise":
        return _value_noise(size, int(rng.integers(3, 6)), rng)
    if name == "speckle":
        return rng.random((size, size)).astype(np.float32)
    if name == "radial":
        return np.clip(1 - 0.8 * np.hypot(u, v), 0, 1)
    raise ValueError(f"unknown texture family {name!r}")


def class_hue(label: int) -> float:
    """A class's typical hue in turns: the golden angle apart from class to class."""
    return (label * 0.381966) % 1.0


def _colour(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    """An RGB colour in [0, 255], moderate to full saturation and value, of a random hue or
    within ±HUE_SPREAD turns of `hue`."""
    h = rng.random() if hue is None else (hue + rng.uniform(-HUE_SPREAD, HUE_SPREAD)) % 1.0
    s, v = rng.uniform(0.25, 1.0), rng.uniform(0.3, 1.0)
    k = (np.array([5, 3, 1]) + h * 6) % 6
    return 255 * v * (1 - s * np.clip(np.minimum(k, 4 - k), 0, 1))


def _paint(canvas: np.ndarray, mask: np.ndarray, field: np.ndarray, rng: np.random.Generator,
           contrast: float, hue: float | None = None) -> None:
    """Fill `mask` of `canvas` with a colour (see `_colour`) whose brightness `field`
    modulates by ±contrast."""
    pixels = _colour(rng, hue) * (1 + (field[..., None] - 0.5) * 2 * contrast)
    canvas[mask] = np.clip(pixels[mask], 0, 255)


def render_crop(label: int, rng: np.random.Generator, size: int = CROP) -> np.ndarray:
    """One size×size uint8 RGB crop of class `label` (shape SHAPES[label // 4], texture
    TEXTURES[label % 4])."""
    shape, tex = SHAPES[label // len(TEXTURES)], TEXTURES[label % len(TEXTURES)]
    canvas = np.empty((size, size, 3), np.float32)
    full = np.ones((size, size), bool)
    _paint(canvas, full, _value_noise(size, int(rng.integers(2, 5)), rng), rng, 0.8)
    others = [s for s in SHAPES if s != shape]
    for _ in range(int(rng.integers(0, 4))):  # clutter: other families, smaller
        u, v = _grid(size, rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.25) * size,
                     tuple(rng.uniform(0, size, 2)))
        _paint(canvas, shape_mask(str(rng.choice(others)), u, v),
               texture(str(rng.choice(TEXTURES)), u, v, rng), rng, 0.5)
    scale = rng.uniform(0.22, 0.48) * size
    centre = tuple(size / 2 + rng.uniform(-0.15, 0.15, 2) * size)
    u, v = _grid(size, rng.uniform(0, 2 * np.pi), scale, centre)
    _paint(canvas, shape_mask(shape, u, v), texture(tex, u, v, rng), rng, 0.6, class_hue(label))
    return canvas.round().astype(np.uint8)


def render_crops(count: int, stream: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` crops (N × CROP × CROP × 3 uint8) and their classes, balanced, from the
    random stream (stream, seed)."""
    rng = np.random.default_rng([stream, seed])
    labels = rng.permutation(np.arange(count) % NUM_CLASSES)
    crops = np.stack([render_crop(int(k), rng) for k in labels])
    return crops, labels
