"""Image types by their magic bytes."""

from __future__ import annotations

import pytest

from chatcompat.image_types import SNIFFED_TYPES
from chatcompat.image_types import sniff
from chatcompat.settings import DEFAULT_IMAGE_MIMES
from tests.image_server import PNG
from tests.image_server import SVG


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"GIF89a\x01\x00\x01\x00", "image/gif"),
        (b"GIF87a\x01\x00\x01\x00", "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "image/heic"),
        (b"\x00\x00\x00\x18ftyphevc\x00\x00\x00\x00", "image/heic"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00", "image/heif"),
        (b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00", None),  # AVIF: not taken
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00", None),  # an MP4 video
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),  # a WAV file
        (SVG, None),
        (b"%PDF-1.7\n", None),
        (b"\x89PNG", None),  # truncated signature
        (b"", None),
    ],
)
def test_sniff(data, expected):
    assert sniff(data) == expected


def test_the_default_types_are_all_sniffed():
    assert set(DEFAULT_IMAGE_MIMES) <= set(SNIFFED_TYPES)
