"""`shardflow convert SRC OUT`: the Beam job from raw images to sharded, TFDS-compatible TFRecords.

`run(argv)` is the launcher (options -> pipeline of stages -> run), as in Beam's examples; `convert` the same from
Python. `build` chains the stages of `stages` (ReadAndPrepare, Dedupe, TakeCounts, FindDuplicates, PlanShards,
WriteShards, Summarize). The launching process holds OUT's lock throughout (`out_lock`), then checks
`inputs == records + rejects`, moves the shards into OUT and writes the metadata, `dataset_info.json` last: until
then OUT is visibly incomplete.
Any worker error, a full disk included, ends the job with one line; Ctrl-C stops the workers (`local_workers`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import grpc
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

import shardflow
from shardflow.beam_jobs import csv_labels, duplicate_join, metadata_writer, progress, reject_files, staged, stages
from shardflow.beam_jobs import splits as splits_lib
from shardflow.beam_jobs.beam_options import BeamOptions
from shardflow.beam_jobs.fork_server import take_started
from shardflow.beam_jobs.job_server import NoJobServer, job_server_args
from shardflow.beam_jobs.local_workers import WorkerDied, local_beam_args, local_runner, watched_workers
from shardflow.beam_jobs.options import (
    MULTI_LABEL_SPLIT_COUNTS,
    ConvertOptions,
    add_arguments,
    argument_names,
    from_arguments,
    local_workers,
)
from shardflow.beam_jobs.out_lock import LOCK_NAME, OutputLock, OutputLocked
from shardflow.beam_jobs.progress import ProgressDisplay
from shardflow.beam_jobs.sources import SourceError, SourceListing, is_remote, list_source, stage_idx
from shardflow.beam_jobs.worker_log import WorkerLog
from shardflow.core import duplicates, figures, metadata, record_index, schema
from shardflow.core import labels as labels_lib
from shardflow.core.images import ImageOptions
from shardflow.core.messages import did_you_mean

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: .*)?$")
_WORKER_GONE = "Channel closed prematurely"  # the runner's words when a worker process vanished
_GENERIC_NAMES = {"train", "test", "test1", "validation", "val", "data", "images", "raw"}
logger = logging.getLogger(__name__)


class ConversionError(RuntimeError):
    """The job could not produce a complete dataset; OUT is left visibly incomplete."""


class ConversionInterrupted(ConversionError):
    """The user stopped the conversion (Ctrl-C); OUT is left visibly incomplete."""


def run(argv: Sequence[str] | None = None) -> metadata.DatasetInfo:
    """The launcher, as in Beam's wordcount: parse the options (`options.add_arguments`; the rest are Beam's own,
    anything else is refused), build the pipeline of stages, run it. `python -m shardflow.beam_jobs.convert SRC OUT
    [--dedupe near] [--runner ...]` is `shardflow convert` without --like and the summary."""
    parser = argparse.ArgumentParser(prog="python -m shardflow.beam_jobs.convert", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    return convert(args.src, args.out, from_arguments(args), beam_args)


class LocalWorkers(NamedTuple):
    """The local runner's worker processes: how many, the local folder where they report their progress and the
    local file where they claim read tasks from their shared queue (`staged.TaskQueue`)."""

    processes: int
    progress: str
    claims: str


def build(
    pipeline: beam.Pipeline,
    listing: SourceListing,
    options: ConvertOptions,
    image_options: ImageOptions,
    name: str,
    staging: str,
    local: LocalWorkers | None = None,
) -> None:
    """Add the conversion stages (`stages`) to `pipeline`; running it fills `staging` (see `finalize`). The workers
    report their progress into `progress_folder(staging, local)`; on the `local` runner, they share a queue of read
    tasks."""
    read_tasks = (
        stage_idx(listing.tasks, FileSystems.join(staging, "idx")) if listing.layout == "idx" else listing.tasks
    )
    task_file = FileSystems.join(staging, "tasks.pickle")
    staged_tasks = staged.stage_tasks(read_tasks, task_file)
    tasks: Sequence[staged.StagedTask | staged.TaskQueue] = staged_tasks
    if local is not None:
        tasks = staged.task_queues(staged_tasks, task_file, local.processes, local.claims)
    fractions = options.splits if options.split_counts is None else None
    batch_dir = FileSystems.join(staging, "batches")
    num_parts = duplicate_join.parts_for(listing.num_inputs)
    progress_dir = progress_folder(staging, local)
    prepared = (
        pipeline
        | "ListInputs" >> beam.Create(tasks, reshuffle=False)
        | "ReadAndPrepare"
        >> stages.ReadAndPrepare(
            listing.class_names,
            image_options,
            fractions,
            staging,
            progress_dir,
            options.validation_from_train,
            options.keep_damaged_jpegs,
            listing.label_sets,
        )
    )
    kept, rejects, summarized = prepared.records, [prepared[stages.PrepareRecords.REJECTS]], []
    if options.dedupe:
        deduped = prepared.records | "Dedupe" >> duplicate_join.Dedupe(options.dedupe, num_parts, staging, progress_dir)
        kept = deduped.kept
        rejects.append(deduped.rejects)
    if options.split_counts is None:
        assigned = kept  # the split was chosen while preparing
    else:
        counted = kept | "TakeCounts" >> stages.TakeCounts(options.split_counts, batch_dir)
        assigned = counted.assigned
        summarized.append(counted.unselected | "TagUnselected" >> beam.Map(lambda n: ("unselected", n)))
    pairs = assigned | "FindPairs" >> duplicate_join.FindPairs(
        num_parts, FileSystems.join(staging, "parts"), progress_dir
    )
    planned = assigned | "PlanShards" >> stages.PlanShards(
        int(options.shard_size_mb * 2**20), stages.ranges_for(listing.num_inputs), batch_dir, progress_dir
    )
    shards = planned["jobs"] | "WriteShards" >> stages.WriteShards(
        FileSystems.join(staging, "shards"), name, progress_dir
    )
    _ = (
        shards | "TagShards" >> beam.Map(lambda s: ("shards", s)),
        planned["stats"] | "TagStatistics" >> beam.Map(lambda s: ("statistics", s)),
        tuple(rejects)
        | "AllRejects" >> beam.Flatten()
        | "WriteRejects" >> beam.ParDo(reject_files.WriteRejects(FileSystems.join(staging, "rejects")))
        | "TagRejects" >> beam.Map(lambda path: ("reject_files", path)),
        prepared[stages.PrepareRecords.DAMAGED] | "TagDamaged" >> beam.Map(lambda d: ("damaged", d)),
        pairs | "TagPairs" >> beam.Map(lambda part_pairs: ("pairs", part_pairs)),
        prepared[stages.PrepareRecords.FINGERPRINT] | "TagFingerprint" >> beam.Map(lambda h: ("fingerprint", h)),
        *summarized,
    ) | "Summarize" >> stages.Summarize(FileSystems.join(staging, "summary.json"))


def progress_folder(staging: str, local: LocalWorkers | None) -> str:
    """Where the job's workers report their progress: the `local` runner's folder, or else the staging folder's
    (the runner's workers, wherever they run, write there already)."""
    return local.progress if local else FileSystems.join(staging, "progress")


def progress_stages(listing: SourceListing, options: ConvertOptions) -> list[progress.Stage]:
    """The steps of `build`'s job that the progress display names, with what each counts."""
    num_parts = duplicate_join.parts_for(listing.num_inputs)
    return [
        progress.Stage(progress.READING, "images", listing.num_inputs),
        *([progress.Stage(progress.REMOVING, "parts", num_parts)] if options.dedupe else []),
        progress.Stage(progress.GROUPING, "parts", num_parts),
        progress.Stage(progress.PLANNING, "ranges"),  # (of a split's path hashes: per split, up to `ranges_for`)
        progress.Stage(progress.WRITING, "shards"),
    ]


# -- launching and finishing ----------------------------------------------------------------------------------


def convert(
    src: str, out: str, options: ConvertOptions = ConvertOptions(), beam_args: Sequence[str] = ()
) -> metadata.DatasetInfo:
    """Convert `src` into a dataset folder `out` as `options` say
    ([`ConvertOptions`][shardflow.beam_jobs.options.ConvertOptions]); returns what its shardflow.json records
    ([`DatasetInfo`][shardflow.core.metadata.DatasetInfo]).

    `beam_args` are Beam pipeline options (`--runner`, `--project`, ...); any other option is refused."""
    started = time.time()
    unknown = unknown_beam_options(beam_args)
    if unknown:
        raise ConversionError(
            f"unknown option(s) {', '.join(unknown)}: neither a shardflow convert option nor a "
            f"registered Beam pipeline option (see shardflow convert --help){_did_you_mean(unknown)}"
        )
    try:
        beam_args = [*beam_args, *job_server_args(beam_args)]
    except NoJobServer as error:
        raise ConversionError(str(error)) from None
    pipeline_options, workers = _pipeline_options(beam_args, options.workers)
    with _local_job(workers) as local_job:  # (its fork server imports while the source is listed)
        listing = list_source(
            src,
            options.layout,
            unlabeled=options.unlabeled,
            class_names=options.class_names,
            zip_encoding=options.zip_encoding,
            labels=labels_spec(options),
        )
        _check_split_options(listing, options)
        if listing.multi_label and options.split_counts is not None:
            raise ConversionError(MULTI_LABEL_SPLIT_COUNTS)
        if options.split_counts is not None and not options.split_counts_allow_fewer:
            _check_split_counts(_inputs_per_class(listing), options.split_counts, listing.class_names, "inputs")
        image_options = ImageOptions(
            channels=options.channels or listing.default_channels,
            image_format=options.image_format or ("png" if listing.layout == "idx" else "passthrough"),
            max_side=options.max_side,
            quality=options.quality,
            size=options.size,  # type: ignore[arg-type]  # S, "HxW" or (h, w): ImageOptions parses each
            crop_to_aspect_ratio=options.crop_to_aspect_ratio,
        )
        schema.stored_encoding(image_options.image_format)  # validates the name
        metadata_writer.check_version(options.card.version)
        name = options.name or _default_name(src)
        try:
            lock = _prepare_out(src, out, options.overwrite)
        except OSError as error:
            raise _disk_full(error, out) or error  # noqa: B904 (the error itself, or its disk-full wording)
        try:
            logger.info(
                f"{src}: {listing.num_inputs} inputs, layout {listing.layout}, classes {listing.class_names}"
                + (
                    f"; ignoring {len(listing.ignored)} file(s) beside the data: {', '.join(listing.ignored[:3])}"
                    if listing.ignored
                    else ""
                )
            )
            if listing.labels_file:
                logger.info(labels_lib.source_sentence(listing.labels_file, listing.multi_label))
            return _run_and_finalize(
                src, listing, options, image_options, name, out, started, lock, pipeline_options, local_job
            )
        except KeyboardInterrupt:
            raise ConversionInterrupted(f"interrupted; {out} is incomplete, rerun with --overwrite") from None
        finally:
            if lock is not None:
                lock.release()


def _run_and_finalize(
    src: str,
    listing: SourceListing,
    options: ConvertOptions,
    image_options: ImageOptions,
    name: str,
    out: str,
    started: float,
    lock: OutputLock | None,
    pipeline_options: PipelineOptions,
    local_job: LocalJob | None,
) -> metadata.DatasetInfo:
    staging = FileSystems.join(out, metadata.STAGING)
    scratch = staging if not is_remote(out) else tempfile.mkdtemp(prefix="shardflow-")  # progress and log: local
    local = (
        LocalWorkers(local_job.workers, os.path.join(scratch, "progress"), os.path.join(scratch, "claims"))
        if local_job
        else None
    )
    log = os.path.join(scratch, "beam.log") if local else None
    job_ended, images_read = threading.Event(), threading.Event()
    warm_up = threading.Thread(target=_warm_up_figures, args=(images_read, job_ended), name="figures", daemon=True)
    warm_up.start()  # (it waits for `images_read`)
    try:
        with contextlib.ExitStack() as job:
            # On leaving, last in first out: the job has ended (no warm-up from now), `images_read` is set (a waiting
            # warm-up returns), then the warm-up is over, however the job ended. matplotlib's settings are global
            # (one thread draws at a time), and a thread still in matplotlib's code as Python exits crashes it.
            job.callback(warm_up.join)
            job.callback(images_read.set)
            job.callback(job_ended.set)
            runner = local_job.runner if local_job else None
            pipeline = beam.Pipeline(runner=runner, options=pipeline_options)
            build(pipeline, listing, options, image_options, name, staging, local)
            if local_job and local and log:
                stderr, silent_hint = job.enter_context(local_job.log.to(log)), None
                job.enter_context(watched_workers())
            else:
                images_read.set()  # (the launcher only waits: nothing to wait for before the figures warm up)
                stderr, silent_hint = sys.stderr, RUNNER_SILENT
            job.enter_context(
                ProgressDisplay(
                    progress_folder(staging, local),
                    progress_stages(listing, options),
                    len(listing.rejects),
                    stderr,
                    images_read,
                    silent_hint,
                )
            )
            result = pipeline.run()
            try:
                result.wait_until_finish()
            except KeyboardInterrupt:
                if not local_job:
                    _cancel(result)
                raise
        counters = stages.counters(result)
        logger.info("Beam counters: " + ", ".join(f"{name} {value}" for name, value in counters.items()))
        if lock is not None:
            lock.check()
        provenance = metadata.Provenance(
            shardflow_version=shardflow.__version__,
            source=src,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            runner=type(runner).__name__ if runner else pipeline_options.view_as(StandardOptions).runner,
            options=options.recorded() | {"image": dataclasses.asdict(image_options), "name": name},
        )
        info = finalize(out, staging, listing, image_options, name, started, options, provenance)
    except (ConversionError, OutputLocked, SourceError):
        raise
    except Exception as error:  # a worker's error is the job's error: one line, the log has the rest
        _wait_for_beams_message_reader()
        raise _job_error(error, out, log) from None
    if scratch != staging:
        shutil.rmtree(scratch, ignore_errors=True)
    return info


def _cancel(result: beam.runners.runner.PipelineResult) -> None:
    """Cancel a runner's job (on Ctrl-C): left running, it would go on writing into OUT's staging folder, where a
    rerun with --overwrite writes too."""
    try:
        result.cancel()
    except Exception as error:  # (the runner's own error: said, and the interruption goes on)
        logger.warning(f"could not cancel the runner's job ({type(error).__name__}: {error}): cancel it there")
    else:
        logger.info("the runner's job is cancelled")


RUNNER_SILENT = (
    "a runner may take minutes to start its workers (Dataflow: 2-5). One whose workers cannot start waits without "
    "end: see its log, or the worker pool's (the `python` on the pool's PATH needs Beam and shardflow). "
    "Ctrl-C stops the conversion and cancels the job."
)


class LocalJob(NamedTuple):
    """What a local job starts before its source is listed: Beam's runner (whose worker processes import
    meanwhile) and the pipe they log into."""

    workers: int
    runner: FnApiRunner
    log: WorkerLog


@contextlib.contextmanager
def _local_job(workers: int | None) -> Iterator[LocalJob | None]:
    """A `LocalJob` for `workers` local workers (None: a remote runner, nothing to start), its fork server the one
    started ahead (`fork_server.started_ahead`) if any; stopped on leaving."""
    if not workers:
        yield None
        return
    started = take_started() if workers > 1 else None  # (one worker: Beam's, in this process)
    with (
        started.log if started else WorkerLog() as log,
        local_runner(workers, started.server if started else None) as runner,
    ):
        yield LocalJob(workers, runner, log)


def _warm_up_figures(images_read: threading.Event, job_ended: threading.Event) -> None:
    """`figures.warm_up` (0.5 CPU s) for the card once the job's workers have read every image (`images_read`; also
    set when the job ends): the job's last stages leave the cores idle between them, while reading keeps every core
    busy and submitting the job keeps the launcher busy."""
    images_read.wait()
    if not job_ended.is_set():
        figures.warm_up()


def _wait_for_beams_message_reader(seconds: float = 5.0) -> None:
    """Let the thread in which Beam reads a job server's messages end first (it prints its own traceback when the
    connection ends): the job's one line then comes last, not in the middle of that traceback."""
    for thread in threading.enumerate():
        if thread.name == "wait_until_finish_read":  # (Beam's PortableRunner names it so)
            thread.join(seconds)


def _job_error(error: Exception, out: str, log: str | None) -> ConversionError:
    """One line for a failed job: a full disk says so and where; anything else names the worker's exception."""
    text = f"{type(error).__name__}: {error}"
    full = _disk_full(error, out)
    if full:
        return full
    if isinstance(error, WorkerDied):
        return ConversionError(f"the Beam job failed: {error} ({out} is left incomplete; Beam's log: {log})")
    if isinstance(error, grpc.RpcError) and isinstance(error, grpc.Call):  # a job server's: its status says why
        text = f"the connection to the runner ended: {error.code().name}: {error.details()}"
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # (Beam waits for the job's state that long at most)
            text += "; a job on a job server may run --job_server_timeout seconds: pass more"
    if _WORKER_GONE in text:
        text = "a Beam worker process died (killed, or out of memory?)"
    raised = [line.strip() for line in text.splitlines() if _EXCEPTION_LINE.match(line.strip())]
    return ConversionError(
        f"the Beam job failed: {raised[-1] if raised else text.splitlines()[0]} "
        f"({out} is left incomplete" + (f"; Beam's log: {log})" if log else ")")
    )


def _disk_full(error: Exception, out: str) -> ConversionError | None:
    """The one-line error for a full disk (or quota) seen by the launcher or, in Beam's message, by a worker."""
    text = str(error)
    if not (
        isinstance(error, OSError) and error.errno in _DISK_FULL or any(f"[Errno {n}]" in text for n in _DISK_FULL)
    ):
        return None
    where = os.path.abspath(out) if not is_remote(out) else out
    return ConversionError(
        f"disk full: no space left on {_mount_point(where)} while writing {where}; "
        f"{out} is left incomplete (free some space, then rerun with --overwrite)"
    )


def _mount_point(path: str) -> str:
    """The mount point of the filesystem holding `path` (remote paths: the path itself)."""
    if is_remote(path):
        return path
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def finalize(
    out: str,
    staging: str,
    listing: SourceListing,
    image_options: ImageOptions,
    name: str,
    started: float,
    options: ConvertOptions,
    provenance: metadata.Provenance,
) -> metadata.DatasetInfo:
    """Check the counts (with --split-counts: every class filled every split, else an error or, with
    --split-counts-allow-fewer, a warning), move shards and their record indexes into `out`, write rejects, the
    groups of duplicates, damaged JPEGs kept, the dataset card and the metadata (dataset_info.json last)."""
    split_counts, allow_fewer = options.split_counts, options.split_counts_allow_fewer
    with FileSystems.open(FileSystems.join(staging, "summary.json")) as f:
        summary = json.loads(f.read())
    rejects = reject_files.merge(summary["reject_files"], listing.rejects, FileSystems.join(staging, metadata.REJECTS))
    damaged = _damaged_jpegs(summary)
    groups = duplicate_groups(summary["duplicates"], listing.class_names, listing.label_sets)
    info = metadata.DatasetInfo(
        name=name,
        class_names=tuple(listing.class_names),
        channels=image_options.channels,
        image_format=image_options.image_format,
        max_side=image_options.max_side,
        quality=image_options.quality,
        size=image_options.size,
        crop_to_aspect_ratio=image_options.crop_to_aspect_ratio,
        layout=listing.layout,
        num_inputs=listing.num_inputs,
        num_rejected=rejects.count,
        num_unselected=summary["unselected"],
        ignored=tuple(listing.ignored),
        debris=tuple(listing.debris),
        splits=_splits(summary, listing.class_names, listing.label_sets),
        seconds=round(time.time() - started, 2),
        data_dir=out,
        card=options.card,
        provenance=dataclasses.replace(provenance, source_fingerprint=_fingerprint(summary, listing.labels_file)),
        duplicates=_duplicates(groups, options.dedupe, rejects.kinds[metadata.DUPLICATE]),
        damaged_jpegs=len(damaged),
        multi_label=listing.multi_label,
        labels_file=listing.labels_file,
    )
    if info.problems():
        raise ConversionError(f"{info.problems()[0]}; {out} is left incomplete")
    if not info.num_records:
        raise ConversionError(
            f"no input became a record ({rejects.count} rejected; see the reasons below)\n"
            + "\n".join(f"  {p}: {r}" for p, r in rejects.first)
        )
    if split_counts is not None and not allow_fewer:
        valid: dict[int, int] = defaultdict(int)
        for split in info.splits.values():
            for cls, count in split.label_counts.items():
                valid[listing.class_names.index(cls)] += count
        _check_split_counts(valid, split_counts, listing.class_names, "valid images (after rejects)")
    short = _short_splits(info.splits, split_counts or {}, listing.class_names) if allow_fewer else []
    info = dataclasses.replace(
        info,
        warnings=tuple(
            listing.warnings
            + short
            + _untrained_classes(listing.class_names, info.splits)
            + _leaks(info.duplicates)
            + _kept_damaged(damaged)
        ),
    )
    moved = [
        name
        for shard in summary["shards"]
        for name in (shard["filename"], record_index.index_filename(shard["filename"]))
    ] + [metadata.REJECTS]
    if not FileSystems.exists(FileSystems.join(out, record_index.FOLDER)):
        FileSystems.mkdirs(FileSystems.join(out, record_index.FOLDER))  # (local folders; object stores have none)
    FileSystems.rename(
        [FileSystems.join(staging, *(("shards", name) if name != metadata.REJECTS else (name,))) for name in moved],
        [FileSystems.join(out, name) for name in moved],
    )
    with FileSystems.create(FileSystems.join(out, metadata.DAMAGED_JPEGS)) as f:
        f.write("".join(metadata.json_text(entry) + "\n" for entry in damaged).encode())
    if listing.labels_file:
        with FileSystems.create(FileSystems.join(out, metadata.LABELS_WITHOUT_IMAGES)) as f:
            f.write(
                "".join(
                    metadata.json_text({"line": line, "id": identifier}) + "\n"
                    for line, identifier in listing.without_images
                ).encode()
            )
    listed = listed_groups(groups)
    write_duplicates(out, listed)
    metadata_writer.write(out, info, rejects.kinds, listed)
    FileSystems.delete([staging])
    return info


def _splits(
    summary: dict[str, Any], class_names: Sequence[str], label_sets: Sequence[tuple[int, ...]] | None = None
) -> dict[str, metadata.Split]:
    """The summary's split statistics and shard descriptions as typed splits, in reading order. With `label_sets`
    (multi-label), the records counted per label set become records per class and their co-occurrence."""
    splits = {}
    for stats in summary["splits"]:
        shards = sorted((s for s in summary["shards"] if s["split"] == stats["split"]), key=lambda s: s["index"])
        cooccurrence: tuple[tuple[int, ...], ...] = ()
        if label_sets is None:
            label_counts = {metadata.label_name(class_names, int(k)): v for k, v in stats["label_counts"].items()}
        else:
            cooccurrence = labels_lib.tally(
                {int(k): v for k, v in stats["label_counts"].items()}, label_sets, len(class_names)
            )
            label_counts = {name: cooccurrence[i][i] for i, name in enumerate(class_names)}
        splits[stats["split"]] = metadata.Split(
            name=stats["split"],
            shards=tuple(metadata.Shard(s["filename"], s["num_records"], s["num_bytes"], s["sha256"]) for s in shards),
            label_counts=label_counts,
            mean=tuple(stats["mean"]),
            std=tuple(stats["std"]),
            size_histogram=tuple(stats["size_histogram"]),
            width_range=tuple(stats["width_range"]),
            height_range=tuple(stats["height_range"]),
            passthrough=stats["passthrough"],
            cooccurrence=cooccurrence,
        )
    return {name: splits[name] for name in metadata.split_names(splits)}


def labels_spec(options: ConvertOptions) -> csv_labels.LabelsSpec | None:
    """What `--labels` and its options ask of the CSV file (None: labels from the layout)."""
    if options.labels is None:
        return None
    return csv_labels.LabelsSpec(
        options.labels, options.id_column, options.label_columns, options.label_separator, options.multi_label
    )


def _fingerprint(summary: dict[str, Any], labels_file: metadata.LabelsFile | None) -> str:
    """The source's fingerprint (the inputs' shares), and with --labels the CSV file's bytes: new labels, a new
    source."""
    if labels_file is None:
        return summary["fingerprint"]
    return hashlib.sha256(f"{summary['fingerprint']}:{labels_file.sha256}".encode()).hexdigest()


def duplicate_groups(
    found: dict[str, list[list[tuple[str, str, int]]]],
    class_names: Sequence[str],
    label_sets: Sequence[tuple[int, ...]] | None = None,
) -> dict[str, list[metadata.DuplicateGroup]]:
    """The summary's groups of duplicates (per kind, lists of (path, split, label), by path) as typed groups (with
    `label_sets`, labels are label set ids)."""

    def name(label: int) -> str:
        return metadata.label_name(class_names, label if label_sets is None else label_sets[label])

    return {
        kind: [
            metadata.DuplicateGroup(
                kind, tuple(metadata.DuplicateMember(path, split, name(label)) for path, split, label in group)
            )
            for group in groups
        ]
        for kind, groups in found.items()
    }


def listed_groups(groups: dict[str, list[metadata.DuplicateGroup]]) -> list[metadata.DuplicateGroup]:
    """What duplicates.jsonl lists: every near group (each exact group lies within one), as "exact" where all its
    members are one group of exact copies."""
    exact = {group.members for group in groups["exact"]}
    return [dataclasses.replace(group, kind="exact") if group.members in exact else group for group in groups["near"]]


def write_duplicates(out: str, groups: Sequence[metadata.DuplicateGroup]) -> None:
    """OUT/duplicates.jsonl: one group per line, in the order given."""
    with FileSystems.create(FileSystems.join(out, metadata.DUPLICATES)) as f:
        f.write("".join(group.to_json() + "\n" for group in groups).encode())


def _duplicates(
    groups: dict[str, list[metadata.DuplicateGroup]], dedupe: str | None, removed: int
) -> metadata.Duplicates:
    """What the records' duplicate groups (per kind) and the duplicates `removed` by --dedupe add up to."""

    def counts(kind: str) -> metadata.DuplicateCounts:
        return metadata.DuplicateCounts(
            groups=len(groups[kind]),
            images=sum(len(g.members) for g in groups[kind]),
            leaks=sum(g.leak for g in groups[kind]),
            labels_differ=sum(g.labels_differ for g in groups[kind]),
        )

    leaking = next((group.members for group in groups["near"] if group.leak), None)
    example = (
        {}
        if leaking is None
        else {
            member.path: member.split
            for member in (leaking[0], next(m for m in leaking if m.split != leaking[0].split))
        }
    )
    return metadata.Duplicates(
        threshold=duplicates.NEAR_THRESHOLD,
        colour_tolerance=duplicates.COLOUR_TOLERANCE,
        structure_tolerance=duplicates.STRUCTURE_TOLERANCE,
        exact=counts("exact"),
        near=counts("near"),
        leak_example=example,
        dedupe=dedupe,
        removed=removed,
    )


def _damaged_jpegs(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The damaged JPEGs kept that are records (not removed by --dedupe, nor left unselected), by path: each with
    its split, shard, index in the shard and libjpeg's warning (damaged_jpegs.jsonl's lines)."""
    warnings = dict(summary["damaged"])
    return sorted(
        (
            {
                "path": path,
                "split": shard["split"],
                "shard": shard["filename"],
                "record": index,
                "warning": warnings[path],
            }
            for shard in summary["shards"]
            for index, path in shard["damaged"]
        ),
        key=lambda entry: entry["path"],
    )


def _kept_damaged(damaged: list[dict[str, Any]]) -> list[str]:
    """The warning for damaged JPEGs kept by --keep-damaged-jpegs: their pictures are probably garbled."""
    if not damaged:
        return []
    return [
        f"--keep-damaged-jpegs kept {len(damaged)} damaged JPEG(s) whose pictures are probably garbled, e.g. "
        f"{damaged[0]['path']!r} ({damaged[0]['warning']}); each is listed with libjpeg's warning in "
        f"{metadata.DAMAGED_JPEGS}"
    ]


def _leaks(found: metadata.Duplicates | None) -> list[str]:
    """The warning for duplicate groups across splits: a copy in train with its twin in test inflates test scores."""
    if found is None or not found.near.leaks:
        return []
    (first, first_split), (second, second_split) = found.leak_example.items()
    return [
        f"LEAK: {found.near.leaks} group(s) of duplicate images span splits ({found.exact.leaks} of exact "
        f"copies), e.g. {first!r} ({first_split}) and {second!r} ({second_split}); test scores count them "
        f"as unseen. --dedupe near keeps one image per group; every group is listed in {metadata.DUPLICATES}"
    ]


def _inputs_per_class(listing: SourceListing) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    for task in listing.tasks:
        for f in task.files:
            if f.label is not None:
                counts[f.label] += 1
    return counts


def _check_split_options(listing: SourceListing, options: ConvertOptions) -> None:
    """Refuse split options that cannot apply to this source (never ignore them)."""
    own = listing.fixed_splits
    if own and options.split_counts is not None:
        raise ConversionError(f"`split_counts` does not apply: the source has its own splits ({', '.join(own)})")
    if own and options.splits != splits_lib.DEFAULT_SPLITS:
        raise ConversionError(
            f"`splits` does not apply: the source has its own splits ({', '.join(own)}); "
            "`validation_from_train` FRACTION holds out validation from its train split"
        )
    if options.validation_from_train is None:
        return
    if not own:
        raise ConversionError(
            "`validation_from_train` applies to a source with its own train split (IDX files, "
            "train/ and test/ folders); here `splits` chooses every split"
        )
    if metadata.VALIDATION in own or metadata.TRAIN not in own:
        raise ConversionError(f"`validation_from_train` does not apply: the source's splits are {', '.join(own)}")


def _check_split_counts(have: dict[int, int], asked: dict[str, int], class_names: list[str], what: str) -> None:
    """Raise for the first class with fewer `what` than --split-counts asks for in all splits together."""
    wanted = sum(asked.values())
    for label, name in enumerate(class_names):
        if have.get(label, 0) < wanted:
            text = ",".join(f"{split}={count}" for split, count in asked.items())
            raise ConversionError(
                f"class {name!r} has {have.get(label, 0)} {what} but `split_counts` {text} asks for {wanted}; "
                "lower the counts, or pass `split_counts_allow_fewer` to take what exists"
            )


def _short_splits(splits: dict[str, metadata.Split], asked: dict[str, int], class_names: list[str]) -> list[str]:
    """Warnings for the splits that --split-counts-allow-fewer left short of what was asked."""
    warnings = []
    for split, count in asked.items():
        counts = splits[split].label_counts if split in splits else {}
        short = [c for c in class_names if counts.get(c, 0) < count]
        if short:
            warnings.append(
                f"split {split!r} has fewer than the {count} records per class asked for "
                f"{len(short)} class(es), e.g. {short[0]!r} with {counts.get(short[0], 0)}"
            )
    return warnings


def _untrained_classes(class_names: list[str], splits: dict[str, metadata.Split]) -> list[str]:
    """A warning naming the classes without any training record (a model cannot learn them)."""
    if metadata.TRAIN not in splits or not class_names:
        return []
    missing = [c for c in class_names if not splits[metadata.TRAIN].label_counts.get(c)]
    if not missing:
        return []
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    return [f"{len(missing)} class(es) have no training image: {shown}"]


def _default_name(src: str) -> str:
    """The dataset name from SRC's name; a generic one (Kaggle's `train`) gets its parent's name in front."""
    path = src.rstrip("/") if is_remote(src) else os.path.normpath(os.path.abspath(src))
    stem = os.path.basename(path)
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    if stem.lower() in _GENERIC_NAMES:
        stem = f"{os.path.basename(os.path.dirname(path))}_{stem}"
    name = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")
    return name if name and name[0].isalpha() else f"dataset_{name}".rstrip("_")


def _prepare_out(src: str, out: str, overwrite: bool) -> OutputLock | None:
    """Refuse OUT inside SRC, or a non-empty OUT unless --overwrite (and then only a shardflow dataset); take
    OUT's lock (local folders; raises `OutputLocked` while another conversion writes there)."""
    if is_remote(out):
        return None  # remote output: Beam's filesystems create it; overwrite rules apply to local folders
    src_abs, out_abs = os.path.realpath(src), os.path.realpath(out)
    if not is_remote(src) and os.path.isdir(src_abs) and (out_abs == src_abs or out_abs.startswith(src_abs + os.sep)):
        raise ConversionError(f"OUT {out!r} is inside SRC {src!r}; choose an output folder outside the source")
    if os.path.isfile(out_abs):
        raise ConversionError(f"OUT {out!r} is a file; give a folder")
    os.makedirs(out_abs, exist_ok=True)
    lock = OutputLock(out_abs).acquire()
    try:
        entries = [e for e in os.listdir(out_abs) if e != LOCK_NAME]
        if entries and not metadata.is_dataset_dir(out_abs):  # (said first: `overwrite` cannot help here)
            raise ConversionError(
                f"OUT {out!r} is not empty and not a shardflow dataset (no {metadata.DATASET_INFO}); `overwrite` "
                "will not replace it either, as it deletes only a dataset shardflow wrote: give a new or empty folder"
            )
        if entries and not overwrite:
            raise ConversionError(f"OUT {out!r} holds a shardflow dataset; pass `overwrite` to replace it")
        for entry in entries:
            path = os.path.join(out_abs, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    except BaseException:
        lock.release()
        raise
    return lock


def unknown_beam_options(beam_args: Sequence[str]) -> list[str]:
    """The arguments that no registered Beam pipeline option takes (Beam itself would drop them silently):
    unknown options, single-dash flags and stray words that are no option's value. ConversionError for a value
    Beam refuses (`--job_server_timeout abc`), in argparse's words without Beam's usage of all its options."""
    options = PipelineOptions(list(beam_args))
    beam_logger = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_logger.level
    beam_logger.setLevel(logging.ERROR)  # its own "Discarding unparseable args" warning
    try:
        with contextlib.redirect_stderr(io.StringIO()) as said:
            known = options.get_all_options()
            retained = options.get_all_options(retain_unknown_options=True)
    except SystemExit:  # (argparse's exit after its usage and "PROG: error: MESSAGE")
        raise ConversionError(said.getvalue().strip().splitlines()[-1].split(": error: ", 1)[-1]) from None
    finally:
        beam_logger.setLevel(level)
    values = {str(item) for value in retained.values() for item in (value if isinstance(value, list) else [value])}
    unknown = []
    for arg in beam_args:
        name = arg[2:].split("=", 1)[0].replace("-", "_") if arg.startswith("--") else None
        if name is None and (arg.startswith("-") or arg not in values):
            unknown.append(arg)
        elif name and name in retained and name not in known:
            unknown.append(arg.split("=", 1)[0])
    return list(dict.fromkeys(unknown))


def _did_you_mean(unknown: list[str]) -> str:
    """`; did you mean --max-side?` for the first unknown option close to a shardflow or Beam option."""
    names = [f"--{name.replace('_', '-')}" for name in argument_names()]
    return did_you_mean(unknown, names + [f"--{name}" for name in PipelineOptions([]).get_all_options()])


def _pipeline_options(beam_args: Sequence[str], workers: int) -> tuple[PipelineOptions, int | None]:
    """Beam options and the number of local workers (`options.local_workers`: None with a --runner)."""
    local = local_workers(beam_args, workers)
    return BeamOptions([*beam_args, *(local_beam_args(local) if local else ())]), local


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # what it says as it goes
    run()
