"""What makes two images duplicates, and how groups of them are found without comparing every pair.

- **Exact duplicates** decode to the same pixels: `ImageHashes.exact` is a SHA-256 of the decoded image's mode,
  size and pixels (a renamed copy, a PNG re-saved as another PNG or BMP, a JPEG whose metadata changed).
- **Near duplicates** look the same: `ImageHashes.perceptual` is pHash (the signs, against their median, of the
  8x8 lowest frequencies of the DCT of a 32x32 grayscale thumbnail), and two images are near duplicates when
  their hashes differ in at most `NEAR_THRESHOLD` of 64 bits (a re-encode at JPEG quality 30, a 50% downscale,
  a JPEG's PNG copy), their colours agree (`ImageHashes.colour`, a 4x4 RGB thumbnail, within a mean absolute
  difference of `COLOUR_TOLERANCE` levels) and so does their finer structure (`ImageHashes.structure`, a 16x16
  grayscale thumbnail, within `STRUCTURE_TOLERANCE` levels root mean square). pHash alone sees coarse grayscale
  structure, so photos of alike structure in other colours pass it (and fail the colour check), and so do
  different handwritten digits, centred alike: of 3,000 MNIST-like digits, 2,696 pairs pass pHash and colour,
  318 of them different digits, and none the structure check (benchmarks/dedupe.py: the closest of those pairs is
  11.9 levels apart, a JPEG quality 30 copy of a digit at most 6.8, a downscaled copy of a photo 4.0). pHash
  rather than dHash: on photo-like images with smooth backgrounds dHash's bits are mostly alike, and of 180,000
  pairs of distinct sample images 36 came within 6 bits (pHash: none; 2 of 4.5 million). The median splits the
  bits: a photo's pHash has 32 set, and distances between photos are even. Flat images have no structure to hash:
  all of them hash alike, and only their colours tell them apart.
- **Candidates** come from a banded index: the 64 bits are cut into `NEAR_THRESHOLD + 1` bands, and only hashes
  that share a band's value are compared (then their thumbnails). Two hashes within the threshold differ in fewer
  bits than there are bands, so one band at least holds none of their differences (pigeonhole): no pair is
  missed, and no pass compares all pairs.
- **Groups** are the connected components of "is a duplicate of" (union-find), each listed by index in the
  order given; callers sort images by path first, so a group's first member (the one `--dedupe` keeps) is its
  smallest path.

Needs no Beam and no TensorFlow (the per-image part runs inside `images.prepare`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

KINDS = ("exact", "near")
NEAR_THRESHOLD = 6  # max differing bits of two near duplicates' 64-bit perceptual hashes
COLOUR_TOLERANCE = 8  # max mean absolute difference (of 255 levels) of two near duplicates' colour thumbnails
THUMBNAIL = 32  # side of the thumbnail the DCT is taken of (in grayscale) and the colour thumbnail reduced from
COLOUR_CELLS = 4  # the colour thumbnail is COLOUR_CELLS x COLOUR_CELLS RGB pixels
STRUCTURE_CELLS = 16  # the structure thumbnail is STRUCTURE_CELLS x STRUCTURE_CELLS grayscale pixels
STRUCTURE_TOLERANCE = 9  # max root-mean-square difference (levels) of two near duplicates' structure thumbnails
_LOW = 8  # the 8x8 lowest frequencies make the 64 bits
_DCT = np.cos(np.pi * (2 * np.arange(THUMBNAIL)[None, :] + 1) * np.arange(_LOW)[:, None] / (2 * THUMBNAIL))
_DCT_2D = np.kron(_DCT, _DCT)  # the 8x8 lowest frequencies of a flattened 32x32 thumbnail, in one product
KEY_SIDE = 64  # near keys are taken from the image reduced by a power of two to a shorter side of 64-127 px
BANDS = NEAR_THRESHOLD + 1  # the 64 bits cut into this many bands: near duplicates share one band's value
_BAND_STARTS = [64 * b // BANDS for b in range(BANDS + 1)]
BAND_VALUES = 1 << max(stop - start for start, stop in zip(_BAND_STARTS, _BAND_STARTS[1:]))  # a band's values


class ImageHashes(NamedTuple):
    """One decoded image's keys: `exact` (16 bytes) for exact duplicates; `perceptual` (64 bits), `colour`
    (`COLOUR_CELLS`² RGB pixels, 48 bytes) and `structure` (`STRUCTURE_CELLS`² gray pixels, 256 bytes) for near
    ones."""

    exact: bytes
    perceptual: int
    colour: bytes
    structure: bytes


def key_reduction(size: tuple[int, int]) -> int:
    """The power of two (1, 2, 4, ...) that brings an image of `size` to a shorter side of `KEY_SIDE` to
    2 * `KEY_SIDE` - 1 pixels; 1 for a smaller image."""
    return 1 << max(0, (min(size) // KEY_SIDE).bit_length() - 1)


def image_hashes(image: Image.Image, pixels: np.ndarray | None = None) -> ImageHashes:
    """The exact key (of every pixel), the perceptual hash and the colour and structure thumbnails (of the image
    averaged down by `key_reduction`) of a decoded 8-bit L or RGB image; `pixels`, when the caller has them, are
    the image's as a contiguous array (the bytes `image.tobytes()` gives, without its copy).

    Near keys are taken at a like resolution whatever the image's size and format: a JPEG is decoded at that DCT
    scale to begin with (`images.prepare_encoded`), and its PNG copy, averaged down to the same size, gets keys
    as close as a second JPEG's would be."""
    exact = hashlib.sha256(f"{image.mode} {image.width}x{image.height} ".encode())
    exact.update(image.tobytes() if pixels is None else pixels.data)
    reduction = key_reduction(image.size)
    if reduction > 1:
        image = image.reduce(reduction)
    thumbnail = image.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX)
    gray = thumbnail.convert("L")
    colour = (thumbnail if thumbnail.mode == "RGB" else thumbnail.convert("RGB")).reduce(THUMBNAIL // COLOUR_CELLS)
    structure = gray.reduce(THUMBNAIL // STRUCTURE_CELLS).tobytes()
    return ImageHashes(exact.digest()[:16], perceptual_hash(gray), colour.tobytes(), structure)


def perceptual_hash(thumbnail: Image.Image) -> int:
    """pHash: 64 bits, one per low DCT frequency of a `THUMBNAIL`-square grayscale thumbnail, set where it exceeds
    the median (the constant term left out of the median)."""
    frequencies = np.round(_DCT_2D @ np.frombuffer(thumbnail.tobytes(), dtype=np.uint8), 6)  # flat: exactly 0
    median = np.partition(frequencies[1:], _LOW * _LOW // 2 - 1)[_LOW * _LOW // 2 - 1]  # of 63: the 32nd
    bits = frequencies > median
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Differing bits of 64-bit hashes, element by element."""
    return np.bitwise_count(np.bitwise_xor(a, b))


def is_near(a: ImageHashes, b: ImageHashes) -> bool:
    """Whether two images are near duplicates (by `near_pairs`, the one place that says what near is)."""
    return near_pairs(*near_columns([a, b])) == [(0, 1)]


def colour_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute differences of colour thumbnails (rows of uint8), row by row."""
    return np.abs(a.astype(np.int16) - b).mean(axis=-1)


def structure_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square differences of structure thumbnails (rows of uint8), row by row."""
    return np.sqrt(np.square(a.astype(np.float64) - b).mean(axis=-1))


def byte_rows(values: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Equal-length byte strings (thumbnails, or a column of them) as rows of uint8."""
    if isinstance(values, np.ndarray):
        return np.ascontiguousarray(values).view(np.uint8).reshape(len(values), values.dtype.itemsize)
    return np.frombuffer(b"".join(bytes(v) for v in values), dtype=np.uint8).reshape(len(values), -1)


def near_columns(keys: Sequence[ImageHashes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What `near_pairs` compares of `keys`: their perceptual hashes, colour rows and structure rows."""
    return (
        np.array([k.perceptual for k in keys], dtype=np.uint64),
        byte_rows([k.colour for k in keys]),
        byte_rows([k.structure for k in keys]),
    )


def find_groups(keys: Sequence[ImageHashes], kind: str) -> list[list[int]]:
    """Groups of 2+ images that are duplicates of `kind` ("exact" or "near": exact ones included), each a sorted
    list of indices into `keys`, groups in the order of their first member."""
    check_kind(kind)
    pairs = equal_pairs([k.exact for k in keys])
    if kind == "near":
        pairs += near_key_pairs(*near_columns(keys))
    return components(len(keys), pairs)


def equal_pairs(keys: Sequence[Hashable]) -> list[tuple[int, int]]:
    """(first index with the key, index) for every later index with the same key: enough pairs to connect them."""
    first: dict[Hashable, int] = {}
    return [(first[key], index) for index, key in enumerate(keys) if first.setdefault(key, index) != index]


def near_key_pairs(
    hashes: np.ndarray, colours: np.ndarray, structures: np.ndarray, bands: Sequence[int] = range(BANDS)
) -> list[tuple[int, int]]:
    """Pairs that connect the near duplicates among images' near keys (`near_columns`; exact keys not looked at):
    identical near keys are chained to their first and compared once, the others by `near_pairs` with
    candidates from `bands`."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    rows = np.concatenate([hashes.view(np.uint8).reshape(len(hashes), 8), colours, structures], axis=1)
    _, firsts, inverse = np.unique(rows.view(f"V{rows.shape[1]}").ravel(), return_index=True, return_inverse=True)
    first_of = firsts[inverse]
    later = np.flatnonzero(first_of != np.arange(len(rows)))
    firsts = np.sort(firsts)
    near = near_pairs(hashes[firsts], colours[firsts], structures[firsts], bands)
    return list(zip(first_of[later].tolist(), later.tolist())) + [(int(firsts[a]), int(firsts[b])) for a, b in near]


def components(count: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """The connected components of 2+ of `count` indices joined by `pairs`, each sorted, in the order of their
    first member (union-find)."""
    parent = list(range(count))
    for a, b in pairs:
        _union(parent, a, b)
    members: dict[int, list[int]] = {}
    for index in range(count):
        members.setdefault(_find(parent, index), []).append(index)
    return [group for group in members.values() if len(group) > 1]


def check_kind(kind: str, parameter: str = "kind") -> None:
    """ValueError unless `kind` is one of `KINDS`, naming the `parameter` that gave it (e.g. "dedupe")."""
    if kind not in KINDS:
        raise ValueError(f"`{parameter}` is {' or '.join(KINDS)}, not {kind!r}")


def near_pairs(
    hashes: np.ndarray, colours: np.ndarray, structures: np.ndarray, bands: Sequence[int] = range(BANDS)
) -> list[tuple[int, int]]:
    """Index pairs (i < j) of images whose 64-bit `hashes` are within `NEAR_THRESHOLD` bits, from the banded
    index (candidates: images whose first band with the same value is one of `bands`, so the pairs of each band
    can be found apart and each pair once), whose `colours` are within `COLOUR_TOLERANCE` and whose `structures`
    within `STRUCTURE_TOLERANCE` (thumbnails as rows of `byte_rows`)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    found: set[tuple[int, int]] = set()
    for number in bands:
        for a, b in _close_pairs_in_band(hashes, number):
            alike = (colour_distances(colours[a], colours[b]) <= COLOUR_TOLERANCE) & (
                structure_distances(structures[a], structures[b]) <= STRUCTURE_TOLERANCE
            )
            found.update(zip(np.minimum(a, b)[alike].tolist(), np.maximum(a, b)[alike].tolist()))
    return sorted(found)


def _close_pairs_in_band(hashes: np.ndarray, number: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Blocks of (first, second) indices: every pair of images whose hashes are within `NEAR_THRESHOLD` bits and
    share no band before `number` but share band `number` (images with equal hashes: band 0)."""
    unique, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")  # images by hash
    starts = np.cumsum(counts) - counts
    if number == 0:
        yield from _pairs_within(order, inverse[order])  # equal hashes
    for u, v in _close_hashes(unique, number):
        per_pair = counts[u] * counts[v]
        if (per_pair == 1).all():
            yield order[starts[u]], order[starts[v]]
            continue
        combination = np.arange(per_pair.sum()) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
        u, v = np.repeat(u, per_pair), np.repeat(v, per_pair)
        yield order[starts[u] + combination // counts[v]], order[starts[v] + combination % counts[v]]


SHORT_RUN = 128  # hashes sharing a key that are compared all with all; more are cut by sub-bands first


def _close_hashes(unique: np.ndarray, number: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Blocks of index pairs of distinct `unique` hashes within `NEAR_THRESHOLD` bits that share band `number`.

    Hashes are not uniform (smooth images, digits): thousands can share a band's value, and comparing them all
    is quadratic in the dataset. A crowded key is cut by `BANDS` sub-bands of the bits its hashes may still
    differ in (two hashes within the threshold agree on one of them, as they agree on a band), again and again
    while that at least halves the pairs to compare."""
    band_bits = range(_BAND_STARTS[number], _BAND_STARTS[number + 1])
    pending = [(np.arange(len(unique)), band_values(unique, number), [b for b in range(64) if b not in band_bits])]
    while pending:
        members, keys, free_bits = pending.pop()
        _, group, sizes = np.unique(keys, return_inverse=True, return_counts=True)
        crowded = sizes[group] > SHORT_RUN
        subs = [sub.tolist() for sub in np.array_split(np.array(free_bits), BANDS)]
        crowd = group[crowded].astype(np.uint64)
        cut = [(crowd << np.uint64(len(sub))) | _bits_value(unique[members[crowded]], sub) for sub in subs]
        if len(free_bits) < 2 * BANDS or 2 * sum(map(_pair_count, cut)) >= _pair_count(crowd):
            crowded[:] = False  # cutting would not pay: compare them all
        yield from _close(unique, _pairs_within(members[~crowded], group[~crowded]), number)
        if crowded.any():
            pending += [
                (members[crowded], keys, [bit for bit in free_bits if bit not in sub]) for sub, keys in zip(subs, cut)
            ]


def _close(
    hashes: np.ndarray, pairs: Iterable[tuple[np.ndarray, np.ndarray]], number: int
) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """The `pairs` (blocks of index arrays) whose hashes are within `NEAR_THRESHOLD` bits and share no band before
    band `number` (the band that finds them; each pair is compared once)."""
    for a, b in pairs:
        close = hamming(hashes[a], hashes[b]) <= NEAR_THRESHOLD
        a, b = a[close], b[close]
        first, second = hashes[a], hashes[b]
        keep = np.ones(len(a), dtype=bool)
        for earlier in range(number):
            keep &= band_values(first, earlier) != band_values(second, earlier)
        yield a[keep], b[keep]


def _pair_count(keys: np.ndarray) -> int:
    """How many pairs share a key."""
    sizes = np.unique(keys, return_counts=True)[1].astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


# Pairs handed out at once: bounds the memory of a long run (a duplicate part of 600,000 images peaked at 58 MiB
# with 65,536, at 107 MiB with 1M, in the same time).
_BLOCK = 1 << 16


def _pairs_within(indices: np.ndarray, keys: np.ndarray) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Every pair of `indices` with equal `keys`, as blocks of (first, second) index arrays of at most about
    `_BLOCK` pairs, without a Python step per key."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(keys) else np.array([], int)
    sizes = np.diff(np.r_[starts, len(order)])
    position = np.arange(len(order))
    partners = np.repeat(starts + sizes, sizes) - 1 - position  # the later positions of the same key
    total = np.cumsum(partners)
    cuts = np.searchsorted(total, np.arange(_BLOCK, total[-1] if len(total) else 0, _BLOCK), side="right")
    for first_positions in np.split(position, cuts):
        counts = partners[first_positions]
        if counts.sum():
            firsts = np.repeat(first_positions, counts)
            seconds = firsts + np.arange(len(firsts)) - np.repeat(np.cumsum(counts) - counts, counts) + 1
            yield indices[order[firsts]], indices[order[seconds]]


def _bits_value(hashes: np.ndarray, bits: list[int]) -> np.ndarray:
    """The number that `bits` of each 64-bit hash make."""
    value = np.zeros(len(hashes), dtype=np.uint64)
    for place, bit in enumerate(bits):
        value |= ((hashes >> np.uint64(bit)) & np.uint64(1)) << np.uint64(place)
    return value


def band_values(hashes: np.ndarray, number: int) -> np.ndarray:
    """The value of band `number` (of `BANDS`) of each 64-bit hash."""
    start, stop = _BAND_STARTS[number], _BAND_STARTS[number + 1]
    return (np.asarray(hashes, dtype=np.uint64) >> np.uint64(start)) & np.uint64((1 << (stop - start)) - 1)


def _find(parent: list[int], index: int) -> int:
    root = index
    while parent[root] != root:
        root = parent[root]
    while parent[index] != root:  # path compression
        parent[index], index = root, parent[index]
    return root


def _union(parent: list[int], a: int, b: int) -> None:
    """Join the sets of `a` and `b` under the smaller root (so roots, and groups, do not depend on the order)."""
    root_a, root_b = _find(parent, a), _find(parent, b)
    parent[max(root_a, root_b)] = min(root_a, root_b)
