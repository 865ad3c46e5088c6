"""Reading images members send, safely, and making them small enough for a model. Pure and
blocking (Pillow): callers run these in a worker thread, never on the event loop.

A hostile member can send a file that claims to be an image and is not, or a small file that
decodes to billions of pixels (a decompression bomb): the header's dimensions are checked against
`max_pixels` before anything is decoded, and Pillow's own bomb check is kept as a second line."""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Formats a model accepts and a member's client sends; anything else is refused.
ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "WEBP", "BMP"})


class ImageRejected(Exception):
    """The file is no image we accept; `str()` says why, for the member."""


@dataclass(frozen=True)
class ImageFacts:
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class ModelImage:
    """An image ready for a model: encoded small, as a data URL."""

    data: bytes
    mimetype: str
    width: int
    height: int

    @property
    def data_url(self) -> str:
        return f"data:{self.mimetype};base64,{base64.b64encode(self.data).decode('ascii')}"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageRejected("this file is not an image I can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("this image has too many pixels") from None
    if image.format not in ACCEPTED_FORMATS:
        raise ImageRejected(f"images in {image.format or 'this'} format are not supported")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageRejected("this image has no pixels")
    if width * height > max_pixels:
        raise ImageRejected(
            f"this image is too large ({width}×{height} pixels; at most "
            f"{max_pixels:,} pixels are accepted)"
        )
    return image


def inspect_image(data: bytes, *, max_pixels: int) -> ImageFacts:
    """Check `data` is an image of at most `max_pixels`, reading its header and verifying the
    file, without decoding the pixels. Raises ImageRejected."""
    image = _open(data, max_pixels)
    facts = ImageFacts(image.size[0], image.size[1], image.format or "")
    try:
        image.verify()
    except Exception:
        raise ImageRejected("this image is damaged") from None
    return facts


def for_model(data: bytes, *, max_side: int, max_pixels: int) -> ModelImage:
    """Decode (first frame only), shrink to fit `max_side` on the longest side (never enlarge),
    and encode: JPEG, or PNG when the image has transparency. Raises ImageRejected."""
    image = _open(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))  # decode at a fraction of the size
            image.seek(0)
            image.load()
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            transparent = image.mode in ("RGBA", "LA", "PA") or (
                image.mode == "P" and "transparency" in image.info
            )
            out = io.BytesIO()
            if transparent:
                image.convert("RGBA").save(out, "PNG", optimize=True)
                mimetype = "image/png"
            else:
                image.convert("RGB").save(out, "JPEG", quality=85)
                mimetype = "image/jpeg"
    except ImageRejected:
        raise
    except Exception:
        raise ImageRejected("this image is damaged") from None
    return ModelImage(out.getvalue(), mimetype, image.size[0], image.size[1])


def png_facts(data: bytes) -> ImageFacts | None:
    """Width and height of an image the model made (for the m.image info), or None."""
    try:
        return inspect_image(data, max_pixels=100_000_000)
    except ImageRejected:
        return None
