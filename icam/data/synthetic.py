"""The embedded benchmark: a miniature of weakly-supervised segmentation, in the VOC layout.

Each object has a small discriminative part (a saturated "eye" of its class colour, a few % of
its area) on a larger body whose texture is exclusive to its class but subtle (a low-contrast
pattern on a muted colour that clutter also uses). Backgrounds are scenes that co-occur with
some classes (as water with boats) but also appear without them, strewn with clutter whose
textures nearly resemble bodies. Object colour edges coincide with the mask borders, which
carry a thin 255 void band as in VOC. See the README's section on the benchmark.

    python -m icam.data.synthetic --out DIR [--num-train N] [--num-val M] [--seed S]
"""

import argparse
import colorsys
import io
import json
import multiprocessing
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from icam import VOID
from icam.cache import cache_home
from icam.data.voc import VOC_PALETTE, load_image, load_mask

GENERATOR_VERSION = 3
DEFAULT_SIZE = (144, 192)  # (height, width) of landscape images; a quarter are portrait
JPEG_QUALITY = 90


@dataclass(frozen=True)
class ObjectClass:
    voc_id: int
    part_hue: float  # degrees: colour of the discriminative part
    body: str  # texture of the body, exclusive to this class
    scene: str | None  # background scene this class co-occurs with


CLASSES = (
    ObjectClass(4, 0.0, "hstripes", "water"),  # boat
    ObjectClass(7, 55.0, "vstripes", "grey"),  # car
    ObjectClass(8, 130.0, "checker", "brown"),  # cat
    ObjectClass(10, 200.0, "dots", "grass"),  # cow
    ObjectClass(15, 285.0, "rings", None),  # person
)
SCENES = {  # hue range (degrees), saturation range, value range of the scene's base colour
    "water": ((195, 225), (0.25, 0.45), (0.45, 0.75)),
    "grass": ((80, 125), (0.25, 0.45), (0.35, 0.65)),
    "brown": ((20, 40), (0.25, 0.45), (0.35, 0.70)),
    "grey": ((0, 360), (0.0, 0.08), (0.35, 0.75)),
}
CLUTTER_TEXTURES = ("flat", "smooth", "diagonal", "crosshatch", "waves")
CONTEXT_PROB = 0.5  # chance that the scene is the one of the first object's class
NUM_OBJECTS_PROB = (0.3, 0.4, 0.3)  # one, two or three objects of different classes
OBJECT_RADIUS = (0.2, 0.4)  # of the short side
"""With NUM_OBJECTS_PROB, objects cover about VOC's share of the pixels at about VOC's size
relative to the FSL's σ (`python -m icam.regime`; version 2 drew radii of 0.14-0.3)."""
PART_AREA = (0.04, 0.08)  # fraction of the object's area
TEXTURE_AMPLITUDE = 8.0  # grey levels of body and clutter patterns
"""Subtle, as most object surfaces are at the CAM's resolution: neighbouring pixels of one
surface differ by less than the FSL's crossover at μ = 2.5 (d ≈ 0.076, about 19 grey levels),
while object and background differ by MIN_BODY_CONTRAST. (Version 1 used 30: its textures
read as edges everywhere inside objects.)"""
MIN_BODY_CONTRAST = 70.0  # RGB distance of a body's colour from the background under it


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return 255.0 * np.array(colorsys.hsv_to_rgb((h % 360) / 360, s, v))


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """Colours of bodies and clutter: any hue, low saturation, so colour alone tells little."""
    return _hsv(rng.uniform(0, 360), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.9))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    up = Image.fromarray(grid, mode="F").resize((w, h), resample=Image.BICUBIC)
    return np.clip(np.asarray(up), -1, 1)


def _pattern(kind: str, yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float],
             rng: np.random.Generator) -> np.ndarray:
    """A texture in [-1, 1] at image coordinates (yy, xx), with a random period and phase."""
    period = rng.uniform(5.0, 7.0)
    px, py = rng.uniform(0, 2 * np.pi, 2)
    fx, fy = 2 * np.pi * xx / period + px, 2 * np.pi * yy / period + py
    if kind == "hstripes":
        return np.sin(fy)
    if kind == "vstripes":
        return np.sin(fx)
    if kind == "checker":
        return np.sign(np.sin(fx) * np.sin(fy))
    if kind == "dots":
        return np.where(np.cos(fx) + np.cos(fy) > 1.0, 1.0, -0.5)
    if kind == "rings":
        r = np.hypot(yy - centre[0], xx - centre[1])
        return np.sin(2 * np.pi * r / period + px)
    if kind == "diagonal":
        return np.sin((fx + rng.choice([-1, 1]) * fy) / np.sqrt(2))
    if kind == "crosshatch":
        return np.sign(np.sin((fx + fy) / np.sqrt(2)) * np.sin((fx - fy) / np.sqrt(2)))
    if kind == "waves":
        return np.sin(fy + 2.0 * np.sin(fx / 3.0))
    raise ValueError(f"unknown pattern {kind!r}")


def _outline(rng: np.random.Generator, cy: float, cx: float, radius: float) -> np.ndarray:
    """Vertices (x, y) of an ellipse, a blob or an irregular polygon around a centre."""
    kind = rng.integers(3)
    if kind == 0:  # ellipse with aspect ratio up to 2
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        q, rot = np.sqrt(rng.uniform(1, 2)), rng.uniform(0, np.pi)
        x, y = radius * q * np.cos(t), radius / q * np.sin(t)
        x, y = x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)
    elif kind == 1:  # blob: radius modulated by a few low harmonics
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = np.ones_like(t)
        for k in (2, 3, 4):
            r += rng.uniform(0, 0.18) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        x, y = radius * r * np.cos(t), radius * r * np.sin(t)
    else:  # polygon with 5-8 vertices at irregular angles and radii
        n = int(rng.integers(5, 9))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = radius * rng.uniform(0.7, 1.15, n)
        x, y = r * np.cos(t), r * np.sin(t)
    return np.stack([x + cx, y + cy], axis=1)


def _fill(shape: tuple[int, int], outline: np.ndarray) -> np.ndarray:
    im = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in outline.tolist()], fill=1)
    return np.asarray(im, dtype=bool)


def _polygon_area(outline: np.ndarray) -> float:
    x, y = outline[:, 0], outline[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def _scene(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """Background: a base colour of the scene's family with smooth light and colour drift."""
    (h0, h1), (s0, s1), (v0, v1) = SCENES[name]
    base = _hsv(rng.uniform(h0, h1), rng.uniform(s0, s1), rng.uniform(v0, v1))
    light = 25.0 * _smooth_noise(rng, h, w, 4)
    tint = np.stack([12.0 * _smooth_noise(rng, h, w, 3) for _ in range(3)], axis=-1)
    return (base + light[..., None] + tint).astype(np.float32)


def _add_clutter(rng: np.random.Generator, canvas: np.ndarray, yy, xx) -> None:
    """Shapes and lines in muted colours with textures that are no class's body."""
    h, w = canvas.shape[:2]
    for _ in range(int(rng.integers(4, 10))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if rng.random() < 0.2:  # a thin straight line, 2-4 px wide
            im = Image.new("L", (w, h), 0)
            end = (cx + rng.uniform(-0.5, 0.5) * w, cy + rng.uniform(-0.5, 0.5) * h)
            ImageDraw.Draw(im).line([(cx, cy), end], fill=1, width=int(rng.integers(2, 5)))
            region = np.asarray(im, dtype=bool)
        else:
            radius = rng.uniform(0.03, 0.15) * min(h, w)
            region = _fill((h, w), _outline(rng, cy, cx, radius))
        kind = CLUTTER_TEXTURES[rng.integers(len(CLUTTER_TEXTURES))]
        colour = _muted_colour(rng)
        if kind == "flat":
            texture = np.zeros(region.sum())
        elif kind == "smooth":
            texture = _smooth_noise(rng, h, w, 5)[region]
        else:
            texture = _pattern(kind, yy[region], xx[region], (cy, cx), rng)
        canvas[region] = colour + TEXTURE_AMPLITUDE * texture[:, None]


def _place_object(rng: np.random.Generator, shape: tuple[int, int],
                  placed: list[tuple[np.ndarray, np.ndarray]]):
    """Region, part and eye masks of a new object that is mostly inside the image and leaves
    earlier objects and their parts mostly visible; None if no such place was found."""
    h, w = shape
    for _ in range(40):
        radius = rng.uniform(*OBJECT_RADIUS) * min(h, w)
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        outline = _outline(rng, cy, cx, radius)
        region = _fill(shape, outline)
        area = region.sum()
        if area < 0.6 * _polygon_area(outline):
            continue
        if any((obj & ~region).sum() < 0.6 * obj.sum() or (part & ~region).sum() < 0.6 * part.sum()
               for obj, part in placed):
            continue
        # the part: a disc holding PART_AREA of the object, inside it and off its centre
        part_radius = max(2.5, np.sqrt(rng.uniform(*PART_AREA) * area / np.pi))
        ys, xs = np.nonzero(region)
        y0, x0 = ys.min(), xs.min()
        depth = ndimage.distance_transform_edt(np.pad(region[y0:ys.max() + 1, x0:xs.max() + 1], 1))
        inside = depth[ys - y0 + 1, xs - x0 + 1] >= part_radius
        candidates = np.flatnonzero(inside & (np.hypot(ys - cy, xs - cx) >= 0.3 * radius))
        if len(candidates) == 0:
            continue
        k = candidates[rng.integers(len(candidates))]
        to_part = np.hypot(ys - ys[k], xs - xs[k])
        part, eye = np.zeros(shape, bool), np.zeros(shape, bool)
        part[ys[to_part <= part_radius], xs[to_part <= part_radius]] = True
        eye[ys[to_part <= 0.4 * part_radius], xs[to_part <= 0.4 * part_radius]] = True
        return region, part, eye, (cy, cx)
    return None


def render_sample(rng: np.random.Generator,
                  size: tuple[int, int] = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One image (H x W x 3 uint8) and its mask (class ids, 0 background, 255 void band)."""
    h, w = size if rng.random() < 0.75 else size[::-1]
    yy, xx = np.indices((h, w), dtype=np.float32)
    count = int(rng.choice(len(NUM_OBJECTS_PROB), p=NUM_OBJECTS_PROB)) + 1
    classes = [CLASSES[i] for i in rng.choice(len(CLASSES), size=count, replace=False)]

    scene = classes[0].scene if rng.random() < CONTEXT_PROB else None
    scene = scene or list(SCENES)[rng.integers(len(SCENES))]
    canvas = _scene(rng, scene, h, w)
    _add_clutter(rng, canvas, yy, xx)

    labels = np.zeros((h, w), np.uint8)
    placed = []
    for cls in classes:
        found = _place_object(rng, (h, w), placed)
        if found is None:
            continue
        region, part, eye, (cy, cx) = found
        placed.append((region, part))
        # body: a muted colour that stands out from the background under it, so the object's
        # colour edge is its mask border, with the class texture and a gentle shading
        under = canvas[region].mean(axis=0)
        colours = [_muted_colour(rng) for _ in range(12)]
        body = next((c for c in colours if np.linalg.norm(c - under) >= MIN_BODY_CONTRAST),
                    max(colours, key=lambda c: np.linalg.norm(c - under)))
        ys, xs = yy[region], xx[region]
        light = rng.uniform(0, 2 * np.pi)
        shading = 30.0 * ((ys - cy) * np.cos(light) + (xs - cx) * np.sin(light)) / min(h, w)
        texture = TEXTURE_AMPLITUDE * _pattern(cls.body, ys, xs, (cy, cx), rng) + shading
        canvas[region] = body + texture[:, None]
        hue = cls.part_hue + rng.uniform(-8, 8)
        canvas[part] = _hsv(hue, rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.0))
        canvas[eye] = 245.0
        labels[region] = cls.voc_id

    canvas += 3.0 * rng.standard_normal(canvas.shape, dtype=np.float32)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, _with_void_band(labels)


def _with_void_band(labels: np.ndarray) -> np.ndarray:
    """Mark 255 every pixel with an 8-neighbour of a different label (a 2-px band, as VOC)."""
    padded = np.pad(labels, 1, mode="edge")
    h, w = labels.shape
    border = np.zeros((h, w), bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            border |= padded[dy:dy + h, dx:dx + w] != labels
    mask = labels.copy()
    mask[border] = VOID
    return mask


def _encode(image: np.ndarray, mask: np.ndarray) -> tuple[bytes, bytes]:
    """JPEG and palette-PNG bytes with fixed settings, so a seed gives identical files."""
    jpg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(image).save(jpg, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    im = Image.fromarray(mask, mode="P")
    im.putpalette(VOC_PALETTE)
    im.save(png, format="PNG")
    return jpg.getvalue(), png.getvalue()


def _write_sample(root: Path, image_id: str, seed: int, split_code: int, index: int,
                  size: tuple[int, int]) -> None:
    image, mask = render_sample(np.random.default_rng([seed, split_code, index]), size)
    jpg, png = _encode(image, mask)
    (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpg)
    (root / "SegmentationClass" / f"{image_id}.png").write_bytes(png)


def _manifest(num_train: int, num_val: int, seed: int, size: tuple[int, int]) -> dict:
    return {"generator": "icam.data.synthetic", "version": GENERATOR_VERSION, "seed": seed,
            "num_train": num_train, "num_val": num_val, "size": list(size)}


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "synthetic.json").read_text())
    except (OSError, ValueError):
        return None


def generate(out_dir: str | os.PathLike, num_train: int = 300, num_val: int = 80, seed: int = 0,
             size: tuple[int, int] = DEFAULT_SIZE, force: bool = False, workers: int = 1) -> Path:
    """Write the benchmark to `out_dir` (VOC 2012 layout), atomically; return its path.

    Does nothing if `out_dir` already holds the same dataset; refuses to replace a different
    non-empty folder unless `force`. `workers` > 1 renders in forked processes (same bytes).
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train={num_train}, num_val={num_val}: both must be >= 1")
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f"size={size}: need (height, width), each >= 32")
    out = Path(out_dir).expanduser()
    manifest = _manifest(num_train, num_val, seed, tuple(size))
    if _read_manifest(out) == manifest:
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"{out}: exists and holds something else; use --force to replace")

    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (tmp / sub).mkdir(parents=True)
        jobs = []
        for split_code, (split, count) in enumerate((("train", num_train), ("val", num_val))):
            ids = [f"{split}_{i:05d}" for i in range(count)]
            jobs += [(tmp, image_id, seed, split_code, i, tuple(size))
                     for i, image_id in enumerate(ids)]
            (tmp / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
                "".join(f"{i}\n" for i in ids))
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with context.Pool(workers) as pool:
                pool.starmap(_write_sample, jobs, chunksize=16)
        else:
            for job in jobs:
                _write_sample(*job)
        (tmp / "synthetic.json").write_text(json.dumps(manifest, indent=1) + "\n")
        _move_into_place(tmp, out, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _move_into_place(tmp: Path, out: Path, manifest: dict) -> None:
    """Rename the finished folder to `out`, replacing what is there (already agreed to)."""
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.is_dir() and any(out.iterdir()):
        if _read_manifest(out) == manifest:  # another process finished the same dataset first
            return
        os.replace(out, old)
    elif out.exists() and not out.is_dir():
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if _read_manifest(out) != manifest:
            raise
    if old.is_dir():
        shutil.rmtree(old)
    elif old.exists():
        old.unlink()


def default_root(num_train: int = 300, num_val: int = 80, seed: int = 0,
                 size: tuple[int, int] = DEFAULT_SIZE) -> Path:
    """Cache folder of the embedded default dataset with these parameters."""
    name = f"synthetic-v{GENERATOR_VERSION}-s{seed}-n{num_train}-{num_val}-{size[0]}x{size[1]}"
    return cache_home() / name


def ensure_default(num_train: int = 300, num_val: int = 80, seed: int = 0,
                   size: tuple[int, int] = DEFAULT_SIZE) -> Path:
    """The default dataset's root, generated on first use."""
    return generate(default_root(num_train, num_val, seed, size), num_train, num_val, seed, size)


def save_preview(root: str | os.PathLike, out_png: str | os.PathLike, count: int = 6) -> None:
    """A sheet of the first `count` training images, each beside its coloured mask."""
    root = Path(root)
    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:count]
    tiles = []
    for image_id in ids:
        image = load_image(root / "JPEGImages" / f"{image_id}.jpg")
        mask = Image.fromarray(load_mask(root / "SegmentationClass" / f"{image_id}.png"), "P")
        mask.putpalette(VOC_PALETTE)
        tiles.append((Image.fromarray(image), mask.convert("RGB")))
    cell_w = max(max(a.width, b.width) for a, b in tiles)
    cell_h = max(max(a.height, b.height) for a, b in tiles)
    cols, gap = 2, 4
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * (2 * cell_w + 3 * gap), rows * (cell_h + gap) + gap),
                      (255, 255, 255))
    for k, (image, mask) in enumerate(tiles):
        x0 = (k % cols) * (2 * cell_w + 3 * gap) + gap
        y0 = (k // cols) * (cell_h + gap) + gap
        sheet.paste(image, (x0, y0))
        sheet.paste(mask, (x0 + cell_w + gap, y0))
    sheet.save(out_png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icam.data.synthetic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="dataset folder to write (VOC 2012 layout)")
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=DEFAULT_SIZE, metavar=("H", "W"),
                        help="landscape image size; a quarter of the images are portrait")
    parser.add_argument("--force", action="store_true", help="replace a different dataset")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes rendering images (output does not depend on it)")
    parser.add_argument("--preview", metavar="PNG", help="also save a sheet of samples")
    args = parser.parse_args(argv)
    try:
        out = generate(args.out, args.num_train, args.num_val, args.seed, tuple(args.size),
                       force=args.force, workers=args.workers)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.preview:
        save_preview(out, args.preview)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
