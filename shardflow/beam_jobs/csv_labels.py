"""Labels from a CSV file of image ids (`shardflow convert SRC OUT --labels FILE.csv`), in the shapes Kaggle ships:

  id,label             one class per image (Aerial Cactus `id,has_cactus`, Dog Breed `id,breed`)
  id,tags              tags in one column: space-separated (Planet `image_name,tags`) or `|`-separated
                       (ChestX-ray14 `Image Index,Finding Labels`)
  id,class1,class2...  one 0/1 column per class (Plant Pathology `image_id,healthy,multiple_diseases,rust,scab`)

`match` reads the file (`csv.Sniffer` finds the delimiter and quoting; UTF-8 with or without a BOM, CRLF or LF),
finds its id column (the one whose values name the source's files), its label column(s) and the separator
between tags, each where only one answer fits (else a one-line error says which option settles it), and joins its
rows to the source's files by id: a file's path or name, with or without its extension. An image without a row is
a reject ("no label"), a row without an image is listed, an id given twice is an error naming it. The dataset is
multi-label when some row names several classes (or `multi_label` says so): each label is then a label set, the
tuple of its class indices, numbered in `label_sets`.

It runs in the launcher, as the listing does: one entry per row, like the listing's one per input.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import posixpath
from collections.abc import Sequence
from typing import NamedTuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from shardflow.core import metadata
from shardflow.core.files import is_remote
from shardflow.core.images import IMAGE_EXTENSIONS

NO_SEPARATOR = "none"  # `label_separator` none: each value of the label column is one class name
SEPARATORS = ("|", ";")  # between tags in one column, detected when a value holds one (a comma: a class name's)
TAG_COLUMNS = ("tags", "labels")  # a column so named with spaces in its values holds space-separated tags
BINARY = {"0": False, "1": True, "0.0": False, "1.0": True}  # the values of one 0/1 column per class
DELIMITERS = ",;\t"  # between fields (`|` separates tags inside a field: ChestX-ray14)
SNIFF_BYTES = 64 * 1024
ID_SAMPLE = 1000  # rows whose values find the id column
NO_ROW = "no label: no row of {file} names it"
EMPTY_ROW = "no label: its row in {file} (line {line}) gives none"


class LabelsError(ValueError):
    """The labels file cannot label the source as asked; the message says which option settles it."""


@dataclasses.dataclass(frozen=True)
class LabelsSpec:
    """`--labels FILE.csv` and the options that settle what detection cannot (None: detect)."""

    path: str
    id_column: str | None = None
    label_columns: tuple[str, ...] | None = None  # one column of class names or tags, or one 0/1 column per class
    separator: str | None = None  # between tags; NO_SEPARATOR: none, each value is one class
    multi_label: bool = False  # multi-hot labels even when every row names one class


class Matched(NamedTuple):
    """The source's files joined to the rows: their labels, the images without one, the rows without an image."""

    labels: dict[str, int]  # path -> class index, or label set id (multi-label)
    no_label: dict[str, str]  # path -> reject reason, for images without a (non-empty) row
    without_images: list[tuple[int, str]]  # (line, id) of each row that names no file
    class_names: list[str]
    label_sets: list[tuple[int, ...]] | None  # multi-label: label set id -> its class indices, sorted
    source: metadata.LabelsFile


class _Table(NamedTuple):
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (line, fields)
    sha256: str


def match(spec: LabelsSpec, paths: Sequence[str], class_names: Sequence[str] | None = None) -> Matched:
    """Join `paths` (a source's files, relative to its root) to the rows of `spec.path`; `class_names` fixes the
    class order (it must hold every class the file names)."""
    table = _read(spec.path)
    name = posixpath.basename(spec.path.replace("\\", "/"))
    keys = _keys_by_path(paths)
    id_index = _id_column(table, spec, keys, name)
    label_indices = _label_columns(table, spec, id_index, name)
    columns = [table.header[i] for i in label_indices]
    separator = _separator(table, spec, label_indices, name) if len(label_indices) == 1 else None
    per_row = [_row_labels(fields, label_indices, columns, separator, line, name) for line, fields in table.rows]
    found = sorted({c for labels in per_row for c in labels}) if len(label_indices) == 1 else columns
    names = _class_names(found, class_names, name)
    multi_label = spec.multi_label or any(len(labels) > 1 for labels in per_row)
    index = {c: i for i, c in enumerate(names)}
    label_sets: dict[tuple[int, ...], int] = {}
    rows: dict[str, tuple[int, int | None]] = {}
    for (line, fields), labels in zip(table.rows, per_row):
        identifier = _clean_id(fields[id_index])
        if not identifier:
            raise LabelsError(f"{name}: line {line} has an empty id (column {table.header[id_index]!r})")
        if identifier in rows:
            raise LabelsError(
                f"{name}: id {identifier!r} is given twice (lines {rows[identifier][0]} and {line}); "
                "each image must have one row"
            )
        classes = tuple(sorted(index[c] for c in labels))
        label = label_sets.setdefault(classes, len(label_sets)) if multi_label else (classes[0] if classes else None)
        rows[identifier] = (line, label)
    assigned: dict[str, int] = {}
    no_label: dict[str, str] = {}
    used: dict[str, str] = {}  # id -> the file it names
    with_extension = 0
    for path, path_keys in keys.items():
        row_id = next((key for key in path_keys if key in rows), None)
        if row_id is None:
            if _is_image_name(path):
                no_label[path] = NO_ROW.format(file=name)
            continue
        if row_id in used:
            raise LabelsError(
                f"{name}: id {row_id!r} (line {rows[row_id][0]}) names two files, "
                f"{used[row_id]!r} and {path!r}; give ids with their folder or extension"
            )
        used[row_id] = path
        with_extension += row_id in (path_keys[0], path_keys[2])  # the path or the file name, extension kept
        line, label = rows[row_id]
        if label is None:
            no_label[path] = EMPTY_ROW.format(file=name, line=line)
        else:
            assigned[path] = label
    without = sorted((line, identifier) for identifier, (line, _) in rows.items() if identifier not in used)
    source = metadata.LabelsFile(
        path=spec.path,
        id_column=table.header[id_index],
        label_columns=tuple(columns),
        separator=separator,
        rows=len(rows),
        without_images=len(without),
        ids_with_extension=with_extension * 2 > len(used),
        sha256=table.sha256,
    )
    ordered = [classes for classes, _ in sorted(label_sets.items(), key=lambda item: item[1])]
    return Matched(assigned, no_label, without, names, ordered if multi_label else None, source)


def _read(path: str) -> _Table:
    """The header and rows of a CSV file (local or remote), in the dialect `csv.Sniffer` finds."""
    try:
        if is_remote(path):
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except (OSError, ValueError) as error:  # Beam raises BeamIOError (an IOError) or ValueError for a bad scheme
        raise LabelsError(f"`labels` {path}: cannot read it ({error})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise LabelsError(
            f"`labels` {path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); save it as UTF-8"
        ) from None
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:SNIFF_BYTES], delimiters=DELIMITERS)
    except csv.Error:  # one column, or too little text to tell: Excel's own dialect (commas)
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = [cell.strip() for cell in next(reader, [])]
        rows = [(reader.line_num, fields) for fields in reader if any(cell.strip() for cell in fields)]
    except csv.Error as error:
        raise LabelsError(f"`labels` {path}: line {reader.line_num}: {error}") from None
    if not any(header):
        raise LabelsError(f"`labels` {path}: empty; expected a header (e.g. id,label) and a row per image")
    named = [h for h in header if h]
    twice = sorted({h for h in named if named.count(h) > 1})
    if twice:
        raise LabelsError(f"`labels` {path}: column {twice[0]!r} appears twice in the header")
    for line, fields in rows:
        if len(fields) != len(header):
            raise LabelsError(f"`labels` {path}: line {line} has {len(fields)} fields, the header {len(header)}")
    if not rows:
        raise LabelsError(f"`labels` {path}: a header but no rows")
    return _Table(header, rows, hashlib.sha256(data).hexdigest())


def _keys_by_path(paths: Sequence[str]) -> dict[str, tuple[str, str, str, str]]:
    """The ids that name each file, most specific first: its path, without its extension, its file name, without
    its extension (`train/a.jpg`: train/a.jpg, train/a, a.jpg, a)."""
    keys = {}
    for path in paths:
        base = posixpath.basename(path)
        keys[path] = (path, os.path.splitext(path)[0], base, os.path.splitext(base)[0])
    return keys


def _clean_id(value: str) -> str:
    return value.strip().replace("\\", "/").removeprefix("./")


def _column(table: _Table, wanted: str, option: str, name: str) -> int:
    if wanted not in table.header:
        raise LabelsError(f"{name}: no column {wanted!r} ({option}); its columns: {_listed(table.header)}")
    return table.header.index(wanted)


def _id_column(table: _Table, spec: LabelsSpec, keys: dict[str, tuple[str, str, str, str]], name: str) -> int:
    """The column of image ids: `spec.id_column`, else the one whose values name the most files (among the first
    ID_SAMPLE rows)."""
    if spec.id_column is not None:
        return _column(table, spec.id_column, "`id_column`", name)
    every_key = {key for path_keys in keys.values() for key in path_keys}
    taken = set(spec.label_columns or ())
    hits = {
        i: sum(_clean_id(fields[i]) in every_key for _, fields in table.rows[:ID_SAMPLE])
        for i, column in enumerate(table.header)
        if column and column not in taken
    }
    best = max(hits.values(), default=0)
    if not best:
        example = next(iter(keys), "(none)")
        raise LabelsError(
            f"{name}: no column names the source's files (e.g. {example!r}; ids match a file's path "
            f"or name, with or without its extension); its columns: {_listed(table.header)}; pass "
            "`id_column`"
        )
    tied = [table.header[i] for i, count in hits.items() if count == best]
    if len(tied) > 1:
        raise LabelsError(f"{name}: columns {_listed(tied)} all name the source's files; pass `id_column`")
    return next(i for i, count in hits.items() if count == best)


def _label_columns(table: _Table, spec: LabelsSpec, id_index: int, name: str) -> list[int]:
    """The label column(s): `spec.label_columns`, else the only column besides the id, or every other column when
    all hold only 0 and 1 (one per class). Columns without a name and without values (a trailing comma) are not
    columns."""
    if spec.label_columns is not None:
        indices = [_column(table, column, "`label_columns`", name) for column in spec.label_columns]
        if id_index in indices:
            raise LabelsError(f"{name}: column {table.header[id_index]!r} is the id column, not a label column")
        return indices
    others = [
        i
        for i, column in enumerate(table.header)
        if i != id_index and (column or any(fields[i].strip() for _, fields in table.rows))
    ]
    if len(others) == 1:
        return others
    if len(others) > 1 and all(_binary(table, i) for i in others):
        return others
    if not others:
        raise LabelsError(f"{name}: no label column besides the id column {table.header[id_index]!r}")
    raise LabelsError(
        f"{name}: which of its columns {_listed([table.header[i] for i in others])} holds the labels? "
        "Pass `label_columns` NAME (class names or tags) or NAME,NAME,... (one 0/1 column per class)"
    )


def _binary(table: _Table, index: int) -> bool:
    return all(fields[index].strip() in BINARY for _, fields in table.rows)


def _separator(table: _Table, spec: LabelsSpec, label_indices: list[int], name: str) -> str | None:
    """The separator between tags in the one label column (None: each value is one class name)."""
    if spec.separator is not None:
        return None if spec.separator == NO_SEPARATOR else spec.separator
    (index,) = label_indices
    values = [fields[index].strip() for _, fields in table.rows]
    column = table.header[index]
    found = [sep for sep in SEPARATORS if any(sep in value for value in values)]
    if len(found) > 1:
        raise LabelsError(
            f"{name}: values of column {column!r} hold both {found[0]!r} and {found[1]!r}; pass "
            "`label_separator` (the one between tags), or `label_separator` none"
        )
    if found:
        return found[0]
    spaced = next((value for value in values if len(value.split()) > 1), None)
    if spaced is None:
        return None
    if column.lower() in TAG_COLUMNS:
        return " "
    raise LabelsError(
        f"{name}: values of column {column!r} hold spaces (e.g. {spaced!r}): pass `label_separator` "
        "' ' if they are space-separated tags, or `label_separator` none if they are class names"
    )


def _row_labels(
    fields: list[str], label_indices: list[int], columns: list[str], separator: str | None, line: int, name: str
) -> list[str]:
    """The class names one row gives its image."""
    if len(label_indices) > 1:
        labels = []
        for index, column in zip(label_indices, columns):
            value = fields[index].strip()
            if value not in BINARY:
                raise LabelsError(
                    f"{name}: line {line}, column {column!r}: {value!r} is not 0 or 1 (one 0/1 column per class)"
                )
            labels += [column] if BINARY[value] else []
        return labels
    value = fields[label_indices[0]].strip()
    if separator is None:
        return [value] if value else []
    tags = value.split() if separator == " " else value.split(separator)
    return list(dict.fromkeys(tag.strip() for tag in tags if tag.strip()))


def _class_names(found: list[str], given: Sequence[str] | None, name: str) -> list[str]:
    if given:
        unknown = [c for c in found if c not in given]
        if unknown:
            raise LabelsError(f"{name}: classes {unknown[:10]} are not in --class-names {list(given)}")
        return list(given)
    if len(found) < 2:
        raise LabelsError(f"{name}: only {len(found)} class ({_listed(found)}); a classifier needs at least two")
    return found


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:12])
    return shown + (f" and {len(names) - 12} more" if len(names) > 12 else "") if names else "none"
