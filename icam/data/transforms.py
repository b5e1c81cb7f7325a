"""Training augmentations without torchvision: numpy + PIL, randomness from a passed-in rng.

`ClassificationTrain` is the CAM/AffinityNet stage's augmentation (random long-side resize,
flip, colour jitter, ImageNet normalisation, random crop padded with the mean colour);
`SegmentationTrain` is DeepLab's (HSV jitter, flip, random scale, crop; masks padded with 255).
"""

import numpy as np
import torch
from PIL import Image, ImageEnhance

from icam import VOID

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def normalize(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 3 x H x W float tensor with ImageNet mean and std."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255.0
    return ((x - _MEAN) / _STD).contiguous()


NORMALISED_BLACK = ((0 - _MEAN) / _STD).contiguous()
"""A black pixel after `normalize` (3 x 1 x 1): the padding of crops cut before normalising."""


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize` for (..., 3, H, W) tensors, clamped to RGB in [0, 1]."""
    return (x * _STD.to(x) + _MEAN.to(x)).clamp(0.0, 1.0)


def resize(array: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize an H x W (x 3) uint8 array to size (h, w): bicubic, or nearest for masks."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    resample = Image.NEAREST if nearest else Image.BICUBIC
    return np.asarray(Image.fromarray(array).resize((w, h), resample=resample))


def random_resize_long(image: np.ndarray, low: int, high: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Resize so that the long side is uniform in [low, high], keeping the aspect ratio."""
    h, w = image.shape[:2]
    target = int(rng.integers(low, high + 1))
    if w < h:
        size = (target, max(1, round(w * target / h)))
    else:
        size = (max(1, round(h * target / w)), target)
    return resize(image, size)


def _shift_hsv(image: np.ndarray, dh: int, ds: int, dv: int) -> np.ndarray:
    """Add to PIL's 8-bit H (wrapping), S and V (clipping) channels."""
    hsv = np.asarray(Image.fromarray(image).convert("HSV")).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + dh) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] + ds, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + dv, 0, 255)
    return np.asarray(Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGB"))


def color_jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float,
                 hue: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation factors in [1-b, 1+b] and a hue shift in [-h, h]
    turns, applied in random order (torchvision's ColorJitter)."""
    im = Image.fromarray(image)
    for op in rng.permutation(4):
        if op == 0 and brightness > 0:
            im = ImageEnhance.Brightness(im).enhance(rng.uniform(1 - brightness, 1 + brightness))
        elif op == 1 and contrast > 0:
            im = ImageEnhance.Contrast(im).enhance(rng.uniform(1 - contrast, 1 + contrast))
        elif op == 2 and saturation > 0:
            im = ImageEnhance.Color(im).enhance(rng.uniform(1 - saturation, 1 + saturation))
        elif op == 3 and hue > 0:
            dh = round(rng.uniform(-hue, hue) * 256)
            im = Image.fromarray(_shift_hsv(np.asarray(im), dh, 0, 0))
    return np.asarray(im)


def hsv_jitter(image: np.ndarray, h: int, s: int, v: int,
               rng: np.random.Generator) -> np.ndarray:
    """DeepLab's HSV jitter: integer shifts in [-h, h] of OpenCV's hue (0-180), [-s, s] of
    saturation and [-v, v] of value (0-255)."""
    dh, ds, dv = (int(rng.integers(-r, r + 1)) for r in (h, s, v))
    return _shift_hsv(image, round(dh * 256 / 180), ds, dv)


def random_crop_box(height: int, width: int, crop: int,
                    rng: np.random.Generator) -> tuple[slice, slice, slice, slice]:
    """Source and destination slices of a crop x crop window; a side shorter than the crop
    is placed at a random offset inside the window (the rest is padding)."""
    def axis(n):
        if n > crop:
            start = int(rng.integers(0, n - crop + 1))
            return slice(start, start + crop), slice(0, crop)
        start = int(rng.integers(0, crop - n + 1))
        return slice(0, n), slice(start, start + n)

    src_y, dst_y = axis(height)
    src_x, dst_x = axis(width)
    return src_y, src_x, dst_y, dst_x


def crop_pad(x: torch.Tensor, box, crop: int, fill: float | torch.Tensor) -> torch.Tensor:
    """Cut a (..., H, W) tensor with a `random_crop_box`, padding with `fill` (a number, or a
    tensor broadcast to (..., crop, crop), such as one value per channel)."""
    src_y, src_x, dst_y, dst_x = box
    out = x.new_empty((*x.shape[:-2], crop, crop))
    out[...] = fill
    out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out


class ClassificationTrain:
    """CAM-stage augmentation: (image uint8 HxWx3, rng) -> normalised 3 x crop x crop tensor.

    `resize_long`, `jitter` (brightness, contrast, saturation, hue) and `crop` may be None.
    """

    def __init__(self, crop: int | None = 448, resize_long: tuple[int, int] | None = (448, 768),
                 flip: bool = True,
                 jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1)):
        if resize_long is not None and not 0 < resize_long[0] <= resize_long[1]:
            raise ValueError(f"resize_long={resize_long}: need 0 < low <= high")
        if crop is not None and crop <= 0:
            raise ValueError(f"crop={crop}: must be positive")
        self.crop = crop
        self.resize_long = resize_long
        self.flip = flip
        self.jitter = jitter

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        if self.resize_long is not None:
            image = random_resize_long(image, *self.resize_long, rng)
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        if self.jitter is not None:
            image = color_jitter(np.ascontiguousarray(image), *self.jitter, rng)
        x = normalize(image)
        if self.crop is not None:
            x = crop_pad(x, random_crop_box(*x.shape[1:], self.crop, rng), self.crop, 0.0)
        return x


class SegmentationTrain:
    """Final-stage augmentation: (image, mask, rng) -> (3 x crop x crop tensor, long target).

    Image and mask get the same flip, scale (bicubic / nearest) and crop; padding is the mean
    colour (0 after normalisation) for the image and 255 for the mask.
    """

    def __init__(self, crop: int | None = 448, scale: tuple[float, float] | None = (0.5, 1.5),
                 flip: bool = True, hsv_jitter: tuple[int, int, int] | None = (10, 10, 10)):
        if scale is not None and not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale={scale}: need 0 < low <= high")
        if crop is not None and crop <= 0:
            raise ValueError(f"crop={crop}: must be positive")
        self.crop = crop
        self.scale = scale
        self.flip = flip
        self.hsv_jitter = hsv_jitter

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[:2] != mask.shape:
            raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} sizes differ")
        if self.hsv_jitter is not None:
            image = hsv_jitter(image, *self.hsv_jitter, rng)
        if self.flip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.scale is not None:
            s = rng.uniform(*self.scale)
            size = (max(1, round(mask.shape[0] * s)), max(1, round(mask.shape[1] * s)))
            image = resize(np.ascontiguousarray(image), size)
            mask = resize(np.ascontiguousarray(mask), size, nearest=True)
        x = normalize(image)
        y = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        if self.crop is not None:
            box = random_crop_box(*y.shape, self.crop, rng)
            x = crop_pad(x, box, self.crop, 0.0)
            y = crop_pad(y, box, self.crop, VOID)
        return x, y
