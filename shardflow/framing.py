"""TFRecord framing (length, masked CRC-32C of the length, data, masked CRC-32C of the data).

Written here, rather than through TensorFlow, so Beam workers never import TensorFlow (~3 s and ~0.5 GB each);
`google_crc32c` is the C implementation TensorFlow itself uses.
"""
from __future__ import annotations

import struct

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


def framed_size(data_length: int) -> int:
    """The bytes one record of `data_length` bytes takes in a TFRecord file."""
    return HEADER_BYTES + data_length + FOOTER_BYTES
