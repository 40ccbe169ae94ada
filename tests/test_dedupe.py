"""Duplicates and leaks: planted copies (renamed byte copies, a lossless BMP of a PNG, JPEG quality 30, a 50%
downscale, a JPEG's PNG copy) are found, distinct photo-like images and alike handwritten digits are not,
`--dedupe` leaves no group across splits, and without it the splits are the paths' own and the leaks are
reported; every group is listed in duplicates.jsonl (the one --dedupe keeps first), named by inspect and the card,
and drawn side by side."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from shardflow.beam_jobs import convert, duplicate_join, records, staged, stages
from shardflow.beam_jobs.options import ConvertOptions
from shardflow.beam_jobs.sources import list_source
from shardflow.beam_jobs.splits import parse_splits, split_for
from shardflow.cli import main
from shardflow.core import duplicates, figures, metadata, pictures, record_index, record_order, schema
from shardflow.core.images import ImageOptions, prepare
from shardflow.testing.sample_data import render_image, write_sample_data
from shardflow.testing.sample_digits import handwritten_digits

SPLITS = "train=0.5,test=0.5"
FRACTIONS = parse_splits(SPLITS)
DISTINCT = 150  # photo-like images hashed for the false-positive check (11,175 pairs; the benchmark does more)


def _encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _copies(jpeg: bytes) -> dict[str, bytes]:
    """What scraped datasets hold of one photo besides the photo itself."""
    image = Image.open(io.BytesIO(jpeg))
    return {
        "byte copy": jpeg,
        "JPEG quality 30": _encoded(image, "JPEG", quality=30),
        "50% downscale": _encoded(image.resize((image.width // 2, image.height // 2)), "JPEG", quality=90),
        "PNG copy": _encoded(image, "PNG"),
    }


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """24 sample JPEGs, a PNG, and copies of five of them, each named so that its split (by path) differs from its
    original's: (source folder, groups of paths that are exact duplicates, groups that are near duplicates)."""
    src = tmp_path_factory.mktemp("planted") / "raw"
    write_sample_data(src, n=24, seed=16)
    Image.fromarray(np.asarray(render_image(0, np.random.default_rng(7)))).save(src / "cat.50.png")
    png = Image.open(src / "cat.50.png")
    copies = {original: _copies((src / original).read_bytes()) for original in ("dog.0.jpg", "dog.1.jpg", "cat.2.jpg")}
    plants = [
        ("cat.0.jpg", (src / "cat.0.jpg").read_bytes(), "jpg", True),  # renamed
        ("cat.50.png", _encoded(png, "BMP"), "bmp", True),  # lossless: the same pixels
        ("dog.0.jpg", copies["dog.0.jpg"]["JPEG quality 30"], "jpg", False),
        ("dog.1.jpg", copies["dog.1.jpg"]["50% downscale"], "jpg", False),
        ("cat.2.jpg", copies["cat.2.jpg"]["PNG copy"], "png", False),
    ]
    exact, near = [], []
    for original, data, ext, same_pixels in plants:
        label = original.split(".")[0]
        copy = next(
            name
            for i in itertools.count(1000)
            if not (src / (name := f"{label}.{i}.{ext}")).exists()
            and split_for(name, FRACTIONS) != split_for(original, FRACTIONS)
        )
        (src / copy).write_bytes(data)
        (exact if same_pixels else near).append(sorted([original, copy]))
    return src, exact, sorted(exact + near)


def _near_groups(keys: list[duplicates.ImageHashes]) -> list[list[int]]:
    return duplicates.find_groups(keys, "near")


@pytest.mark.slow
def test_copies_are_near_and_distinct_images_are_not():
    """Every kind of copy of a sample photo is its near duplicate; no two distinct sample photos are."""
    options = ImageOptions()
    originals = [
        _encoded(render_image(k % 2, np.random.default_rng([5, k])), "JPEG", quality=85) for k in range(DISTINCT)
    ]
    hashes = [prepare(data, options, hashes=True).hashes for data in originals]
    for data, original in list(zip(originals, hashes))[:20]:
        for kind, copy in _copies(data).items():
            assert _near_groups([original, prepare(copy, options, hashes=True).hashes]) == [[0, 1]], kind
    assert _near_groups(hashes) == []
    assert len({h.exact for h in hashes}) == DISTINCT


def test_a_jpeg_and_its_png_copy_are_keyed_at_a_like_resolution():
    """The JPEG is decoded at a reduced DCT scale, its PNG copy averaged down to the same size: their perceptual
    hashes stay within 2 of the 6 bits allowed (keyed at full size, the PNG copies of these photos were up to 6
    bits away)."""
    options = ImageOptions()
    for k in range(40):
        jpeg = _encoded(render_image(k % 2, np.random.default_rng([9, k])), "JPEG", quality=85)
        png = _encoded(Image.open(io.BytesIO(jpeg)), "PNG")
        keys = [prepare(data, options, hashes=True).hashes for data in (jpeg, png)]
        assert duplicates.hamming(np.uint64(keys[0].perceptual), np.uint64(keys[1].perceptual)) <= 2, k


def test_look_alikes_in_other_colours_are_not_near_duplicates():
    """Two sample photos whose grayscale structure pHash cannot tell apart (dog.404.jpg and dog.457.jpg of `make
    demo`): their colour thumbnails can."""
    keys = [
        prepare(
            _encoded(render_image(1, np.random.default_rng([0, 1, i])), "JPEG", quality=90), ImageOptions(), hashes=True
        ).hashes
        for i in (404, 457)
    ]
    assert duplicates.hamming(np.uint64(keys[0].perceptual), np.uint64(keys[1].perceptual)) <= duplicates.NEAR_THRESHOLD
    assert _near_groups(keys) == []


def test_flat_images_are_told_apart_by_colour_alone():
    flat = [
        Image.new("RGB", size, colour)
        for size, colour in (
            ((60, 40), (0, 0, 0)),
            ((60, 40), (255, 0, 0)),
            ((30, 20), (255, 0, 0)),
            ((60, 40), (10, 200, 30)),
        )
    ]
    keys = [duplicates.image_hashes(image) for image in flat]
    perceptual = np.array([k.perceptual for k in keys], dtype=np.uint64)
    assert duplicates.hamming(perceptual[:, None], perceptual[None, :]).max() <= 1  # no structure to hash
    assert _near_groups(keys) == [[1, 2]]  # the same red at two sizes


def test_alike_handwritten_digits_are_not_near_duplicates_but_their_copies_are():
    """MNIST-like digits of one kind, centred alike, fool pHash and the colour thumbnail (dozens of pairs among
    600, some of different digits); the structure thumbnail tells them apart, and still finds re-encoded copies."""
    images, _ = handwritten_digits(600)
    keys = [prepare(image, ImageOptions(channels=1), hashes=True).hashes for image in images]
    hashes, colours, structures = duplicates.near_columns(keys)
    assert len(duplicates.near_pairs(hashes, colours, np.zeros_like(structures))) >= 20  # without structure
    assert _near_groups(keys) == []
    for image, original in list(zip(images, keys))[:30]:
        copy = prepare(_encoded(Image.fromarray(image), "JPEG", quality=30), ImageOptions(channels=1), hashes=True)
        assert duplicates.is_near(original, copy.hashes)


@pytest.mark.slow
def test_the_banded_index_finds_what_comparing_all_pairs_finds():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64, size=2000, dtype=np.uint64)
    colours = rng.integers(0, 256, size=(2000, 48), dtype=np.uint8)
    structures = rng.integers(0, 256, size=(2000, 256), dtype=np.uint8)
    for index in range(0, 200, 2):  # plant neighbours 0..8 bits away, some in other colours or structure
        bits = rng.choice(64, size=index % 9, replace=False)
        hashes[index + 1] = hashes[index] ^ np.uint64(sum(1 << int(b) for b in bits))
        colours[index + 1] = colours[index] + (index % 4 == 0) * rng.integers(0, 2 * duplicates.COLOUR_TOLERANCE + 4)
        structures[index + 1] = structures[index] if index % 6 else structures[index + 1]
    distances = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    colour_distances = np.abs(colours[:, None].astype(np.int16) - colours[None, :]).mean(axis=-1)
    close = np.argwhere(
        np.triu((distances <= duplicates.NEAR_THRESHOLD) & (colour_distances <= duplicates.COLOUR_TOLERANCE), 1)
    )
    alike = (
        duplicates.structure_distances(structures[close[:, 0]], structures[close[:, 1]])
        <= duplicates.STRUCTURE_TOLERANCE
    )
    all_pairs = [(int(i), int(j)) for i, j in close[alike]]
    assert duplicates.near_pairs(hashes, colours, structures) == sorted(all_pairs) and 30 <= len(all_pairs) < 60
    assert len(all_pairs) < len(close)  # some pairs differ in structure alone


def test_crowded_bands_are_searched_exactly_and_each_pair_is_found_by_one_band(monkeypatch):
    """Hashes of smooth images or digits are far from uniform: here only 36 of the 64 bits vary, so dozens of
    hashes share each band's value (and some hashes are equal). Cutting those crowds by sub-bands (here from 4
    hashes up, to cut at this size) still finds every pair within the threshold, and each pair in one band only
    (the first it shares)."""
    monkeypatch.setattr(duplicates, "SHORT_RUN", 4)
    rng = np.random.default_rng(1)
    varying = rng.choice(64, size=36, replace=False).astype(np.uint64)
    bits = rng.integers(0, 2, size=(3000, 36)).astype(np.uint64)
    bits[1500:] = bits[:1500] ^ (rng.random((1500, 36)) < rng.integers(0, 9, (1500, 1)) / 36)  # 0-8 bits off
    hashes = (bits << varying).sum(axis=1).astype(np.uint64)
    flat = np.zeros((3000, 1), dtype=np.uint8)
    distances = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    expected = [(int(i), int(j)) for i, j in np.argwhere(np.triu(distances <= duplicates.NEAR_THRESHOLD, 1))]
    band_values = np.stack([duplicates.band_values(hashes, band) for band in range(duplicates.BANDS)])
    assert max(np.unique(values, return_counts=True)[1].max() for values in band_values) > duplicates.SHORT_RUN
    assert duplicates.near_pairs(hashes, flat, flat) == expected and len(expected) > 1000
    per_band = [duplicates.near_pairs(hashes, flat, flat, bands=[band]) for band in range(duplicates.BANDS)]
    assert sorted(pair for pairs in per_band for pair in pairs) == expected  # each pair once


def test_groups_are_connected_components_listed_by_first_member():
    exact = [b"a", b"b", b"a", b"c", b"d", b"e", b"f"]
    perceptual = [
        0,
        2**64 - 1,
        0x0F0F0F0F0F0F0F0F,
        0b111111,
        0x0F0F0F0F0F0F0F0E,
        0xFFFFFFFFFFFF0000,
        0xFFFFFFFFFFFFFFF0,
    ]
    keys = [duplicates.ImageHashes(e, p, bytes(48), bytes(256)) for e, p in zip(exact, perceptual)]
    assert duplicates.find_groups(keys, "exact") == [[0, 2]]
    # 3 is 6 bits from 0, 4 one bit from 2 (0's exact twin), 6 four bits from 1; 5 is 12 bits from 6
    assert duplicates.find_groups(keys, "near") == [[0, 2, 3, 4], [1, 6]]


def test_dedupe_stage_keeps_the_smallest_path_of_each_group(planted, tmp_path):
    src, exact, near = planted
    listing = list_source(str(src))
    tasks = staged.stage_tasks(listing.tasks, str(tmp_path / "tasks.pickle"))
    staging = str(tmp_path / "staging")
    with TestPipeline() as pipeline:
        prepared = (
            pipeline
            | beam.Create(tasks)
            | stages.ReadAndPrepare(listing.class_names, ImageOptions(), FRACTIONS, staging)
        ).records
        found = (
            prepared
            | duplicate_join.FindDuplicates(3, staging + "/parts")
            | beam.FlatMap(
                lambda groups: [
                    (kind, sorted(member[0].decode() for member in group)) for kind in groups for group in groups[kind]
                ]
            )
        )
        assert_that(found, equal_to([("exact", g) for g in exact] + [("near", g) for g in near]), label="groups")
        deduped = prepared | duplicate_join.Dedupe("near", 3, staging)
        rejects = deduped.rejects | beam.Map(lambda reject: (reject[0].decode(), reject[1]))
        assert_that(rejects, equal_to([(g[1], f"duplicate of {g[0]}") for g in near]), label="rejects")
        kept = deduped.kept | beam.FlatMap(lambda item: staged.load(item[1]).paths) | beam.Map(bytes.decode)
        assert_that(kept | beam.combiners.Count.Globally(), equal_to([listing.num_inputs - len(near)]), label="kept")


@pytest.mark.parametrize("num_parts", [1, 7])
def test_the_distributed_join_finds_the_groups_of_one_process(tmp_path, num_parts):
    """MNIST-like digits (alike enough to pass pHash and colour in dozens of pairs), JPEG quality 30 copies of some,
    byte copies and a run of identical blank images, in three record batches of two splits: the join over parts
    gives exactly the groups `find_groups` gives over all keys at once, members split and label included."""
    images, labels = handwritten_digits(300)
    encoded = [_encoded(Image.fromarray(image), "PNG") for image in images]
    encoded += [_encoded(Image.fromarray(image), "JPEG", quality=30) for image in images[:25]]
    encoded += encoded[30:35] + [_encoded(Image.new("L", (28, 28)), "PNG")] * 4
    labels = labels.tolist() + labels[:25].tolist() + labels[30:35].tolist() + [0] * 4
    paths = [f"{i:04d}.png".encode() for i in range(len(encoded))]
    keys, batches = [], []
    for start, stop, split in ((0, 150, "train"), (150, 300, "train"), (300, len(encoded), "test")):
        rows = []
        for i in range(start, stop):
            prepared = prepare(encoded[i], ImageOptions(channels=1), hashes=True)
            keys.append(prepared.hashes)
            rows.append(records.row(0, labels[i], 0, 1, prepared.stats, prepared.hashes, damaged=False))
        batch = records.RecordBatch(split, ("spill",), tuple(paths[start:stop]), np.array(rows, records.row_dtype(1)))
        batches.append((split, staged.save(batch, str(tmp_path))))
    splits = ["train"] * 300 + ["test"] * (len(encoded) - 300)
    expected = {
        kind: [
            [(paths[i].decode(), splits[i], labels[i]) for i in group] for group in duplicates.find_groups(keys, kind)
        ]
        for kind in duplicates.KINDS
    }
    assert len(expected["exact"]) == 6 and len(expected["near"]) >= 30
    with TestPipeline() as pipeline:
        found = (
            pipeline
            | beam.Create(batches)
            | duplicate_join.FindDuplicates(num_parts, str(tmp_path / "parts"))
            | beam.Map(duplicate_join.summary_groups)
        )
        assert_that(found, equal_to([expected]))


def test_parts_share_the_keys_evenly_when_band_values_are_uneven():
    """Band values as uneven as 600,000 synthetic images' (a few thousand records on the most common, tens on most):
    the planned parts each hold the mean within the largest value's count, where parts by a hash of the value do
    not; every value that occurs has a part, and the plan is the same every time."""
    rng = np.random.default_rng(0)
    counts = rng.lognormal(np.log(1000), 0.9, (duplicates.BANDS, duplicates.BAND_VALUES)).astype(np.int64)
    counts[:, 512:] = 0  # six of the seven bands have 9 bits
    parts = duplicate_join.plan_parts(counts, 80)
    loads = np.bincount(parts[counts > 0], weights=counts[counts > 0], minlength=80)
    assert loads.sum() == counts.sum() and loads.max() <= loads.mean() + counts.max()
    assert loads.max() < 1.1 * loads.mean() and (parts[counts > 0] < 80).all()
    naive = np.bincount(np.arange(counts.size) % 80, weights=counts.ravel(), minlength=80)
    assert naive.max() > 1.2 * naive.mean()  # (parts taken in turn, blind to the counts)
    assert (duplicate_join.plan_parts(counts, 80) == parts).all()


def test_without_dedupe_splits_are_the_paths_own_and_leaks_are_reported(planted, tmp_path, capsys):
    src, exact, near = planted
    out = tmp_path / "out"
    assert main(["convert", str(src), str(out), "--splits", SPLITS, "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    info = metadata.read(str(out))
    assert info.num_records == info.num_inputs and info.num_rejected == 0
    found = info.duplicates
    assert (found.exact, found.near) == (metadata.DuplicateCounts(2, 4, 2, 0), metadata.DuplicateCounts(5, 10, 5, 0))
    assert list(found.leak_example.items()) == [(path, split_for(path, FRACTIONS)) for path in near[0]]
    assert (
        f"warning: LEAK: 5 group(s) of duplicate images span splits (2 of exact copies), e.g. '{near[0][0]}'" in printed
    )
    assert main(["inspect", str(out)]) == 0
    assert "duplicates: 5 group(s) of near duplicates (10 images" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicates"]["near"] == {
        "groups": 5,
        "images": 10,
        "leaks": 5,
        "labels_differ": 0,
    }
    card = (out / "README.md").read_text()
    assert "## Duplicates" in card and "5 across splits (leaks)" in card and f"`{near[0][0]}`" in card


@pytest.mark.slow
def test_dedupe_exact_then_near_leave_no_group_across_splits(planted, tmp_path, capsys):
    src, exact, near = planted
    info = convert.run(
        [str(src), str(tmp_path / "exact"), "--splits", SPLITS, "--dedupe", "exact", "--workers", "1"]
    )  # the launcher, as Beam's examples have it
    assert metadata.read_rejects(info.data_dir) == sorted(
        ({"path": g[1], "reason": f"duplicate of {g[0]}"} for g in exact), key=lambda r: r["path"]
    )
    assert (info.duplicates.exact.groups, info.duplicates.near.leaks, info.duplicates.removed) == (0, 3, 2)
    assert (
        main(["convert", str(src), str(tmp_path / "near"), "--splits", SPLITS, "--dedupe", "near", "--workers", "1"])
        == 0
    )
    assert "LEAK" not in capsys.readouterr().out
    info = metadata.read(str(tmp_path / "near"))
    assert metadata.read_rejects(info.data_dir) == sorted(
        ({"path": g[1], "reason": f"duplicate of {g[0]}"} for g in near), key=lambda r: r["path"]
    )
    assert (info.duplicates.near, info.num_records) == (metadata.DuplicateCounts(0, 0, 0, 0), info.num_inputs - 5)
    assert "--dedupe near removed 5" in (tmp_path / "near" / "README.md").read_text()
    assert ConvertOptions.like(info.provenance.options).dedupe == "near"  # --like repeats it


def test_an_unknown_dedupe_kind_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "raw", "out", "--dedupe", "fuzzy"])
    assert "invalid choice: 'fuzzy'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="`dedupe` is exact or near, not 'fuzzy'"):
        ConvertOptions(dedupe="fuzzy")


@pytest.fixture(scope="module")
def mislabelled(planted, tmp_path_factory):
    """The planted corpus plus a byte copy of cat.3.jpg filed as a dog in the same split (a labelling question, not
    a leak), converted without --dedupe: (root folder with raw/ and out/, the copy's group, what convert printed)."""
    src = planted[0]
    root = tmp_path_factory.mktemp("mislabelled")
    shutil.copytree(src, root / "raw")
    copy = next(
        name
        for i in itertools.count(1000)
        if not (root / "raw" / (name := f"dog.{i}.jpg")).exists()
        and split_for(name, FRACTIONS) == split_for("cat.3.jpg", FRACTIONS)
    )
    shutil.copyfile(src / "cat.3.jpg", root / "raw" / copy)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["convert", str(root / "raw"), str(root / "out"), "--splits", SPLITS, "--workers", "1"]) == 0
    return root, sorted(["cat.3.jpg", copy]), printed.getvalue()


def _members(paths: list[str]) -> str:
    """A group as inspect and the card name it: path (split, class), ..."""
    return ", ".join(f"{path} ({split_for(path, FRACTIONS)}, {path.split('.')[0]})" for path in paths)


def test_duplicates_jsonl_lists_every_group_with_what_dedupe_keeps_first(planted, mislabelled, capsys):
    _, exact, near = planted
    root, relabelled, printed = mislabelled
    groups = [json.loads(line) for line in (root / "out" / metadata.DUPLICATES).read_text().splitlines()]
    listed = [[member["path"] for member in group["members"]] for group in groups]
    assert listed == sorted(near + [relabelled])  # by first path, each group's members by path
    for paths, group in zip(listed, groups):
        assert group["kind"] == ("exact" if paths in exact + [relabelled] else "near"), paths
        assert [(m["split"], m["label"]) for m in group["members"]] == [
            (split_for(path, FRACTIONS), path.split(".")[0]) for path in paths
        ]
        assert (group["leak"], group["labels_differ"]) == ((paths != relabelled), (paths == relabelled)), paths
    assert "5 across splits (leaks), 1 whose labels differ (each group listed in duplicates.jsonl)" in printed
    assert metadata.read(str(root / "out")).duplicates.near == metadata.DuplicateCounts(6, 12, 5, 1)
    assert (
        main(
            ["convert", str(root / "raw"), str(root / "near"), "--splits", SPLITS, "--dedupe", "near", "--workers", "1"]
        )
        == 0
    )
    assert {r["path"]: r["reason"] for r in metadata.read_rejects(str(root / "near"))} == {
        path: f"duplicate of {paths[0]}" for paths in listed for path in paths[1:]
    }
    assert (root / "near" / metadata.DUPLICATES).read_text() == ""  # the records left hold no group


def test_inspect_and_the_card_name_the_leaks_and_the_labels_that_differ(planted, mislabelled, capsys):
    near = planted[2]
    root, relabelled, _ = mislabelled
    out = root / "out"
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "    leaks (5 group(s); path (split, class), the first kept by --dedupe):" in text
    assert all(f"      {_members(paths)}\n" in text for paths in near)
    assert "    labels differ (1 group(s);" in text and f"      {_members(relabelled)}\n" in text
    groups = metadata.read_duplicates(str(out))
    assert metadata.named_groups(groups, limit=2)[2:] == ["... and 4 more (all in duplicates.jsonl)"]
    card = (out / "README.md").read_text()
    assert all(f"- `{paths[0]}` ({split_for(paths[0], FRACTIONS)}," in card for paths in near)
    assert "Groups whose labels differ (a labelling question):" in card and f"- `{relabelled[0]}`" in card
    assert "(duplicates.png)" in card and (out / "duplicates.png").stat().st_size > 0


def test_inspect_draws_the_groups_side_by_side(mislabelled, tmp_path, capsys):
    out = mislabelled[0] / "out"
    assert main(["inspect", str(out), "--duplicates", str(tmp_path / "all.png")]) == 0
    assert f"wrote {tmp_path / 'all.png'}" in capsys.readouterr().out
    picture = Image.open(tmp_path / "all.png").convert("L")
    columns = max(pictures.DUPLICATE_COLUMNS, 2)  # every group a pair
    assert picture.size == figures.grid_size(6, columns, pictures.DUPLICATE_TILE, label_lines=3)
    top, tile = figures.GAP + figures.CAPTION, pictures.DUPLICATE_TILE
    first = np.asarray(picture)[top : top + tile, figures.GAP : figures.GAP + tile]
    assert first.std() > 20  # the first group's kept image is drawn (a photo, not the white page)
    assert main(["inspect", str(out), "--duplicates", str(tmp_path / "two.png"), "--groups", "2"]) == 0
    assert Image.open(tmp_path / "two.png").size == figures.grid_size(2, columns, pictures.DUPLICATE_TILE, 3)
    assert main(["inspect", str(out), "--groups", "2"]) == 2
    assert "--groups N applies to the picture of --duplicates FILE.png" in capsys.readouterr().err


def test_stored_images_are_found_by_bisection_and_without_record_indexes_by_reading(mislabelled, tmp_path):
    out = mislabelled[0] / "out"
    info = metadata.read(str(out))
    for split in info.splits:
        stored = {schema.record_filename(r).decode(): r for r in pictures.stored_records(info, [split])}
        assert record_order.find_records(info, [*stored, "cat/not-stored.jpg"], split) == stored
    groups = metadata.read_duplicates(str(out))
    drawn = pictures.duplicates_picture(info, groups)
    unindexed = tmp_path / "unindexed"
    shutil.copytree(out, unindexed)
    shutil.rmtree(unindexed / record_index.FOLDER)
    assert record_order.find_records(metadata.read(str(unindexed)), ["cat/0.jpg"], metadata.TRAIN) is None
    assert pictures.duplicates_picture(metadata.read(str(unindexed)), groups) == drawn
