"""Read pictures (paths, PIL images, numpy arrays, bundled sample names) as uint8 RGB arrays, with numpy and PIL only.

No torch here, so the command line can check every image before it loads torch. Files are refused with one clear
:class:`~cnnlens.errors.InputError` when they are missing, unreadable, corrupt or truncated, or larger than
:data:`MAX_IMAGE_PIXELS` (a "decompression bomb": a small file whose header claims a huge picture); the size is checked
from the header, before any pixel is decoded. A file is turned upright by its EXIF orientation tag (as a photo viewer
shows it), for every command alike: ``explain``, ``sweep``, ``sanity``, ``demo`` and ``evaluate`` read files with
:func:`read_image_file` (sizes with :func:`image_file_size`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, suggest

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: Largest picture (width × height) a file may declare: 64 Mpx (8192 × 8192). Larger files are refused before decoding.
MAX_IMAGE_PIXELS = 64 * 2 ** 20

#: Photos shipped with scikit-image (``skimage.data``), usable offline by name.
SAMPLE_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "camera")


def sample_image(name: str) -> np.ndarray:
    """A bundled sample photo as uint8 RGB (H,W,3)."""
    if name not in SAMPLE_IMAGES:
        raise InputError(f"unknown sample image {name!r}.{suggest(name, SAMPLE_IMAGES)} "
                         f"Samples: {', '.join(SAMPLE_IMAGES)}")
    import skimage.data
    if name == "motorcycle_left":
        arr = skimage.data.stereo_motorcycle()[0]
    else:
        arr = getattr(skimage.data, name)()
    return to_rgb_array(arr)


def to_rgb_array(arr: np.ndarray) -> np.ndarray:
    """Any image array → uint8 RGB (H,W,3): grayscale, RGBA (alpha over white), 16-bit and float [0,1] handled."""
    import numpy as np
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"an image array must be (H,W), (H,W,3) or (H,W,4), got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError("image array contains NaN or Inf")
        peak = 1.0 if a.max() <= 1.0 else 255.0
        a = np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype == np.uint16 or (np.issubdtype(a.dtype, np.integer) and a.max() > 255):
        a = (a.astype(np.float64) / (65535.0 if a.max() > 255 else 255.0) * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = a.clip(0, 255).astype(np.uint8)
    if a.shape[2] in (2, 4):  # alpha over white
        alpha = a[:, :, -1:].astype(np.float32) / 255.0
        color = a[:, :, :-1].astype(np.float32)
        a = (color * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def _pil_to_rgb(img) -> np.ndarray:
    import numpy as np
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return to_rgb_array(np.asarray(img).astype(np.uint16 if mode.startswith("I;16") else np.int64))
    if mode == "P":
        img = img.convert("RGBA")
    elif mode in ("LA", "PA"):
        img = img.convert("RGBA")
    elif mode not in ("RGB", "RGBA", "L"):
        img = img.convert("RGB")
    return to_rgb_array(np.asarray(img))


def check_image_source(source: str | os.PathLike) -> None:
    """Raise the one-line :class:`InputError` of a path that does not exist or is a folder (sample names pass);
    nothing is opened, nothing heavy is imported."""
    s = os.fspath(source)
    if isinstance(source, str) and s in SAMPLE_IMAGES and not os.path.exists(s):
        return
    path = Path(s)
    if not path.exists():
        hint = suggest(s, SAMPLE_IMAGES) if os.sep not in s and "." not in s else ""
        raise InputError(f"image file not found: {s}{hint}")
    if path.is_dir():
        raise InputError(f"{s} is a directory, not an image file")


def load_rgb(source: Any) -> np.ndarray:
    """A path, PIL image, numpy array or sample name → uint8 RGB (H,W,3)."""
    if isinstance(source, (str, os.PathLike)):
        check_image_source(source)
        s = os.fspath(source)
        if isinstance(source, str) and s in SAMPLE_IMAGES and not os.path.exists(s):
            return sample_image(s)
        return read_image_file(s)
    import numpy as np
    from PIL import Image
    if isinstance(source, np.ndarray):
        return to_rgb_array(source)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    raise InputError(f"cannot load an image from {type(source).__name__}; pass a path, a PIL image, a numpy array "
                     f"or a sample name ({', '.join(SAMPLE_IMAGES)})")


#: EXIF orientations (tag 0x0112) that swap width and height: transposed, rotated 90° or 270°, transversed.
_SWAPS_SIDES = (5, 6, 7, 8)


def _open_checked(s: str, data: bytes | None = None):
    """``Image.open`` (of the file ``s``, or of ``data`` named ``s``) with the size checks of the header: a declared
    picture over :data:`MAX_IMAGE_PIXELS` or an empty one raises :class:`InputError` before any pixel is decoded."""
    from PIL import Image
    if data is not None:
        import io
        img = Image.open(io.BytesIO(data))
    else:
        img = Image.open(s)
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:
        img.close()
        raise InputError(f"{s} declares a {w}×{h} picture ({w * h / 1e6:.0f} Mpx), more than the limit of "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx (a decompression bomb?); raise "
                         f"cnnlens.image_files.MAX_IMAGE_PIXELS to read it")
    if w < 1 or h < 1:
        img.close()
        raise InputError(f"{s} is an empty ({w}×{h}) picture")
    return img


def _one_line(s: str, exc: BaseException) -> InputError:
    """The one-line :class:`InputError` of a failure to open or decode ``s``."""
    from PIL import Image, UnidentifiedImageError
    if isinstance(exc, InputError):
        return exc
    if isinstance(exc, Image.DecompressionBombError):     # PIL's own limit (2 × Image.MAX_IMAGE_PIXELS), at open
        size = re.search(r"\d+", str(exc))
        mpx = f" {int(size.group()) / 1e6:.0f} Mpx" if size else ""
        return InputError(f"{s} declares a{mpx} picture, more than PIL's limit (a decompression bomb?)")
    if isinstance(exc, UnidentifiedImageError):
        return InputError(f"{s} is not an image file PIL can read")
    if isinstance(exc, PermissionError):
        return InputError(f"cannot read {s}: permission denied")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{s} is a directory, not an image file")
    if isinstance(exc, FileNotFoundError):
        return InputError(f"image file not found: {s}")
    if isinstance(exc, MemoryError):
        return InputError(f"{s} is too large to decode in the available memory")
    # PIL's decoders raise many types on corrupt data (OSError, SyntaxError, ValueError, struct.error, EOFError, ...)
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return InputError(f"cannot read image {s}: {first} (truncated or corrupt file?)")


def read_image_file(path: str | os.PathLike, *, data: bytes | None = None) -> np.ndarray:
    """Decode the image file at ``path`` (or the encoded bytes ``data``, named ``path`` in messages) → uint8 RGB
    (H,W,3), upright by its EXIF orientation; any failure is one :class:`InputError` line (bombs refused from the
    header, see the module docstring)."""
    from PIL import ImageOps
    s = os.fspath(path)
    try:
        with _open_checked(s, data) as img:
            img.load()
            try:
                upright = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - a malformed EXIF block: keep the pixels as stored
                upright = img
            return _pil_to_rgb(upright)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line (see _one_line)
        raise _one_line(s, exc) from None


def image_file_size(path: str | os.PathLike, *, data: bytes | None = None) -> tuple[int, int]:
    """(H, W) of the image file at ``path`` (or of the bytes ``data``) as :func:`read_image_file` returns it (after
    the EXIF orientation), from the header only; the same one-line :class:`InputError` for a missing, unreadable or
    oversized file."""
    s = os.fspath(path)
    try:
        with _open_checked(s, data) as img:
            w, h = img.size
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - a malformed EXIF block: as stored (read_image_file does the same)
                orientation = 1
    except Exception as exc:  # noqa: BLE001
        raise _one_line(s, exc) from None
    return (w, h) if orientation in _SWAPS_SIDES else (h, w)
