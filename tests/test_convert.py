"""`shardflow convert` end to end: real Beam pipelines (FnApiRunner) on corpora the tests write."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import termios
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from shardflow.beam_jobs.convert import ConversionError, ConvertOptions, convert
from shardflow.beam_jobs.progress import PLANNING, READING, ProgressDisplay, ProgressWriter, Stage
from shardflow.beam_jobs.splits import split_for
from shardflow.cli import main
from shardflow.core import metadata
from shardflow.core.decoder import Decoder
from shardflow.tools.verify import verify
from tests.conftest import encode, noise_image, write_idx


def run_cli(*args: str) -> None:
    assert main(["convert", *map(str, args)]) == 0


def records(out, split: str | None = None) -> list[dict]:
    """Every record of a dataset (or one split) as {split, filename, label, image bytes}."""
    info = metadata.read(str(out))
    decoder = Decoder(info.schema)
    found = []
    for name in [split] if split else list(info.splits):
        for serialized in tf.data.TFRecordDataset(info.shard_paths(name)):
            fields = decoder.parse(serialized)
            found.append(
                {
                    "split": name,
                    "filename": fields.filename.numpy().decode(),
                    "label": int(fields.label),
                    "image": fields.data.numpy(),
                }
            )
    return sorted(found, key=lambda r: r["filename"])


@pytest.fixture(scope="module")
def kaggle_out(pets_dataset):
    """conftest's: kaggle_dir converted by 2 workers with the defaults, named "pets"."""
    return pets_dataset


def test_kaggle_conversion_loads_with_tfds(kaggle_dir, kaggle_out):
    builder = tfds.builder_from_directory(str(kaggle_out))
    assert builder.info.features["label"].names == ["cat", "dog"]
    total = sum(builder.info.splits[s].num_examples for s in ("train", "validation", "test"))
    assert total == 60
    images = []
    for example in builder.as_dataset(split="train"):
        assert example["image"].shape[-1] == 3 and example["image"].dtype == tf.uint8
        name = example["image/filename"].numpy().decode()
        assert example["label"].numpy() == (0 if name.startswith("cat.") else 1)
        images.append(name)
    assert len(images) == builder.info.splits["train"].num_examples > 30


def test_passthrough_keeps_source_bytes_and_pixels(kaggle_dir, kaggle_out):
    for record in records(kaggle_out):
        source = (kaggle_dir / record["filename"]).read_bytes()
        assert record["image"] == source
    sample = records(kaggle_out)[0]
    stored = tf.io.decode_jpeg(sample["image"]).numpy()
    original = tf.io.decode_jpeg((kaggle_dir / sample["filename"]).read_bytes()).numpy()
    np.testing.assert_array_equal(stored, original)


def test_statistics_checksums_and_inspect(kaggle_out, capsys):
    meta = metadata.read(str(kaggle_out))
    assert meta.num_inputs == meta.num_records == 60 and meta.num_rejected == 0
    for name, split in meta.splits.items():
        assert sum(split.label_counts.values()) == split.num_examples
        assert len(split.mean) == 3 and all(0 < m < 255 for m in split.mean)
        assert sum(split.size_histogram) == split.num_examples
        for index, shard in enumerate(split.shards):
            assert shard.filename == f"pets-{name}.tfrecord-{index:05d}-of-{len(split.shards):05d}"
            data = (kaggle_out / shard.filename).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard.sha256
    assert main(["inspect", str(kaggle_out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["class_names"] == ["cat", "dog"] and shown["num_rejected"] == 0
    assert set(shown["splits"]["train"]) >= {"num_examples", "label_counts", "mean", "std", "size_histogram"}
    assert main(["inspect", str(kaggle_out)]) == 0
    assert "longer side" in capsys.readouterr().out


def test_split_is_a_stable_hash_of_the_path(kaggle_dir, kaggle_out, tmp_path):
    """Same split per file across worker counts, runners, and when other files come and go."""
    for record in records(kaggle_out):
        assert record["split"] == split_for(record["filename"], {"train": 0.8, "validation": 0.1, "test": 0.1})
    fewer = tmp_path / "fewer"
    shutil.copytree(kaggle_dir, fewer)
    for path in sorted(fewer.glob("*.jpg"))[::3]:
        path.unlink()
    (fewer / "cat.999.jpg").write_bytes(encode(noise_image(50, 40)))
    run_cli(fewer, tmp_path / "out", "--workers", "1", "--name", "pets")
    before = {r["filename"]: r["split"] for r in records(kaggle_out)}
    after = {r["filename"]: r["split"] for r in records(tmp_path / "out")}
    assert all(before[f] == s for f, s in after.items() if f in before)


@pytest.mark.slow
def test_worker_count_and_runner_do_not_change_the_output(kaggle_dir, kaggle_out, tmp_path):
    """One worker in memory, and the FnApiRunner named explicitly (any Beam flag passes through)."""
    run_cli(kaggle_dir, tmp_path / "one", "--workers", "1", "--name", "pets")
    run_cli(
        kaggle_dir,
        tmp_path / "named",
        "--name",
        "pets",
        "--runner",
        "apache_beam.runners.portability.fn_api_runner.FnApiRunner",
    )
    reference = metadata.read(str(kaggle_out)).splits
    for out in ("one", "named"):
        splits = metadata.read(str(tmp_path / out)).splits
        assert {n: [s.sha256 for s in v.shards] for n, v in splits.items()} == {
            n: [s.sha256 for s in v.shards] for n, v in reference.items()
        }
    # the runner asked for is the one that ran: a dropped --runner gives the same bytes (and test_portable: a job
    # endpoint nobody listens on fails the conversion)
    assert metadata.read(str(tmp_path / "one")).provenance.runner == "FnApiRunner"
    assert (
        metadata.read(str(tmp_path / "named")).provenance.runner
        == "apache_beam.runners.portability.fn_api_runner.FnApiRunner"
    )


@pytest.fixture(scope="module")
def hard_corpus(tmp_path_factory):
    """Kaggle layout with every kind of awkward input real scraped datasets contain."""
    root = tmp_path_factory.mktemp("hard") / "train"
    root.mkdir()
    good = {f"{c}.{i}.jpg": encode(noise_image(60 + i, 40, seed=i)) for c in ("cat", "dog") for i in range(6)}
    exif = Image.Exif()
    exif[0x0112] = 8
    kept = {
        "cat.png_named.jpg": encode(noise_image(30, 20), "PNG"),
        "cat.gif_named.jpg": encode(noise_image(30, 20), "GIF"),
        "dog.bmp_named.jpg": encode(noise_image(30, 20), "BMP"),
        "dog.webp_named.jpg": encode(noise_image(30, 20), "WEBP"),
        "cat.cmyk.jpg": encode(noise_image(30, 20, mode="CMYK")),
        "dog.gray.jpg": encode(noise_image(30, 20, mode="L")),
        "cat.alpha.png": encode(noise_image(30, 20, mode="RGBA"), "PNG"),
        "dog.deep.png": encode(Image.fromarray(np.full((20, 30), 30000, np.uint16)), "PNG"),
        "dog.rotated.jpg": encode(noise_image(30, 20), exif=exif.tobytes()),
    }
    truncated = encode(noise_image(300, 300))
    rejected = {
        "cat.empty.jpg": (b"", "empty file"),
        "dog.truncated.jpg": (truncated[: len(truncated) // 3], "truncated"),
        "cat.office.jpg": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1000), "not an image"),
        "cat.bomb.png": (encode(Image.new("1", (10_000, 9_500)), "PNG"), "decompression bomb"),
    }
    for name, data in {**good, **kept, **{n: d for n, (d, _) in rejected.items()}}.items():
        (root / name).write_bytes(data)
    (root / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1000))  # debris: no input
    return root, {**good, **kept}, {n: reason for n, (_, reason) in rejected.items()}


@pytest.mark.slow
def test_every_input_is_a_record_or_a_reject(hard_corpus, tmp_path, capsys):
    root, kept, rejected = hard_corpus
    run_cli(root, tmp_path / "out", "--workers", "2")
    stored = records(tmp_path / "out")
    assert sorted(r["filename"] for r in stored) == sorted(kept)
    for record in stored:
        pixels = tf.io.decode_image(record["image"], expand_animations=False).numpy()
        assert pixels.shape[-1] == 3
        if record["filename"] == "dog.rotated.jpg":
            assert pixels.shape[:2] == (30, 20)  # EXIF orientation 8 applied: 30x20 -> 20x30
    rejects = {r["path"]: r["reason"] for r in metadata.read_rejects(str(tmp_path / "out"))}
    assert set(rejects) == set(rejected)
    for name, reason in rejected.items():
        assert reason in rejects[name]
    info = metadata.read(str(tmp_path / "out"))
    assert info.num_inputs == info.num_records + info.num_rejected == len(kept) + len(rejected)
    assert info.debris == ("Thumbs.db",)
    printed = capsys.readouterr()
    assert f"{len(kept)} records, {len(rejected)} rejected" in printed.out
    # Beam's counters, as a runner's UI shows them, printed at the end of a local run
    (line,) = [line for line in printed.err.splitlines() if line.startswith("Beam counters: ")]
    counters = dict(item.rsplit(" ", 1) for item in line.removeprefix("Beam counters: ").split(", "))
    shards = [shard for split in info.splits.values() for shard in split.shards]
    assert int(counters["records prepared"]) == len(kept)
    assert sum(int(v) for k, v in counters.items() if k.startswith("rejected: ")) == len(rejected)
    assert int(counters["shards written"]) == len(shards)
    assert int(counters["shard bytes"]) == sum(shard.num_bytes for shard in shards)


@pytest.mark.slow
def test_folders_zip_tgz_and_tar_give_the_same_records(folders_dir, tmp_path):
    shutil.make_archive(str(tmp_path / "flower_photos"), "zip", folders_dir.parent, "flower_photos")
    for name, mode in (("flower_photos.tgz", "w:gz"), ("flower_photos.tar", "w")):
        with tarfile.open(tmp_path / name, mode) as tar:
            tar.add(folders_dir, arcname="flower_photos")
    outputs = {}
    for source in (folders_dir, *(tmp_path / f"flower_photos.{suffix}" for suffix in ("zip", "tgz", "tar"))):
        out = tmp_path / f"out-{source.name}"
        run_cli(source, out, "--workers", "2" if source.suffix == ".zip" else "1")  # an archive split over workers
        outputs[source.name] = records(out)
        assert metadata.read(str(out)).ignored == ("LICENSE.txt",)
    reference = outputs.pop("flower_photos")
    assert len(reference) == 30 and {r["label"] for r in reference} == {0, 1, 2}
    assert reference[0]["filename"].startswith("daisy/")
    for name, found in outputs.items():
        assert found == reference, name


def test_idx_conversion(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    (tmp_path / "mnist").mkdir()
    write_idx(tmp_path / "mnist", "train", train, np.arange(40) % 10, gz=True)
    write_idx(tmp_path / "mnist", "t10k", train[:10], np.arange(10) % 10, gz=False)
    run_cli(tmp_path / "mnist", tmp_path / "out", "--workers", "1")
    meta = metadata.read(str(tmp_path / "out"))
    assert set(meta.splits) == {"train", "test"} and meta.channels == 1 and meta.image_format == "png"
    assert meta.class_names == tuple(str(i) for i in range(10))
    for record in records(tmp_path / "out", "train"):
        index = int(record["filename"].rsplit("#", 1)[1])
        np.testing.assert_array_equal(tf.io.decode_png(record["image"]).numpy()[..., 0], train[index])
        assert record["label"] == index % 10


@pytest.mark.slow
def test_split_counts_take_exact_numbers_per_class(kaggle_dir, tmp_path):
    run_cli(kaggle_dir, tmp_path / "out", "--split-counts", "train=10,validation=5,test=5", "--workers", "1")
    meta = metadata.read(str(tmp_path / "out"))
    for split, count in {"train": 10, "validation": 5, "test": 5}.items():
        assert meta.splits[split].label_counts == {"cat": count, "dog": count}
    assert meta.num_unselected == 60 - 40
    run_cli(kaggle_dir, tmp_path / "again", "--split-counts", "train=10,validation=5,test=5", "--workers", "2")
    assert records(tmp_path / "out") == records(tmp_path / "again")


@pytest.mark.parametrize("fmt", ["png", "raw"])
def test_max_side_and_formats_with_several_shards(kaggle_dir, tmp_path, fmt):
    out = tmp_path / "out"
    run_cli(
        kaggle_dir,
        out,
        "--image-format",
        fmt,
        "--max-side",
        "64",
        "--shard-size-mb",
        "0.1",
        "--splits",
        "train=0.5,test=0.5",
        "--workers",
        "1",
    )
    meta = metadata.read(str(out))
    assert set(meta.splits) == {"train", "test"}
    assert len(meta.splits["train"].shards) > 1
    examples = list(tfds.builder_from_directory(str(out)).as_dataset(split="train"))
    assert len(examples) == meta.splits["train"].num_examples
    assert all(max(e["image"].shape[:2]) == 64 for e in examples)


def test_unlabeled_folder(tmp_path):
    (tmp_path / "test1").mkdir()
    for i in range(4):
        (tmp_path / "test1" / f"{i}.jpg").write_bytes(encode(noise_image(20, 20, seed=i)))
    run_cli(tmp_path / "test1", tmp_path / "out", "--unlabeled", "--splits", "test=1", "--workers", "1")
    assert [r["label"] for r in records(tmp_path / "out")] == [-1] * 4


@pytest.mark.slow
def test_existing_output_is_refused_unless_overwrite(kaggle_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["convert", str(kaggle_dir), str(out)]) == 2
    assert "not a shardflow dataset" in capsys.readouterr().err
    assert main(["convert", str(kaggle_dir), str(out), "--overwrite"]) == 2
    assert "not a shardflow dataset" in capsys.readouterr().err
    assert (out / "notes.txt").exists()
    (out / "notes.txt").unlink()
    run_cli(kaggle_dir, out, "--workers", "1")
    run_cli(kaggle_dir, out, "--workers", "1", "--overwrite", "--splits", "train=1")
    assert list(metadata.read(str(out)).splits) == ["train"]


def _staged_shards(out):
    return list((out / metadata.STAGING / "shards").glob("*.tfrecord*"))


KILL_POINTS = {  # what shows that a conversion has reached each of its steps
    "started": lambda out: (out / metadata.STAGING).is_dir(),
    "converting images": lambda out: any((out / metadata.STAGING / "progress").glob("*.json")),
    "writing shards": lambda out: bool(_staged_shards(out)),
    "moving shards into OUT": lambda out: any(out.glob("*.tfrecord*")),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_run_never_looks_complete(kaggle_dir, kaggle_out, tmp_path, point):
    """SIGKILL (the launcher and its workers) as soon as the run is seen at each step: OUT is refused by TFDS and by
    us; a rerun gives the same shards."""
    out = tmp_path / "out"
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardflow.cli",
            "convert",
            str(kaggle_dir),
            str(out),
            "--workers",
            "2",
            "--name",
            "pets",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    reached, deadline = KILL_POINTS[point], time.monotonic() + 120
    try:
        while not reached(out) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # (polls the folder: the shard-writing step lasts about half a second here)
        seen = reached(out) and job.poll() is None
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert seen, f"the conversion was not seen {point} while it ran (exit status {job.returncode})"
    try:
        metadata.read(str(out))
    except metadata.DatasetError:  # killed before it finished: nobody may take it as a dataset
        with pytest.raises(Exception):  # noqa: B017 (TFDS's error depends on the file missing; any refusal will do)
            tfds.builder_from_directory(str(out))
    else:  # killed after dataset_info.json was written (while it cleaned up): then it must be whole
        assert point == "moving shards into OUT" and verify(str(out)).ok
    run_cli(kaggle_dir, out, "--workers", "1", "--overwrite", "--name", "pets")
    assert {n: [s.sha256 for s in v.shards] for n, v in metadata.read(str(out)).splits.items()} == {
        n: [s.sha256 for s in v.shards] for n, v in metadata.read(str(kaggle_out)).splits.items()
    }


def test_user_mistakes_are_one_line_errors(kaggle_dir, tmp_path, capsys):
    with pytest.raises(ConversionError, match="inside SRC"):
        convert(str(kaggle_dir), str(kaggle_dir / "out"), ConvertOptions(workers=1))
    assert main(["convert", str(kaggle_dir), str(tmp_path / "x"), "--splits", "train=0.5,test=0.1"]) == 2
    error = capsys.readouterr().err
    assert "--splits" in error and "Traceback" not in error and error.count("\n") == 1
    assert not (tmp_path / "x").exists()


def _convert_with_stderr_on(stderr: int, src, out, *flags: str) -> None:
    """`python -m shardflow.cli convert SRC OUT` in its own process, its stderr on the file descriptor `stderr`
    (a file, or a terminal's end)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    job = subprocess.run(
        [sys.executable, "-m", "shardflow.cli", "convert", str(src), str(out), "--workers", "2", *flags],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=env,
        timeout=300,
    )
    assert job.returncode == 0


@pytest.mark.slow
def test_progress_names_each_stage_and_draws_no_bars_into_a_file(kaggle_dir, tmp_path):
    """stderr into a file (not a terminal): one plain line per stage, each with its own count, in the order the
    stages ran (grouping duplicates and planning shards do not depend on each other: Beam runs either first); no
    carriage returns, no bars."""
    log = tmp_path / "stderr.txt"
    with open(log, "w") as f:
        _convert_with_stderr_on(f.fileno(), kaggle_dir, tmp_path / "out", "--dedupe", "exact")
    text = log.read_text()
    assert "\r" not in text and "%|" not in text, text
    lines = text.splitlines()
    stages = [line for line in lines if line.split(":")[0] in STAGE_NAMES]
    assert _in_a_job_order([line.split(":")[0] for line in stages], STAGE_NAMES), text
    assert stages[0] == "reading images: 60/60, 0 rejected"
    info = metadata.read(str(tmp_path / "out"))
    shards = sum(len(split.shards) for split in info.splits.values())
    assert stages[-1] == f"writing shards: {shards} shards"
    line = {line.split(":")[0]: line for line in stages}
    for name in ("removing duplicates", "grouping duplicates"):
        assert re.fullmatch(r"[a-z ]+: [1-9]\d* parts", line[name]), line[name]
    assert re.fullmatch(r"planning shards: [1-9]\d* ranges", line["planning shards"]), line["planning shards"]


@pytest.mark.slow
def test_progress_on_a_terminal_is_a_bar_per_stage(kaggle_dir, tmp_path):
    """stderr on a terminal: a live bar per stage, named, each ending at its own count."""
    terminal, its_end = pty.openpty()
    fcntl.ioctl(its_end, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    shown = bytearray()
    reader = threading.Thread(target=_drain, args=(terminal, shown), daemon=True)
    reader.start()
    try:
        _convert_with_stderr_on(its_end, kaggle_dir, tmp_path / "out")
    finally:
        os.close(its_end)
        reader.join(timeout=10)
        os.close(terminal)
    screen = [line.rstrip("\r").split("\r")[-1] for line in shown.decode().split("\n")]
    bars = [line for line in screen if line.split(":")[0] in STAGE_NAMES]
    names = [bar.split(":")[0] for bar in bars]
    assert _in_a_job_order(names, [name for name in STAGE_NAMES if name != "removing duplicates"]), screen
    assert "100%|" in bars[0] and "60/60" in bars[0] and "rejected=0" in bars[0], bars[0]


def test_the_display_says_when_every_image_is_read(tmp_path):
    """`images_read` is set once a stage after reading has begun (the card's figures warm up then, on cores the
    reading kept busy), not while the workers still read."""
    folder, read = str(tmp_path / "progress"), threading.Event()
    stages = [Stage(READING, "images", 2), Stage(PLANNING, "ranges")]
    with ProgressDisplay(folder, stages, stream=io.StringIO(), images_read=read):
        ProgressWriter(folder).add()
    assert not read.is_set()
    with ProgressDisplay(folder, stages, stream=io.StringIO(), images_read=read):
        ProgressWriter(folder, PLANNING).add()
    assert read.is_set()


STAGE_NAMES = ("reading images", "removing duplicates", "grouping duplicates", "planning shards", "writing shards")


def _in_a_job_order(names: list[str], stages: Sequence[str]) -> bool:
    """Each of `stages` once, in their order, but grouping duplicates and planning shards (adjacent, and neither
    depends on the other) either way round."""
    independent = {"grouping duplicates": "planning shards", "planning shards": "grouping duplicates"}
    return names in (list(stages), [independent.get(stage, stage) for stage in stages])


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # (the terminal's other end closed)
            return
        if not chunk:
            return
        into.extend(chunk)
