"""Reading pictures with Pillow (extra ``images``). Every picture deltaprop opens — detection photos, digit
pictures, ``detect``'s inputs, ``data check`` — goes through :func:`open_image`:

1. **A regular file** (a FIFO, device or directory is refused at once, :mod:`deltaprop.data.files`).
2. **The header, then the budget.** Pillow reads the header (format, size, mode) without decoding; a picture of
   more than :func:`max_image_pixels` pixels (``DELTAPROP_MAX_IMAGE_PIXELS``, default 100,000,000: a
   10000×10000 picture) is refused with the file, its size and the budget, before a pixel is decoded. Pillow's
   own decompression-bomb check is not used (its warning would reach the user raw, its error name no file):
   the plugin that recognises the file is called as ``Image.open`` calls it, and the budget above replaces the
   check. An empty or 0×0 picture is refused here too.
3. **Decoding, in 8 or 16 bits.** 8-bit pictures (grey, palette, RGB, RGBA, CMYK, YCbCr, 1-bit) become RGB or
   grey as Pillow converts them (CMYK multiplicatively; alpha dropped, as Darknet's ``stb_image`` does with
   ``channels = 3``); 16-bit grey (``I;16``, ``I``) keeps its 16 bits and is scaled by 65535 (Pillow's
   ``convert`` would clip it to 255: a white picture). Pillow gives 16-bit RGB(A) PNGs as their high bytes
   (within 1/257 of the 16-bit value). 32-bit float pictures are refused (their scale is unknown).
4. **Large photos shrink before they become floats.** With ``fit = (w, h)`` (the network input), a picture of
   more than :data:`REDUCE_ABOVE` pixels (4 Mpx) that is at least four times the input both ways is reduced in
   8 (or 16) bits by the integer factor ``k = min(W // 2w, H // 2h)`` (so it stays at least twice the input
   both ways): a JPEG is decoded at 1/2, 1/4 or 1/8 scale (``draft``), the rest is averaged over ``k × k``
   blocks (``reduce``). A 9000×9000 photo then costs a 900×900 float array, not 81 million floats. Pictures
   below that (every COCO or VOC photo at any network size) are decoded exactly as before, so Darknet's
   ``letterbox_image`` numbers are unchanged for them; the reduced ones differ from Darknet, which resamples
   the full picture (aliasing it).

Every failure is a :class:`~deltaprop.errors.DataError` ``path: reason``.
"""
from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

import numpy as np

from ..errors import DataError
from ..runtime.settings import env_int
from .files import file_error, open_regular

PathLike = Union[str, "os.PathLike[str]"]
Fit = Optional[Tuple[int, int]]

#: The environment variable of the pixel budget and its default (a 10000×10000 picture).
MAX_PIXELS_SETTING = "DELTAPROP_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000
#: Pictures of more pixels than this may be reduced before they become floats (see the module's docstring).
REDUCE_ABOVE = 2 ** 22
#: Modes holding 16-bit grey values.
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading and drawing images needs Pillow: pip install 'deltaprop[images]' "
                          "(or pip install Pillow)") from None
    return Image


def max_image_pixels() -> int:
    """The pixel budget of one picture: ``DELTAPROP_MAX_IMAGE_PIXELS`` (default 100,000,000)."""
    return env_int(MAX_PIXELS_SETTING, DEFAULT_MAX_PIXELS, minimum=1)


@dataclass(frozen=True)
class ImageHeader:
    """What a picture's header says: size in pixels, Pillow's mode and format."""
    width: int
    height: int
    mode: str
    format: str


def _identify(f, path: str):
    """The Pillow image of file ``f`` (header read, nothing decoded), or None when no plugin knows it: the
    loop of ``Image.open`` without its decompression-bomb check (the pixel budget replaces it)."""
    Image = _pil()
    prefix = f.read(16)
    if not prefix:
        return None
    Image.preinit()
    tried = set()
    for load in (None, Image.init):
        if load is not None:
            load()
        for fmt in list(Image.ID):
            if fmt in tried or fmt not in Image.OPEN:
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            try:
                ok = not accept or accept(prefix)
                if not ok or isinstance(ok, str):
                    continue
                f.seek(0)
                return factory(f, path)
            except (SyntaxError, IndexError, TypeError, struct.error):   # not this format after all
                continue
    return None


def _reason(e: BaseException) -> str:
    text = str(e).strip().replace("\n", " ")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@contextlib.contextmanager
def open_image(path: PathLike, max_pixels: Optional[int] = None) -> Iterator:
    """``with open_image(path) as im:`` the Pillow image of ``path``, header read and checked against the
    pixel budget (``max_pixels``, default :func:`max_image_pixels`), nothing decoded yet. Any failure inside
    the block (decoding, converting) becomes a DataError naming the file."""
    name = os.fspath(path)
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    _pil()                                      # Pillow missing: say what to install before anything else
    with open_regular(name, "image file") as f:
        try:
            im = _identify(f, name)
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - a plugin's own failure on a damaged header
            raise file_error(name, f"cannot read image: a damaged header ({_reason(e)})") from None
        if im is None:
            empty = os.fstat(f.fileno()).st_size == 0
            raise file_error(name, "cannot read image: an empty file" if empty else
                             "cannot read image: not a picture Pillow knows (unknown format)")
        w, h = im.size
        if w < 1 or h < 1:
            raise file_error(name, f"image of {w}x{h} pixels: no pixels")
        if w * h > limit:
            raise file_error(name, f"image of {w}x{h} = {w * h:,} pixels, more than the budget of {limit:,} "
                            f"pixels ({MAX_PIXELS_SETTING} raises it)")
        try:
            yield im
        except DataError:
            raise
        except MemoryError:
            raise file_error(name, f"out of memory decoding the {w}x{h} image") from None
        except Exception as e:  # noqa: BLE001 - Pillow's decoders raise OSError, SyntaxError, ValueError, zlib...
            raise file_error(name, f"cannot read image: damaged pixels ({_reason(e)})") from None
        finally:
            im.close()


def image_header(path: PathLike, max_pixels: Optional[int] = None) -> ImageHeader:
    """The header of ``path`` (size, mode, format), checked as :func:`open_image` does; nothing decoded."""
    with open_image(path, max_pixels) as im:
        return ImageHeader(im.size[0], im.size[1], im.mode, im.format or "")


def reduction(width: int, height: int, fit: Fit) -> int:
    """The integer factor a ``width × height`` picture is reduced by for a network input ``fit = (w, h)``:
    ``min(width // 2w, height // 2h)`` when the picture has more than :data:`REDUCE_ABOVE` pixels and that is
    2 or more, else 1 (not reduced)."""
    if fit is None or width * height <= REDUCE_ABOVE:
        return 1
    k = min(width // (2 * int(fit[0])), height // (2 * int(fit[1])))
    return k if k >= 2 else 1


def _pixels(im, name: str, channels: int, fit: Fit, alpha: str = "drop") -> Tuple[np.ndarray, int]:
    """The decoded pixels of an opened picture as uint8 or uint16 (H, W) for 1 channel or (H, W, 3), and the
    value of full scale (255 or 65535). ``alpha``: ``"drop"`` (Darknet's way) or ``"white"`` (composited on
    white paper, for digit pictures)."""
    k = reduction(im.size[0], im.size[1], fit)
    if k > 1 and im.format == "JPEG":
        im.draft(None, (max(1, im.size[0] // k), max(1, im.size[1] // k)))   # decoded at 1/2, 1/4 or 1/8
        k = 1 if fit is None else max(1, min(im.size[0] // (2 * fit[0]), im.size[1] // (2 * fit[1])))
    im.load()
    if im.mode == "F":
        raise file_error(name, "32-bit floating-point pixels: their scale is unknown; save the picture with 8- "
                        "or 16-bit integers")
    if im.mode in SIXTEEN_BIT:
        if k > 1:
            im = (im if im.mode == "I" else im.convert("I")).reduce(k)
        a = np.asarray(im)
        if a.dtype != np.uint16:
            if a.size and (a.min() < 0 or a.max() > 65535):
                raise file_error(name, f"32-bit integer pixels outside 0..65535 (values {a.min()}..{a.max()})")
            a = a.astype(np.uint16)
        return (a if channels == 1 else np.repeat(a[:, :, None], 3, axis=2)), 65535
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")                 # the palette's transparency becomes alpha (no Pillow warning)
    elif im.mode == "1":
        im = im.convert("L")
    if alpha == "white" and im.mode in ("RGBA", "LA"):
        Image = _pil()
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if k > 1:
        im = im.reduce(k)
    target = "RGB" if channels == 3 else "L"
    if im.mode != target:
        im = im.convert(target)
    return np.asarray(im), 255


def _check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise DataError(f"images are read with 1 (grey) or 3 (RGB) channels, not {channels}")
    return channels


def load_image(path: PathLike, channels: int = 3, fit: Fit = None, max_pixels: Optional[int] = None) -> np.ndarray:
    """An image file as float32 (channels, H, W) in [0, 1] (RGB for 3 channels, grey for 1). ``fit``: the
    network input ``(w, h)`` it is for; a picture far larger than that comes back reduced (see
    :func:`reduction`)."""
    _check_channels(channels)
    name = os.fspath(path)
    with open_image(name, max_pixels) as im:
        a, scale = _pixels(im, name, channels, fit)
        arr = np.asarray(a, dtype=np.float32) / np.float32(scale)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def check_image(path: PathLike, max_pixels: Optional[int] = None) -> ImageHeader:
    """Open and decode ``path`` as training does (every byte of its pixels decoded, converted to RGB; nothing
    to floats), for the smallest input, so a picture above :data:`REDUCE_ABOVE` pixels costs no more than its
    decoded pixels; its header, or a DataError ``path: reason`` (``deltaprop data check``, ``detect``)."""
    name = os.fspath(path)
    with open_image(name, max_pixels) as im:
        header = ImageHeader(im.size[0], im.size[1], im.mode, im.format or "")
        _pixels(im, name, 3, (1, 1))
    return header


def read_image(path: PathLike) -> np.ndarray:
    """A picture as uint8 grayscale (H, W); transparent parts become white paper (digit pictures)."""
    name = os.fspath(path)
    with open_image(name) as im:
        a, scale = _pixels(im, name, 1, None, alpha="white")
    if scale != 255:
        a = np.round(a.astype(np.float64) * (255.0 / scale)).astype(np.uint8)
    return np.ascontiguousarray(a, dtype=np.uint8)


def to_mnist(gray: np.ndarray, invert: Union[bool, str] = "auto") -> np.ndarray:
    """Make a grayscale digit look like MNIST: white ink on black, the digit's bounding box scaled to fit
    20×20 and centred by its centre of mass in 28×28. ``invert="auto"`` inverts when the border is light
    (dark ink on white paper). A 28×28 input that is already dark-background is returned as is."""
    Image = _pil()
    g = np.asarray(gray, dtype=np.uint8)
    if g.ndim != 2:
        raise DataError(f"expected a grayscale image (H, W), got shape {g.shape}")
    if invert == "auto":
        border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
        invert = border.mean() > 127
    if invert:
        g = 255 - g
    if g.shape == (28, 28):
        return g.copy()
    ys, xs = np.nonzero(g > 30)
    if ys.size == 0:
        return np.zeros((28, 28), dtype=np.uint8)
    crop = g[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    s = 20.0 / max(h, w)
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    small = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.LANCZOS), dtype=np.float64)
    out = np.zeros((28, 28), dtype=np.float64)
    tot = small.sum()
    cy = (small.sum(1) @ np.arange(nh)) / tot if tot else nh / 2
    cx = (small.sum(0) @ np.arange(nw)) / tot if tot else nw / 2
    top = int(np.clip(round(14 - cy), 0, 28 - nh))
    left = int(np.clip(round(14 - cx), 0, 28 - nw))
    out[top:top + nh, left:left + nw] = small
    return np.clip(out, 0, 255).astype(np.uint8)


def load_digit(path: Union[str, os.PathLike], invert: Union[bool, str] = "auto") -> np.ndarray:
    """Read a picture of one digit as a 28×28 uint8 MNIST-like array (see ``to_mnist``)."""
    return to_mnist(read_image(path), invert)


__all__ = ["open_image", "image_header", "load_image", "check_image", "read_image", "to_mnist", "load_digit",
           "reduction", "max_image_pixels", "ImageHeader", "MAX_PIXELS_SETTING", "DEFAULT_MAX_PIXELS", "REDUCE_ABOVE"]
