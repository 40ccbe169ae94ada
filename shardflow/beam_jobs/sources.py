"""Find the inputs of a source and read them back: folders, zip and tar archives (read in place), IDX files.

`list_source` runs once, in the launching process: it detects the layout (Kaggle flat names, class folders,
predefined train/validation/test folders, IDX pairs), fixes the class names and cuts the inputs into `ReadTask`s
that Beam workers read independently. Nothing is extracted to disk.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import lzma
import math
import mmap
import os
import posixpath
import re
import struct
import sys
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from shardflow.beam_jobs import csv_labels
from shardflow.beam_jobs.options import LAYOUTS, check_zip_encoding
from shardflow.core.files import is_remote
from shardflow.core.images import IMAGE_EXTENSIONS
from shardflow.core.metadata import LabelsFile
from shardflow.core.schema import UNLABELED

SPLIT_FOLDERS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
IDX_SPLITS = {"train": "train", "t10k": "test"}
_IDX_IMAGES = re.compile(r"^(train|t10k)-images[.-]idx3-ubyte(\.gz)?$")
FILES_PER_TASK = 32
IDX_IMAGES_PER_TASK = 1000  # IDX files are mapped: cheap to index
STREAM_TASKS = 4  # a compressed tar is decompressed from its start by each task: few tasks, few passes
# What operating systems leave beside files, besides hidden (dot) files and folders such as AppleDouble `._x`
# twins, `.DS_Store` and `.Spotlight-V100/`: never data.
DEBRIS_FILES = {"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"}
DEBRIS_FOLDERS = {"__macosx", "$recycle.bin", "system volume information"}
ENCRYPTED = "encrypted, password required"
ZIP_UTF8_FLAG = 0x800  # general purpose bit 11: the member's name is UTF-8
ZIP_UNICODE_PATH = 0x7075  # Info-ZIP's Unicode Path extra field: version 1, CRC32 of the stored name, UTF-8 name


class SourceError(ValueError):
    """The source cannot be converted as asked; the message says what to do."""


@dataclasses.dataclass(frozen=True, slots=True)  # slots: the launcher holds one per input
class InputFile:
    """One input: `path` is relative to the source root (the record's `image/filename`)."""

    path: str
    label: int | None  # None: the file name carries no class (rejected once it is known to be an image)
    split: str | None  # fixed by the source layout, else chosen by the split rules
    member: str  # where its task's container holds it: path under the folder, archive member name or IDX index


@dataclasses.dataclass(frozen=True)
class ReadTask:
    """A batch of inputs a worker reads together from one container."""

    kind: str  # "folder" | "zip" | "tar" (uncompressed: seek to each member) | "tar-stream" | "idx"
    container: str  # folder root, archive, or IDX images file
    files: tuple[InputFile, ...]
    labels_file: str = ""  # IDX only

    def read(self) -> Iterator[tuple[InputFile, bytes | np.ndarray | OSError]]:
        """Yield each input with its bytes (IDX: pixels), or the error that prevented reading it."""
        yield from _READERS[self.kind](self)


@dataclasses.dataclass
class SourceListing:
    """Everything the job needs to know about a source before reading any image."""

    layout: str
    class_names: list[str]
    tasks: list[ReadTask]
    rejects: list[tuple[str, str]]  # (path, reason) known from the listing alone
    ignored: list[str]  # files beside the dataset that are not inputs (LICENSE.txt, readme...)
    default_channels: int = 3
    debris: list[str] = dataclasses.field(default_factory=list)  # OS and hidden files, skipped by rule
    warnings: list[str] = dataclasses.field(default_factory=list)  # likely mistakes in the source
    label_sets: list[tuple[int, ...]] | None = None  # multi-label (`csv_labels`): label set id -> class indices
    labels_file: LabelsFile | None = None  # --labels: where the labels came from
    without_images: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # --labels: (line, id)

    @property
    def multi_label(self) -> bool:
        return self.label_sets is not None

    @property
    def num_inputs(self) -> int:
        return sum(len(task.files) for task in self.tasks) + len(self.rejects)

    @property
    def fixed_splits(self) -> list[str]:
        """The splits the source defines itself (IDX files, train/ and test/ folders), sorted; [] if none."""
        return sorted({f.split for task in self.tasks for f in task.files if f.split})


def list_source(
    src: str,
    layout: str = "auto",
    *,
    unlabeled: bool = False,
    class_names: Sequence[str] | None = None,
    zip_encoding: str | None = None,
    labels: csv_labels.LabelsSpec | None = None,
) -> SourceListing:
    """Detect the layout of `src` (a folder, .zip, .tar[.gz] or a folder of IDX files) and list its inputs.

    `zip_encoding`: the legacy code page of a zip's names that are not marked UTF-8 (see `_zip_name`); `labels`:
    a CSV file that labels the files by id (layout "csv", see `csv_labels`)."""
    if layout not in LAYOUTS:
        raise SourceError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if zip_encoding is not None:
        check_zip_encoding(zip_encoding)
    remote = is_remote(src)
    src = src.rstrip("/") if remote else os.path.abspath(src)
    archive = src.lower().endswith((".zip", *TAR_SUFFIXES))
    if remote:
        folder_files = [] if archive else _match_all(src)
        if not (folder_files or (archive and FileSystems.exists(src))):
            raise SourceError(f"source {src!r} does not exist (or holds no files)")
    elif not os.path.exists(src):
        raise SourceError(f"source {src!r} does not exist")
    is_folder = not archive if remote else os.path.isdir(src)
    if zip_encoding is not None and (is_folder or not _is_zip(src)):
        raise SourceError(
            f"`zip_encoding` applies to a .zip source; {src} is " + ("a folder" if is_folder else "not a zip archive")
        )
    folders: list[str] = []  # folder entries, to report empty class folders
    if is_folder:
        members, rejects, folders = (folder_files, [], []) if remote else _walk(src)
        top_names = [m for m in members if "/" not in m]
        if layout == "idx" or (layout == "auto" and _idx_pairs(src, top_names)):
            if labels is not None:
                raise SourceError(f"{src}: IDX files carry their own labels; --labels applies to image files")
            return _list_idx(src, top_names, class_names)
    if layout == "idx":
        raise SourceError(f"{src}: no IDX files (train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz])")
    locations: dict[str, str] | None = None  # where each member is, when not at its own name
    if is_folder:
        kind = "folder"  # a member is its path under src (the task's container): one string per input, not two
    elif _is_zip(src):
        kind, (members, rejects, locations, folders) = "zip", _zip_members(src, zip_encoding)
    elif src.lower().endswith(TAR_SUFFIXES) and _is_tar(src):
        members, rejects, locations, folders = _tar_members(src)
        kind = "tar" if locations else "tar-stream"
    elif src.lower().endswith((".zip", *TAR_SUFFIXES)):
        raise SourceError(
            f"{src}: damaged or truncated archive: it cannot be read as a "
            f"{'.zip' if src.lower().endswith('.zip') else 'tar'} file"
        )
    else:
        raise SourceError(f"{src}: not a folder, a .zip or a .tar/.tar.gz/.tgz archive")
    listing = _label(src, kind, members, layout, unlabeled, class_names, locations or {}, folders, labels)
    listing.rejects[:0] = rejects
    return listing


# -- listing --------------------------------------------------------------------------------------------------


def _open(path: str) -> BinaryIO:
    """Open a local or remote file for reading bytes (remote: through Beam's filesystems, as stored)."""
    if is_remote(path):
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(path, "rb")


def _join(root: str, relative: str) -> str:
    return f"{root}/{relative}" if is_remote(root) else os.path.join(root, *relative.split("/"))


def _match_all(root: str) -> list[str]:
    """Relative paths of every file under a remote folder (object stores have no links or special files)."""
    try:
        matched = FileSystems.match([f"{root}/**"])[0].metadata_list
    except Exception as error:  # Beam raises BeamIOError for a missing bucket, ValueError for an unknown scheme
        raise SourceError(f"cannot list {root!r}: {error}") from None
    return sorted(m.path[len(root) + 1 :] for m in matched if not m.path.endswith("/"))


def _is_zip(path: str) -> bool:
    """A readable zip archive; a file named .zip that starts like one but is not readable is damaged."""
    with _open(path) as f:
        readable = zipfile.is_zipfile(f)
        f.seek(0)
        if not readable and f.read(4) == b"PK\x03\x04":
            raise SourceError(f"{path}: damaged or truncated .zip archive (its central directory is missing)")
    return readable


def _is_tar(path: str) -> bool:
    with _open(path) as f:
        return tarfile.is_tarfile(f)


def _walk(root: str) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Relative POSIX paths of the regular files under root, rejects for symbolic links (never followed:
    they may point outside the source or loop), other special files and folders that cannot be listed (their
    files unknown: a path too long for the system, no permission), and the folders (`name/`).

    In `os.walk`'s order (top down, names sorted), from `os.scandir`'s entries: their types come with the listing,
    so a file costs no system call of its own (two per file took a third of the listing's time)."""
    found, rejects, folders = [], [], []
    pending = [(root, "")]  # (folder, its path relative to root with a trailing "/"), the next one last
    while pending:
        folder, relative = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            unlisted = f"cannot list this folder: {error.strerror}; its files are not converted"
            rejects.append((relative or "./", unlisted))
            continue
        dirs: list[os.DirEntry] = []
        files: list[os.DirEntry] = []
        for entry in entries:
            (dirs if _is_dir(entry) else files).append(entry)
        entered = []
        for entry in dirs:
            if entry.is_symlink():
                rejects.append((relative + entry.name, "symbolic link to a folder, not followed"))
            else:
                entered.append((entry.path, relative + entry.name + "/"))
        for entry in files:
            if entry.is_symlink():
                rejects.append((relative + entry.name, "symbolic link, not followed"))
            elif entry.is_file():
                found.append(relative + entry.name)
            else:
                rejects.append((relative + entry.name, "not a regular file"))
        folders += [relative + entry.name + "/" for entry in dirs]
        pending += reversed(entered)
    return found, rejects, folders


def _is_dir(entry: os.DirEntry) -> bool:
    """A folder, or a symbolic link to one (as `os.walk` sorts them); False when that cannot be told."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _zip_members(
    archive: str, encoding: str | None
) -> tuple[list[str], list[tuple[str, str]], dict[str, str], list[str]]:
    """Member names (decoded as `unzip` does: `_zip_name`), rejects (names that do not decode, unsafe paths,
    encrypted members), where each member whose name zipfile decodes otherwise is (zipfile's name for it, which
    the reader opens) and the folder entries of a zip archive."""
    try:
        with _open(archive) as raw, zipfile.ZipFile(raw) as zf:
            infos = zf.infolist()
    except UnicodeDecodeError as error:  # zipfile decodes a name marked UTF-8 strictly, refusing the whole archive
        raise SourceError(
            f"{archive}: a member name is marked UTF-8 but is not ({error}); Python's zipfile "
            "cannot read this archive: rezip it"
        ) from None
    names, rejects, encrypted, locations, folders = [], [], [], {}, []
    for info in infos:
        name, undecodable = _zip_name(info, encoding)
        if info.is_dir():
            folders += [] if undecodable else [name]
        elif undecodable:
            rejects.append((name, undecodable))
        elif info.flag_bits & 0x1 and not _is_debris(name):
            encrypted.append((name, ENCRYPTED))
        else:
            names.append(name)
            if name != info.filename:
                locations[name] = info.filename
    safe, unsafe = _safe_members(names)
    return safe, unsafe + encrypted + rejects, locations, folders


def _zip_name(info: zipfile.ZipInfo, encoding: str | None) -> tuple[str, str | None]:
    """A member's name as `unzip` decodes it, and None; or, when the legacy code page `encoding` cannot decode
    it, the name with its undecodable bytes escaped and the reason.

    In order: UTF-8 when the member is marked so (bit 11); the UTF-8 name of an Info-ZIP Unicode Path extra field
    whose CRC32 matches the stored name (a stale one, left by a tool that renamed the member, is ignored, as
    Info-ZIP does); `encoding` when given (Windows' own zip writes the OEM code page: cp949 in Korea, cp932 in
    Japan); UTF-8 when the bytes are valid UTF-8 (the `zip` command on Linux or macOS); cp437.
    """
    if info.flag_bits & ZIP_UTF8_FLAG:
        return info.filename, None
    raw = info.orig_filename.encode("cp437")  # zipfile decoded the unmarked name as cp437: every byte maps back
    name, undecodable = _unicode_path(info.extra, raw), None
    if name is None and encoding is not None:
        try:
            name = raw.decode(encoding)
        except UnicodeDecodeError as error:
            name = raw.decode(encoding, "backslashreplace")
            undecodable = (
                f"archive member name is not {encoding} (--zip-encoding): byte 0x{raw[error.start]:02x} "
                f"at {error.start} ({error.reason})"
            )
    if name is None:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            name = raw.decode("cp437")
    return name.split("\0", 1)[0], undecodable  # as zipfile keeps names: up to a NUL (a trick of viruses)


def _unicode_path(extra: bytes, raw: bytes) -> str | None:
    """The UTF-8 name in an Info-ZIP Unicode Path extra field (0x7075) for the stored name `raw`, if any."""
    while len(extra) >= 4:
        kind, size = struct.unpack("<HH", extra[:4])
        body, extra = extra[4 : 4 + size], extra[4 + size :]
        if kind == ZIP_UNICODE_PATH and body[:1] == b"\x01" and body[1:5] == struct.pack("<I", zlib.crc32(raw)):
            try:
                return body[5:].decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def _tar_members(archive: str) -> tuple[list[str], list[tuple[str, str]], dict[str, str] | None, list[str]]:
    """Member names (normalized: `./cat.1.jpg` is `cat.1.jpg`), rejects, for an uncompressed tar where each
    member's data is ("OFFSET:SIZE") so that workers seek to it (a compressed tar, None, can only be streamed
    from its start), and the folder entries."""
    names, rejects, locations, folders = [], [], {}, []
    try:
        with _open(archive) as raw, tarfile.open(fileobj=raw, mode="r:*") as tf:
            seekable = tf.fileobj is raw  # no decompressing wrapper
            for member in tf:
                name = _tar_member_name(member.name)
                if member.isfile():
                    names.append(name)
                    locations[name] = f"{member.offset_data}:{member.size}"
                    seekable = seekable and not member.issparse()
                elif member.isdir():
                    folders += [name + "/"] if name else []  # `./` is the archive's root
                else:
                    rejects.append((name, "archive member is a link or special file, not a regular file"))
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
        raise SourceError(f"{archive}: damaged or truncated tar archive ({error})") from None
    safe, unsafe = _safe_members(names)
    return safe, rejects + unsafe, locations if seekable else None, folders


def _tar_member_name(name: str) -> str:
    """A tar member's path without `./` parts: `tar czf x.tgz -C dir .` names members `./cat.1.jpg`."""
    if name.startswith("/"):
        return name  # left for `_safe_members` to reject
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def _safe_members(names: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split archive member names into safe relative paths and rejects (absolute or `..` paths: zip-slip)."""
    safe, rejects = [], []
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
            rejects.append((name, "unsafe archive member path (absolute or containing '..')"))
        else:
            safe.append(name)
    return sorted(safe), rejects


def _is_debris(path: str) -> bool:
    """What operating systems leave beside files (AppleDouble `._x`, `.DS_Store`, `Thumbs.db`, `__MACOSX/`,
    ...) and any hidden file or folder: never part of a dataset."""
    *folders, name = path.split("/")  # a folder entry (`__MACOSX/`) has the name ""
    return (
        name.startswith(".")
        or name.lower() in DEBRIS_FILES
        or any(f.lower() in DEBRIS_FOLDERS or f.startswith(".") for f in folders)
    )


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _strip_wrapper(members: list[str]) -> tuple[str, list[str], list[str]]:
    """Descend through single wrapper folders (`flower_photos/`, `PetImages/`, `train/` in Kaggle's zip).

    Returns (prefix, member paths relative to it, ignored non-image files found beside the wrapper).
    """
    prefix, ignored = "", []
    while True:
        top_files = [m for m in members if "/" not in m[len(prefix) :]]
        top_dirs = {m[len(prefix) :].split("/", 1)[0] for m in members if "/" in m[len(prefix) :]}
        if len(top_dirs) != 1 or any(_is_image_name(f) for f in top_files):
            break
        (wrapper,) = top_dirs
        ignored += top_files
        members = [m for m in members if m not in top_files]
        prefix += wrapper + "/"
    return prefix, members, ignored


def _label(src, kind, members, layout, unlabeled, class_names, locations, folders, labels=None) -> SourceListing:
    debris: list[str] = []
    kept: list[str] = []
    for member in members:
        (debris if _is_debris(member) else kept).append(member)
    debris.sort()
    members = kept
    if not members:
        raise SourceError(
            f"source {src!r} is empty: no files to convert"
            + (f" (only {len(debris)} system file(s) such as {debris[0]})" if debris else "")
        )
    prefix, members, ignored = _strip_wrapper(members)
    relative = [m[len(prefix) :] for m in members]
    top_dirs = sorted({r.split("/", 1)[0] for r in relative if "/" in r})
    split_dirs = [d for d in top_dirs if d.lower() in SPLIT_FOLDERS]
    split_dirs = split_dirs if len(split_dirs) >= 2 else []  # a lone train/ is just a wrapper (Kaggle's zip)
    groups: list[tuple[str | None, str]] = [(SPLIT_FOLDERS[d.lower()], d + "/") for d in split_dirs] or [(None, "")]
    if split_dirs:
        ignored += [r for r in relative if not r.startswith(tuple(g for _, g in groups))]
    labeled: list[tuple[str, str, str | None, str | None]] = []  # (relative path, member, class, split)
    layouts_seen = set()
    for split, group in groups:
        inside = [r for r in relative if r.startswith(group)]
        group_layout = "csv" if labels else layout if layout != "auto" else _detect(inside, group)
        layouts_seen.add(group_layout)
        for rel in inside:
            name = rel[len(group) :]
            if group_layout == "folders" and "/" not in name:
                if _is_image_name(name):
                    raise SourceError(
                        f"{src}: class folders are mixed with image files at the top level (e.g. {rel!r}); "
                        "move those files into a class folder, or convert the folders separately"
                    )
                ignored.append(rel)
                continue
            labeled.append((rel, prefix + rel, None if labels else _class_of(name, group_layout, unlabeled), split))
    if labels is not None:
        return _label_by_csv(src, kind, labeled, labels, class_names, locations, ignored, debris)
    names = _class_names(src, labeled, unlabeled, class_names)
    warnings = _case_twins(names) + (
        _empty_class_folders(folders, members, prefix, groups) if "folders" in layouts_seen else []
    )
    index = {name: i for i, name in enumerate(names)}
    files = []
    labeled.reverse()
    while labeled:  # each input's tuple freed as its InputFile is made: the listing is held once, not twice
        rel, member, cls, split = labeled.pop()
        label = UNLABELED if unlabeled else None if cls is None else index.get(cls)
        files.append(InputFile(path=rel, label=label, split=split, member=locations.get(member, member)))
    detected = layouts_seen.pop() if len(layouts_seen) == 1 else "mixed"
    return SourceListing(
        detected, names, _tasks(kind, src, files), [], sorted(ignored), debris=debris, warnings=warnings
    )


def _label_by_csv(src, kind, labeled, labels, class_names, locations, ignored, debris) -> SourceListing:
    """The listing of files labelled by a CSV file (`csv_labels.match`): files it names are inputs, images it does
    not name (or gives no label) rejects, other files ignored."""
    matched = csv_labels.match(labels, [rel for rel, _, _, _ in labeled], class_names)
    files = [
        InputFile(path=rel, label=matched.labels[rel], split=split, member=locations.get(member, member))
        for rel, member, _, split in labeled
        if rel in matched.labels
    ]
    rejects = sorted(matched.no_label.items())
    ignored += [rel for rel, _, _, _ in labeled if rel not in matched.labels and rel not in matched.no_label]
    if not files:
        example = f", e.g. {rejects[0][0]!r}: {rejects[0][1]}" if rejects else ""
        raise SourceError(f"{src}: {labels.path} gives none of its files a label{example}")
    return SourceListing(
        "csv",
        matched.class_names,
        _tasks(kind, src, files),
        rejects,
        sorted(ignored),
        debris=debris,
        warnings=_case_twins(matched.class_names),
        label_sets=matched.label_sets,
        labels_file=matched.source,
        without_images=matched.without_images,
    )


def _case_twins(names: list[str]) -> list[str]:
    """A warning for classes whose names differ only in case (`Cat/` and `cat/`): most likely one class."""
    by_lower: dict[str, list[str]] = {}
    for name in names:
        by_lower.setdefault(name.lower(), []).append(name)
    return [
        f"classes {' and '.join(repr(n) for n in twins)} differ only in case; they are kept as "
        f"{len(twins)} classes (rename or merge the folders if they are one)"
        for twins in by_lower.values()
        if len(twins) > 1
    ]


def _empty_class_folders(folders: list[str], members: list[str], prefix: str, groups) -> list[str]:
    """A warning for each class folder without any file (it cannot become a class)."""
    warnings = []
    for _, group in groups:
        for folder in sorted(folders):
            relative = folder[len(prefix) :] if folder.startswith(prefix) else None
            if relative is None or not relative.startswith(group) or relative[len(group) :].count("/") != 1:
                continue
            if _is_debris(folder) or any(m.startswith(folder) for m in members):
                continue
            warnings.append(f"class folder {relative!r} is empty; no class is made for it")
    return warnings


def _detect(relative: list[str], group: str) -> str:
    names = [r[len(group) :] for r in relative]
    return "folders" if any("/" in n for n in names) else "kaggle"


def _class_of(name: str, layout: str, unlabeled: bool) -> str | None:
    if unlabeled:
        return None
    if layout == "folders":
        return sys.intern(name.split("/", 1)[0])  # interned: a few class names, not one string per input
    base = name.rsplit("/", 1)[-1]
    return sys.intern(base.split(".", 1)[0]) if base.count(".") >= 2 else None


def _class_names(src, labeled, unlabeled, given) -> list[str]:
    found = sorted({cls for _, _, cls, _ in labeled if cls is not None})
    if given:
        unknown = [c for c in found if c not in given]
        if unknown:
            raise SourceError(f"{src}: classes {unknown} are not in `class_names` {list(given)}")
        return list(given)
    if unlabeled:
        return []
    if not found:
        raise SourceError(
            f"{src}: no class labels found (expected class folders or names like cat.123.jpg); "
            "for an unlabeled folder such as Kaggle's test1/, pass `unlabeled`"
        )
    if len(found) == 1:
        raise SourceError(f"{src}: only one class ({found[0]!r}) found; a classifier needs at least two")
    return found


def _tasks(kind: str, container: str, files: list[InputFile]) -> list[ReadTask]:
    size = max(1, math.ceil(len(files) / STREAM_TASKS)) if kind == "tar-stream" else FILES_PER_TASK
    return [ReadTask(kind, container, tuple(files[i : i + size])) for i in range(0, len(files), size)]


def _idx_pairs(folder: str, names: list[str]) -> list[tuple[str, str, str]]:
    """(split, images file, labels file) for each IDX pair among `names`, the files directly in folder."""
    pairs = []
    for name in sorted(names):
        match = _IDX_IMAGES.match(name)
        if not match:
            continue
        labels = [n for n in names if re.match(rf"^{match.group(1)}-labels[.-]idx1-ubyte(\.gz)?$", n)]
        if not labels:
            raise SourceError(f"{folder}: {name} has no matching labels file ({match.group(1)}-labels-idx1-ubyte)")
        pairs.append((IDX_SPLITS[match.group(1)], _join(folder, name), _join(folder, labels[0])))
    return pairs


def _list_idx(folder: str, names: list[str], class_names: Sequence[str] | None) -> SourceListing:
    tasks = []
    num_classes = 0
    for split, images_file, labels_file in _idx_pairs(folder, names):
        labels = _load_idx_labels(labels_file)
        images_shape, _ = _idx_header(images_file)
        if images_shape[0] != len(labels):
            raise SourceError(f"{images_file}: {images_shape[0]} images but {len(labels)} labels in {labels_file}")
        if not images_file.endswith(".gz") and not is_remote(images_file):
            _check_idx_size(images_file, images_file)  # a truncated file fails here, not in a worker
        num_classes = max(num_classes, int(labels.max(initial=0)) + 1)
        name = os.path.basename(images_file)
        files = [InputFile(f"{name}#{i:05d}", int(label), split, str(i)) for i, label in enumerate(labels)]
        for start in range(0, len(files), IDX_IMAGES_PER_TASK):
            chunk = tuple(files[start : start + IDX_IMAGES_PER_TASK])
            tasks.append(ReadTask("idx", images_file, chunk, labels_file))
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    if len(names) < num_classes:
        raise SourceError(f"{folder}: labels go up to {num_classes - 1} but only {len(names)} class names given")
    return SourceListing("idx", names, tasks, [], [], default_channels=1)


def stage_idx(tasks: Sequence[ReadTask], folder: str) -> list[ReadTask]:
    """The tasks, IDX ones reading a plain copy of each gzipped images file, decompressed once into `folder`
    (the job's staging folder): workers map it rather than each holding the whole array."""
    staged: dict[str, str] = {}
    for container in sorted({t.container for t in tasks if t.kind == "idx" and t.container.endswith(".gz")}):
        staged[container] = FileSystems.join(folder, posixpath.basename(container)[:-3])
        with (
            _open(container) as raw,
            gzip.open(raw) as source,
            FileSystems.create(staged[container], compression_type=CompressionTypes.UNCOMPRESSED) as copy,
        ):
            while chunk := source.read(2**20):
                copy.write(chunk)
        _check_idx_size(staged[container], container)
    return [dataclasses.replace(t, container=staged[t.container]) if t.container in staged else t for t in tasks]


# -- reading --------------------------------------------------------------------------------------------------


def _idx_header(path: str) -> tuple[tuple[int, ...], int]:
    """An IDX file's shape and header size (MNIST format: big-endian, unsigned bytes), gzipped or not."""
    with _open(path) as raw, gzip.open(raw) if path.endswith(".gz") else raw as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:3] != b"\0\0\x08":
            raise SourceError(f"{path}: not an unsigned-byte IDX file")
        dims = f.read(4 * magic[3])
    if len(dims) < 4 * magic[3]:
        raise SourceError(f"{path}: truncated IDX header")
    return struct.unpack(f">{magic[3]}I", dims), 4 + len(dims)


def _check_idx_size(path: str, named: str) -> tuple[tuple[int, ...], int]:
    """The shape and header size of the uncompressed IDX file `path`; SourceError naming `named` (the source's
    file) unless its size is what its header says."""
    shape, header = _idx_header(path)
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    if size - header != math.prod(shape):
        raise SourceError(f"{named}: truncated IDX file ({size - header} bytes of pixels, header says {shape})")
    return shape, header


def _load_idx_labels(path: str) -> np.ndarray:
    """An IDX labels file (one byte per image), gzipped or not, whole: small."""
    shape, header = _idx_header(path)
    with _open(path) as raw, gzip.open(raw) if path.endswith(".gz") else raw as f:
        body = np.frombuffer(f.read()[header:], dtype=np.uint8)
    if body.size != math.prod(shape):
        raise SourceError(f"{path}: truncated IDX file ({body.size} bytes of labels, header says {shape})")
    return body.reshape(shape)


@dataclasses.dataclass(frozen=True)
class _MappedIdx:
    """An uncompressed IDX images file mapped into memory, and its pixels as an array over the mapping."""

    mapping: mmap.mmap
    header: int  # bytes before the first image
    images: np.ndarray

    def release(self, first: int, end: int) -> None:
        """Drop images `first` to `end - 1` from this process's resident memory; the page cache keeps them, and a
        later read maps them again. A worker that reads a whole file then stays the size of one that reads a task."""
        image_bytes = math.prod(self.images.shape[1:])
        start = (self.header + first * image_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        self.mapping.madvise(mmap.MADV_DONTNEED, start, self.header + end * image_bytes - start)


def _idx_images(path: str) -> _MappedIdx:
    """An uncompressed IDX images file mapped into memory (pages read as they are used); a remote one is copied to
    a local temporary file first, once per process."""
    stat = None if is_remote(path) else os.stat(path)
    return _mapped_idx(path, stat and (stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=2)
def _mapped_idx(path: str, version: tuple[int, int] | None) -> _MappedIdx:
    """`_idx_images`, kept per process for each version (size, modification time) of a local file."""
    if is_remote(path):
        with _open(path) as source, tempfile.NamedTemporaryFile(prefix="shardflow-idx-", delete=False) as copy:
            while chunk := source.read(2**20):
                copy.write(chunk)
        local = copy.name
    else:
        local = path
    shape, header = _check_idx_size(local, path)
    with open(local, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if local != path:
        os.unlink(local)  # the mapping keeps its pages
    images = np.frombuffer(mapping, dtype=np.uint8, count=math.prod(shape), offset=header).reshape(shape)
    return _MappedIdx(mapping, header, images)


def _read_folder(task: ReadTask):
    for f in task.files:
        try:
            yield f, _read_bytes(_join(task.container, f.member))
        except OSError as error:
            yield f, error


def _read_bytes(path: str) -> bytes:
    """A whole file (remote: through Beam's filesystems). A local one in four system calls (open, its size, one
    read, close), where `open(path, "rb").read()` makes seven: in a conversion of 24,000 photos, 0.32-0.33 s of
    each worker's reading instead of 0.38-0.47 s."""
    if is_remote(path):
        with _open(path) as handle:
            return handle.read()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        parts = [os.read(fd, size + 1)]  # (asking one byte more: exactly `size` back means the end was reached)
        if len(parts[0]) != size:  # a file that changed size meanwhile, or one too large for one read: read on
            while more := os.read(fd, 1 << 20):
                parts.append(more)
        return b"".join(parts)
    finally:
        os.close(fd)


_open_zips = threading.local()


def _zip(path: str) -> zipfile.ZipFile:
    """An open archive, kept per thread: parsing a 25,000-entry central directory per task would dominate. A local
    one is opened by its path, so that the archive owns its file and closes it when it goes."""
    cache = _open_zips.__dict__.setdefault("archives", {})
    if path not in cache:
        cache[path] = zipfile.ZipFile(_open(path) if is_remote(path) else path)
    return cache[path]


def _read_zip(task: ReadTask):
    zf = _zip(task.container)
    for f in task.files:
        try:
            yield f, zf.read(f.member)
        except (OSError, zipfile.BadZipFile, NotImplementedError, EOFError) as error:
            yield f, OSError(f"cannot read archive member: {error}")
        except RuntimeError as error:  # zipfile's "is encrypted, password required for extraction"
            yield f, OSError(ENCRYPTED if "encrypted" in str(error) else f"cannot read archive member: {error}")


def _read_tar(task: ReadTask):
    with _open(task.container) as archive:
        for f in task.files:
            offset, size = map(int, f.member.split(":"))
            try:
                archive.seek(offset)
                data = archive.read(size)
                truncated = OSError(f"archive member truncated: {len(data)} of {size} bytes")
                yield f, data if len(data) == size else truncated
            except OSError as error:
                yield f, OSError(f"cannot read archive member: {error}")


def _read_tar_stream(task: ReadTask):
    """Compressed tars cannot seek: stream from the start until every member of the task is found."""
    wanted = {f.member: f for f in task.files}
    try:
        with _open(task.container) as raw, tarfile.open(fileobj=raw, mode="r|*") as tf:
            for member in tf:
                f = wanted.pop(_tar_member_name(member.name), None)
                if f is not None:
                    extracted = tf.extractfile(member)  # None: not a regular file
                    yield f, extracted.read() if extracted else OSError(f"not a regular file: {member.name}")
                if not wanted:
                    return
    except (OSError, tarfile.TarError, EOFError) as error:
        failure = OSError(f"cannot read archive member: {error}")
    else:
        failure = OSError("archive member not found when reading the archive")
    for f in wanted.values():
        yield f, failure


def _read_idx(task: ReadTask):
    mapped = _idx_images(task.container)
    images = mapped.images
    for f in task.files:
        yield f, images[int(f.member)]
    mapped.release(int(task.files[0].member), int(task.files[-1].member) + 1)  # a task is a run of images


_READERS = {
    "folder": _read_folder,
    "zip": _read_zip,
    "tar": _read_tar,
    "tar-stream": _read_tar_stream,
    "idx": _read_idx,
}
