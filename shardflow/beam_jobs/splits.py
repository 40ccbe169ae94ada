"""Deterministic split assignment by a stable hash of the relative path (exact counts per class take records in
that hash order: `convert.take_counts`).

A file's split depends only on its path (and, for `split_counts`, on which files of its class are valid),
never on the run, the runner, the worker count or the order in which workers see files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shardflow.core.metadata import TEST, TRAIN, VALIDATION
from shardflow.core.record_order import stable_hash

DEFAULT_SPLITS = {TRAIN: 0.8, VALIDATION: 0.1, TEST: 0.1}
KNOWN_SPLITS = (TRAIN, VALIDATION, TEST)  # the names the trainer looks for
ALIASES = {"val": VALIDATION, "valid": VALIDATION, "dev": VALIDATION}


def parse_splits(text: str) -> dict[str, float]:
    """`train=0.8,validation=0.1,test=0.1` -> fractions that must add up to 1 (`check_fractions`)."""
    fractions = _parse(text, float, "splits")
    check_fractions(fractions)
    return {name: value for name, value in fractions.items() if value > 0}


def check_fractions(fractions: Mapping[str, float]) -> None:
    """ValueError unless the fractions of `splits` are not negative and add up to 1."""
    if any(v < 0 for v in fractions.values()):
        raise ValueError(f"`splits` {format_splits(fractions)!r}: fractions must not be negative")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(
            f"`splits` {format_splits(fractions)!r}: fractions add up to {sum(fractions.values()):g}, not 1"
        )


def format_splits(values: Mapping[str, float | int]) -> str:
    """The inverse of `parse_splits` / `parse_split_counts`: `train=0.8,validation=0.1,test=0.1`."""
    return ",".join(f"{name}={value:g}" for name, value in values.items())


def parse_split_counts(text: str) -> dict[str, int]:
    """`train=1000,validation=500,test=500` -> exact number of records per class and split."""
    counts = _parse(text, int, "split_counts")
    check_counts(counts)
    return {name: value for name, value in counts.items() if value > 0}


def check_counts(counts: Mapping[str, int]) -> None:
    """ValueError for a negative count in `split_counts`."""
    if any(v < 0 for v in counts.values()):
        raise ValueError(f"`split_counts` {format_splits(counts)!r}: counts must not be negative")


def check_names(names: Iterable[str], parameter: str, other_names: bool) -> None:
    """Refuse split names the trainer will not look for in the `parameter`, unless `other_names`
    (`other_split_names`)."""
    unknown = [name for name in names if name not in KNOWN_SPLITS]
    if unknown and not other_names:
        raise ValueError(
            f"`{parameter}`: split name(s) {', '.join(map(repr, unknown))}: `shardflow train` trains "
            f"on {TRAIN!r}, validates on {VALIDATION!r} ({', '.join(ALIASES)} mean it too) and reports "
            f"on {TEST!r}; pass `other_split_names` to keep other names"
        )


def _parse(text: str, kind: type, parameter: str) -> dict:
    values = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"`{parameter}` {text!r}: expected NAME=VALUE pairs, e.g. {format_splits(DEFAULT_SPLITS)}")
        name = ALIASES.get(name.strip(), name.strip())
        if name in values:
            raise ValueError(f"`{parameter}` {text!r}: {name!r} is given twice")
        try:
            values[name] = kind(value)
        except ValueError:
            raise ValueError(f"`{parameter}` {text!r}: {value!r} is not a valid {kind.__name__}") from None
    if not values:
        raise ValueError(f"`{parameter}` {text!r}: no splits given")
    return values


def split_for(path: str | bytes, fractions: Mapping[str, float]) -> str:
    """The split of `path` under `fractions` (cumulative, in the order given)."""
    return split_for_hash(stable_hash(path), fractions)


def split_of(
    fixed: str | None, path_hash: int, fractions: Mapping[str, float] | None, validation_from_train: float | None
) -> str | None:
    """A record's split: the source's own (`fixed`; its train split less `validation_from_train`, which goes to
    validation), else by `fractions` of its path hash (None: left to `split_counts`)."""
    if fixed == TRAIN and validation_from_train:
        return split_for_hash(path_hash, {VALIDATION: validation_from_train, TRAIN: 1 - validation_from_train})
    if fixed:
        return fixed
    return split_for_hash(path_hash, fractions) if fractions else None


def split_for_hash(path_hash: int, fractions: Mapping[str, float]) -> str:
    """`split_for`, given the path's `stable_hash`."""
    point = path_hash / 2**64
    cumulative = 0.0
    for name, fraction in fractions.items():
        cumulative += fraction
        if point < cumulative:
            return name
    return name  # rounding: the last split takes the remainder
