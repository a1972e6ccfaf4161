"""Thumbnails with Pillow: which size to make, and making it.

Everything here is synchronous and CPU-bound; the handler runs it in a
thread. The rules are the spec's ("Thumbnails"): ``scale`` keeps the aspect
ratio and fits the image in the box, ``crop`` fills the box exactly (its
aspect ratio) and cuts what sticks out; never upscale; when the original is
no bigger than what is asked, the original is good enough. A thumbnail is
animated only when asked (``animated=true``) and the original is animated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from myelin.config.media import ThumbnailSize

# Media types we try to read as images at all.
THUMBNAILABLE = frozenset({"image/jpeg", "image/jpg", "image/png", "image/gif", "image/webp",
                           "image/apng", "image/bmp", "image/tiff", "image/x-icon",
                           "image/avif", "image/heic"})
# Types a thumbnail response may have (the spec's list for /thumbnail).
THUMBNAIL_TYPES = frozenset({"image/jpeg", "image/png", "image/apng", "image/gif",
                             "image/webp"})
# Animated thumbnails are cut down to this many frames.
MAX_FRAMES = 200
_EXIF_ORIENTATION = 274


class NotAnImage(Exception):
    """The content cannot be read as an image."""


class TooManyPixels(Exception):
    """The image is larger than ``max_image_pixels``."""


@dataclass(frozen=True)
class ImageInfo:
    width: int      # as displayed (after EXIF orientation)
    height: int
    animated: bool
    content_type: str  # what the bytes are, by Pillow


def probe(path: str, max_pixels: int) -> ImageInfo:
    """Read an image's header (not its pixels)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise TooManyPixels()
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            animated = bool(getattr(img, "is_animated", False))
            mime = Image.MIME.get(img.format or "", "application/octet-stream")
            return ImageInfo(width, height, animated, mime)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise NotAnImage() from None


def scaled_size(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    """``scale``: fit in the box keeping the aspect ratio, never larger than the original."""
    if width <= box_w and height <= box_h:
        return width, height
    ratio = min(box_w / width, box_h / height)
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def cropped_size(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    """``crop``: the box's aspect ratio; shrunk as a whole when the original
    cannot fill it (no upscaling)."""
    factor = min(1.0, width / box_w, height / box_h)
    return max(1, math.floor(box_w * factor)), max(1, math.floor(box_h * factor))


def output_size(info: ImageInfo, width: int, height: int, method: str) -> tuple[int, int]:
    if method == "crop":
        return cropped_size(info.width, info.height, width, height)
    return scaled_size(info.width, info.height, width, height)


def choose_size(info: ImageInfo, width: int, height: int, method: str,
                sizes: Sequence[ThumbnailSize]) -> ThumbnailSize | None:
    """The configured size that best answers a request (``dynamic_thumbnails`` off).

    Preferred: the requested method, a result at least as large as asked
    (both sides for crop; one side for scale, whose result fits the box), then
    for crop the closest aspect ratio, then the smallest such result; when
    none is large enough, the largest.
    """
    if not sizes:
        return None
    same = [s for s in sizes if s.method == method] or list(sizes)

    def key(size: ThumbnailSize) -> tuple[int, float, int]:
        out_w, out_h = output_size(info, size.width, size.height, size.method)
        if size.method == "crop":
            big_enough = out_w >= width and out_h >= height
            aspect = abs(out_w / out_h - width / height)
        else:
            big_enough = out_w >= width or out_h >= height
            aspect = 0.0
        area = out_w * out_h
        return (0 if big_enough else 1, aspect if big_enough else 0.0,
                area if big_enough else -area)

    return min(same, key=key)


def thumbnail_type(info: ImageInfo, animated: bool) -> str:
    """JPEG stays JPEG; an animated thumbnail is WebP (the spec's preference);
    everything else is PNG (it keeps transparency)."""
    if animated:
        return "image/webp"
    return "image/jpeg" if info.content_type == "image/jpeg" else "image/png"


def original_will_do(info: ImageInfo, media_type: str | None, width: int, height: int,
                     animated: bool) -> bool:
    """The spec: when the content is no bigger than asked, return it as it is —
    if it may be served as a thumbnail, and is not animated unless asked."""
    if info.width > width or info.height > height:
        return False
    if info.animated and not animated:
        return False
    return media_type in THUMBNAIL_TYPES and info.content_type == media_type


def _fit(frame: Image.Image, size: tuple[int, int], method: str) -> Image.Image:
    if method == "crop":
        return ImageOps.fit(frame, size, Image.Resampling.LANCZOS)
    return frame.resize(size, Image.Resampling.LANCZOS)


def _static_mode(frame: Image.Image, content_type: str) -> Image.Image:
    if content_type == "image/jpeg":
        return frame if frame.mode in ("RGB", "L") else frame.convert("RGB")
    return frame if frame.mode in ("RGB", "RGBA", "L", "LA") else frame.convert("RGBA")


def make_thumbnail(source: str, dest: str, info: ImageInfo, width: int, height: int,
                   method: str, animated: bool) -> tuple[int, int, str, int]:
    """Write the thumbnail of ``source`` for (width, height, method) to ``dest``.
    Returns (its width, its height, its content type, its length)."""
    size = output_size(info, width, height, method)
    animate = animated and info.animated
    content_type = thumbnail_type(info, animate)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    temp = f"{dest}.{os.getpid()}.tmp"
    try:
        with Image.open(source) as img:
            if animate:
                frames, durations = [], []
                for index, frame in enumerate(ImageSequence.Iterator(img)):
                    if index >= MAX_FRAMES:
                        break
                    frames.append(_fit(frame.convert("RGBA"), size, method))
                    durations.append(int(frame.info.get("duration", 100) or 100))
                frames[0].save(temp, format="WEBP", save_all=True, append_images=frames[1:],
                               duration=durations, loop=int(img.info.get("loop", 0) or 0))
            else:
                if img.format == "JPEG":
                    # Decode at a reduced scale when that is still larger than needed.
                    img.draft("RGB", (size[0] * 2, size[1] * 2))
                frame = ImageOps.exif_transpose(img)
                thumb = _fit(_static_mode(frame, content_type), size, method)
                if content_type == "image/jpeg":
                    thumb.save(temp, format="JPEG", quality=80)
                else:
                    thumb.save(temp, format="PNG")
        os.replace(temp, dest)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    return size[0], size[1], content_type, os.path.getsize(dest)
