"""Zip member names as `unzip` reads them (the UTF-8 flag, Info-ZIP's Unicode Path field, UTF-8, cp437, or the
--zip-encoding code page): a folder and its zip give the same classes, paths and records."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib

import pytest

from shardflow.beam_jobs.sources import SourceError, list_source
from shardflow.cli import main
from shardflow.core import metadata
from tests.test_convert import records
from tests.test_real_world_inputs import write
from tests.test_sources import files

PHOTOS = ("고양이/0.jpg", "고양이/1.jpg", "강아지/0.jpg", "ねこ/名前.jpg", "daisy/0.jpg", "daisy/name é 猫.jpg")
KOREAN = ("고양이/0.jpg", "강아지/0.jpg", "강아지/ねこ 猫.jpg")  # every name in cp949, Korean Windows' code page


def legacy_zip(path, members: dict[bytes, tuple[bytes, bytes]], marked_utf8: bool = False):
    """A zip whose stored names are the raw bytes given ({name: (data, extra field)}), not marked UTF-8 unless
    asked: written by zipfile with stand-ins of the same length (non-ASCII ones get marked), then patched."""
    stand_ins = [f"~{i}{'é' if marked_utf8 else ''}~".encode() for i in range(len(members))]
    stand_ins = [s + b"~" * (len(raw) - len(s)) for s, raw in zip(stand_ins, members)]
    with zipfile.ZipFile(path, "w") as zf:
        for stand_in, (data, extra) in zip(stand_ins, members.values()):
            info = zipfile.ZipInfo(stand_in.decode())
            info.extra = extra
            zf.writestr(info, data)
    archive = path.read_bytes()
    for stand_in, raw in zip(stand_ins, members):
        assert archive.count(stand_in) == 2  # in the local header and in the central directory
        archive = archive.replace(stand_in, raw)
    path.write_bytes(archive)
    return path


def unicode_path(name: str, stored: bytes) -> bytes:
    """Info-ZIP's Unicode Path extra field (0x7075): version 1, the CRC32 of the stored name, the UTF-8 name."""
    body = b"\x01" + struct.pack("<I", zlib.crc32(stored)) + name.encode()
    return struct.pack("<HH", 0x7075, len(body)) + body


def contents(listing) -> dict[str, bytes]:
    return {f.path: data for task in listing.tasks for f, data in task.read()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write(tmp_path_factory.mktemp("photos") / "photos", PHOTOS)


def zip_command(folder, archive):
    """`zip -r` in a UTF-8 locale: UTF-8 names, not marked UTF-8 (Info-ZIP's zip 3.0 on Linux)."""
    if shutil.which("zip") is None:
        pytest.skip("the zip command is needed")
    utf8 = os.environ | {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    subprocess.run(["zip", "-qr", str(archive), "."], cwd=folder, env=utf8, check=True)
    return archive


def zipfile_module(folder, archive):
    """Python's zipfile: non-ASCII names marked UTF-8 (bit 11)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for name in PHOTOS:
            zf.write(folder / name, name)
    return archive


def unicode_path_fields(folder, archive):
    """Info-ZIP's zip on Windows: names in the code page ('?' where it has no character) and their UTF-8 in a
    Unicode Path field; daisy/0.jpg carries a stale field (its CRC is not the name's: a tool renamed the member)."""
    members = {}
    for name in PHOTOS:
        stored = name.encode("cp949", "replace")
        field = unicode_path(name, stored) if name != "daisy/0.jpg" else unicode_path("dandelion/0.jpg", b"x")
        members[stored] = ((folder / name).read_bytes(), field)
    return legacy_zip(archive, members)


@pytest.mark.parametrize("make", [zip_command, zipfile_module, unicode_path_fields])
def test_a_zip_lists_and_reads_like_its_folder(photos, tmp_path, make):
    archive = make(photos, tmp_path / "photos.zip")
    marked = make is zipfile_module  # zipfile alone reads the others' names as cp437: 'Ω│á∞ûæ∞¥┤/0.jpg'
    with zipfile.ZipFile(archive) as zf:
        assert ("고양이/0.jpg" in zf.namelist()) == marked
    listing, folder = list_source(str(archive)), list_source(str(photos))
    assert listing.class_names == ["daisy", "ねこ", "강아지", "고양이"] == folder.class_names
    assert files(listing) == files(folder) and listing.rejects == []
    assert contents(listing) == contents(folder)  # each record's bytes come from its own member


def korean_windows_zip(folder, archive, *undecodable: bytes):
    """Windows' own zip in Korea: names in cp949, nothing marking them."""
    members = {name.encode("cp949"): ((folder / name).read_bytes(), b"") for name in KOREAN}
    return legacy_zip(archive, members | {raw: (b"not read", b"") for raw in undecodable})


def test_a_korean_windows_zip_lists_like_its_folder_with_its_code_page(tmp_path):
    folder = write(tmp_path / "folder", KOREAN)
    archive = korean_windows_zip(folder, tmp_path / "photos.zip")
    assert list_source(str(archive)).class_names == ["░¡╛╞┴÷", "░φ╛τ└╠"]  # cp437, as unzip would guess
    listing, expected = list_source(str(archive), zip_encoding="cp949"), list_source(str(folder))
    assert files(listing) == files(expected) and contents(listing) == contents(expected)


def test_a_name_its_code_page_cannot_decode_is_a_reject(tmp_path):
    folder = write(tmp_path / "folder", KOREAN)
    archive = korean_windows_zip(folder, tmp_path / "photos.zip", "고양이/".encode("cp949") + b"\xff.jpg")
    listing = list_source(str(archive), zip_encoding="cp949")
    assert listing.rejects == [
        (
            "고양이/\\xff.jpg",
            "archive member name is not cp949 (--zip-encoding): byte 0xff at 7 (illegal multibyte sequence)",
        )
    ]
    assert listing.num_inputs == 4 and files(listing) == files(list_source(str(folder)))


def test_a_name_marked_utf8_that_is_not_is_a_clear_error(tmp_path):
    archive = legacy_zip(
        tmp_path / "x.zip", {b"cat/\xff.jpg": (b"x", b""), b"dog/0.jpg": (b"y", b"")}, marked_utf8=True
    )
    with pytest.raises(SourceError, match=r"x\.zip: a member name is marked UTF-8 but is not"):
        list_source(str(archive))


@pytest.mark.slow
def test_convert_a_zip_made_by_the_zip_command_gives_the_folders_records(photos, tmp_path):
    archive = zip_command(photos, tmp_path / "photos.zip")
    assert main(["convert", str(photos), str(tmp_path / "folder"), "--workers", "1"]) == 0
    assert main(["convert", str(archive), str(tmp_path / "zip"), "--workers", "1", "--name", "photos"]) == 0
    assert metadata.read(str(tmp_path / "zip")).class_names == ("daisy", "ねこ", "강아지", "고양이")
    assert records(tmp_path / "zip") == records(tmp_path / "folder")


@pytest.mark.slow
def test_zip_encoding_is_recorded_repeated_by_like_and_its_rejects_listed(tmp_path, capsys):
    folder = write(tmp_path / "photos", KOREAN)
    archive = korean_windows_zip(folder, tmp_path / "photos.zip", b"\xff.jpg")
    assert main(["convert", str(folder), str(tmp_path / "folder"), "--workers", "1"]) == 0
    assert main(["convert", str(archive), str(tmp_path / "zip"), "--workers", "1", "--zip-encoding", "cp949"]) == 0
    assert records(tmp_path / "zip") == records(tmp_path / "folder")
    assert metadata.read(str(tmp_path / "zip")).provenance.options["zip_encoding"] == "cp949"
    assert metadata.read_rejects(str(tmp_path / "zip")) == [
        {
            "path": "\\xff.jpg",
            "reason": "archive member name is not cp949 (--zip-encoding): byte 0xff at 0 (illegal multibyte sequence)",
        }
    ]
    capsys.readouterr()
    assert main(["convert", str(archive), str(tmp_path / "again"), "--like", str(tmp_path / "zip")]) == 0
    assert "identical to" in capsys.readouterr().out


@pytest.mark.parametrize(
    "source, encoding, message",
    [
        ("photos", "cp949", "--zip-encoding applies to a .zip source; {src} is a folder"),
        ("photos.tgz", "cp949", "--zip-encoding applies to a .zip source; {src} is not a zip archive"),
        ("photos.zip", "windows-949", "--zip-encoding 'windows-949' is not a text encoding Python knows"),
        ("photos.zip", "base64", "--zip-encoding 'base64' is not a text encoding Python knows"),
    ],
)
def test_zip_encoding_is_refused_where_it_cannot_apply(tmp_path, capsys, source, encoding, message):
    folder = write(tmp_path / "photos", KOREAN)
    korean_windows_zip(folder, tmp_path / "photos.zip")
    with tarfile.open(tmp_path / "photos.tgz", "w:gz") as tar:
        tar.add(folder, arcname=".")
    src = tmp_path / source
    assert main(["convert", str(src), str(tmp_path / "out"), "--zip-encoding", encoding]) == 2
    assert message.format(src=src) in capsys.readouterr().err and not (tmp_path / "out").exists()
