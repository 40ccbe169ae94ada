"""TFRecord framing (length, masked CRC-32C of the length, data, masked CRC-32C of the data): written and read.

Written here, rather than through TensorFlow, so Beam workers never import TensorFlow (~3 s and ~0.5 GB each);
`google_crc32c` is the C implementation TensorFlow itself uses.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import IO

import google_crc32c

_MASK_DELTA = 0xA282EAD8
HEADER_BYTES = 12  # before the data: its length (8 bytes, little-endian) and the length's masked CRC (4)
FOOTER_BYTES = 4  # after the data: its masked CRC


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """`record` framed as one TFRecord entry."""
    length = struct.pack("<Q", len(record))
    return b"".join((length, struct.pack("<I", masked_crc(length)), record, struct.pack("<I", masked_crc(record))))


def unframe(stream: IO[bytes], digest=None) -> Iterator[bytes]:
    """The records of a TFRecord stream, checking both CRCs of each (ValueError naming the record); `digest`
    (a hashlib object), when given, sees every byte read."""
    index = 0
    while True:
        header = stream.read(HEADER_BYTES)
        if digest is not None:
            digest.update(header)
        if not header:
            return
        if len(header) < HEADER_BYTES:
            raise ValueError(f"truncated after record {index}: partial record header")
        (length,) = struct.unpack("<Q", header[:8])
        if struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
            raise ValueError(f"record {index}: length CRC mismatch (corrupted header)")
        body = stream.read(length + FOOTER_BYTES)
        if digest is not None:
            digest.update(body)
        if len(body) < length + FOOTER_BYTES:
            raise ValueError(f"truncated in record {index}")
        data = body[:length]
        if struct.unpack("<I", body[length:])[0] != masked_crc(data):
            raise ValueError(f"record {index}: data CRC mismatch (corrupted bytes)")
        yield data
        index += 1


def framed_sizes(stream: IO[bytes]) -> Iterator[int]:
    """The framed size of each record of a seekable TFRecord stream, from its headers alone (the data is skipped,
    neither read nor checked; ValueError on a partial header)."""
    while header := stream.read(HEADER_BYTES):
        if len(header) < HEADER_BYTES:
            raise ValueError("truncated record header")
        (length,) = struct.unpack("<Q", header[:8])
        stream.seek(length + FOOTER_BYTES, 1)
        yield HEADER_BYTES + length + FOOTER_BYTES
