"""An image's type from its first bytes (its magic number), never from a claimed MIME.

A leaf module (it imports nothing of chatcompat): the request checks
(:mod:`chatcompat.images`) and the backends that fetch images (``pi``) both use it.
The types are the ones OpenClaw's chat endpoint takes; SVG (script) and PDF are not
images here.
"""

from __future__ import annotations

# ISO BMFF major brands (bytes 8-12, after "ftyp") of HEIF files: the HEVC-coded ones
# are image/heic, the generic image and sequence brands image/heif.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})

#: Every type :func:`sniff` can tell (the values ``images.allowedMimes`` may list).
SNIFFED_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/heic",
                 "image/heif")  # fmt: skip


def sniff(data: bytes) -> str | None:
    """The image type of ``data`` by its magic bytes, or None when it is none of
    :data:`SNIFFED_TYPES` (text, SVG, PDF, truncated...).

    :param data: the image's bytes (the first 16 are enough).
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIC_BRANDS:
            return "image/heic"
        if brand in _HEIF_BRANDS:
            return "image/heif"
    return None
