"""`shardflow ...`: a thin command-line layer over the Python API.

Each subcommand is a `Command`: its arguments (convert's and train's from their option classes' `add_arguments`,
every default and choice the API's own) and what it runs. The library names parameters in its messages
(`max_side`, see `shardflow.core.messages`); here they become flags (--max-side), its warnings "warning: ..." lines
and its log lines plain lines on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the terminal

import shardflow  # noqa: E402  (after the environment is set)
from shardflow.core import labels as labels_lib  # noqa: E402
from shardflow.core import metadata, quiet  # noqa: E402
from shardflow.core.messages import INTERRUPTED, ShardflowWarning, did_you_mean, in_flags, pad  # noqa: E402

SUMMARY_MAX_CLASSES = 12  # more classes: the end-of-run summary gives their range per split


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, without a traceback."""


class Command(NamedTuple):
    """A subcommand: its arguments, and what runs it (with the arguments and, for convert, Beam's options)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, list[str]], int | None]
    uses_tensorflow: bool = False
    description: str | None = None


class Chosen(NamedTuple):
    """The subcommand a command line chose, with its parser and its flag for each parameter name."""

    command: Command
    parser: argparse.ArgumentParser
    flags: dict[str, str]


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    chosen: Chosen = args.chosen
    if extra and chosen.command.name != "convert":  # (convert hands them to Beam, which refuses unknown ones)
        chosen.parser.error(f"unrecognized arguments: {' '.join(extra)}{did_you_mean(extra, chosen.flags.values())}")
    quiet.quiet_beam_imports()
    try:
        with _said_in_flags(chosen.flags):
            if chosen.command.uses_tensorflow:
                quiet.start_tensorflow()
            return chosen.command.run(args, extra) or 0
    except (UsageError, ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"shardflow {args.command}: error: {in_flags(str(error), chosen.flags)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # (what the command had written is its to say: `convert` says OUT is incomplete)
        print(f"shardflow {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # `shardflow inspect DATA | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _commands() -> tuple[Command, ...]:
    return (
        Command("sample-data", "write a learnable synthetic JPEG dataset", _sample_data_arguments, _sample_data),
        Command(
            "convert",
            "convert images (folder, .zip, .tar[.gz], IDX) to sharded TFRecords",
            _convert_arguments,
            _convert,
            description="Convert raw images into a sharded, TFDS-compatible TFRecord dataset with "
            "Apache Beam. Beam pipeline options (--runner, --project, --job_endpoint, ...) go to Beam unchanged; "
            "any other option is refused.",
        ),
        Command("inspect", "show a dataset's splits, classes, statistics and duplicates", _inspect_arguments, _inspect),
        Command(
            "verify",
            "check checksums, record CRCs, counts and images of a dataset",
            _verify_arguments,
            _verify,
            uses_tensorflow=True,
        ),
        Command(
            "preview",
            "a grid of images (and augmented versions) as a PNG",
            _preview_arguments,
            _preview,
            uses_tensorflow=True,
        ),
        Command(
            "serve-data",
            "start a tf.data service dispatcher and workers here (every interface, no authentication)",
            _serve_data_arguments,
            _serve_data,
            uses_tensorflow=True,
            description="Start a tf.data service dispatcher and worker processes on this machine, for "
            '`load(..., data_service="grpc://HOST:PORT")` elsewhere. They listen on every network interface '
            "(TensorFlow's servers cannot bind one address, so there is no --host) with no authentication, and "
            "a worker runs whatever dataset graph a client sends: use it on a trusted network only, and keep "
            "the ports private with a firewall or a private network.",
        ),
        Command(
            "train", "train a tutorial model on a converted dataset", _train_arguments, _train, uses_tensorflow=True
        ),
        Command(
            "evaluate",
            "a run's loss and accuracy on a dataset split",
            _evaluate_arguments,
            _evaluate,
            uses_tensorflow=True,
        ),
        Command(
            "diff",
            "what changed between two versions of a dataset (exit 1 if anything did)",
            _diff_arguments,
            _diff,
            uses_tensorflow=True,
        ),
        Command(
            "predict",
            "classify images, folders or a converted split with a run",
            _predict_arguments,
            _predict,
            uses_tensorflow=True,
        ),
    )


def _parser() -> argparse.ArgumentParser:
    """`shardflow` and a subparser per `Command`; each knows its flag for every parameter name (`flags`)."""
    parser = argparse.ArgumentParser(prog="shardflow", description=shardflow.__doc__)
    parser.add_argument(
        "--version",
        action="version",
        version=f"shardflow {shardflow.__version__}",
        help="print shardflow's version and exit (`convert --version` is the dataset's)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in _commands():
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.description, formatter_class=_HelpFormatter
        )
        command.add_arguments(sub)
        sub.set_defaults(chosen=Chosen(command, sub, _flags(sub)))
    return parser


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's default said once: appended to its help unless the help says it, or there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or "default" in text
            or action.default in (None, argparse.SUPPRESS)
            or action.default is False
        ):
            return text
        return f"{text} (default: %(default)s)"


def _flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Parameter name -> the flag that sets it (its longest spelling), for the options of `parser`."""
    return {
        action.dest: max(action.option_strings, key=len)
        for action in parser._actions  # (argparse's list)
        if action.option_strings and action.dest != "help"
    }


@contextlib.contextmanager
def _said_in_flags(flags: Mapping[str, str]) -> Iterator[None]:
    """While a command runs: the library's log lines on stderr as they are, its warnings as "warning: ..." lines
    (each time), the parameters they name as `flags`."""
    logger = logging.getLogger("shardflow")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_InFlags(flags))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # (said once, whatever the root logger does)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", ShardflowWarning)
            warnings.showwarning = functools.partial(_show_warning, flags, warnings.showwarning)
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class _InFlags(logging.Formatter):
    """A log line as it is, the parameters it names as flags."""

    def __init__(self, flags: Mapping[str, str]):
        super().__init__("%(message)s")
        self.flags = flags

    def format(self, record: logging.LogRecord) -> str:
        return in_flags(super().format(record), self.flags)


def _show_warning(
    flags: Mapping[str, str],
    show_other: Callable,
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file=None,
    line: str | None = None,
) -> None:
    """`warnings.showwarning` for a command: shardflow's as "warning: ..." with flags; others as Python shows them."""
    if issubclass(category, ShardflowWarning):
        print(f"warning: {in_flags(str(message), flags)}", file=sys.stderr)
    else:
        show_other(message, category, filename, lineno, file, line)


def _defaults(function: Callable) -> dict:
    """A function's keyword defaults, so the CLI shows (and uses) the API's own."""
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


# -- each subcommand's arguments --------------------------------------------------------------------------------

DATA_HELP = "a dataset folder written by `shardflow convert`"
RUN_HELP = "a run folder written by `shardflow train`"


def _sample_data_arguments(parser: argparse.ArgumentParser) -> None:
    from shardflow.testing.sample_data import write_sample_data

    defaults = _defaults(write_sample_data)
    parser.add_argument("out", help="the folder to write the images to")
    parser.add_argument(
        "--layout",
        choices=("kaggle", "folders"),
        default=defaults["layout"],
        help="kaggle: cat.0.jpg names in one folder; folders: one folder per class",
    )
    parser.add_argument("--n", type=int, default=defaults["n"], help="number of images")
    parser.add_argument("--classes", default=",".join(defaults["classes"]), help="comma-separated class names")
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="the same seed, the same images")


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    from shardflow.beam_jobs.options import add_arguments

    add_arguments(parser)
    parser.add_argument(
        "--like",
        metavar="DATASET",
        help="repeat DATASET's conversion: every option from its shardflow.json (only --workers and "
        "--overwrite apply); says whether the shards came out byte-identical, or what changed",
    )


def _inspect_arguments(parser: argparse.ArgumentParser) -> None:
    from shardflow.core.pictures import DUPLICATE_GROUPS

    parser.add_argument("data", help=DATA_HELP)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--duplicates",
        metavar="FILE.png",
        help="draw the groups of duplicates side by side, a row each (leaks first), into this PNG",
    )
    parser.add_argument(
        "--groups", type=int, metavar="N", help=f"with --duplicates: draw at most N groups (default {DUPLICATE_GROUPS})"
    )


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help=DATA_HELP)
    parser.add_argument("--no-decode", action="store_true", help="skip decoding the images (faster)")


def _preview_arguments(parser: argparse.ArgumentParser) -> None:
    from shardflow.tools.preview import preview_grid

    defaults = _defaults(preview_grid)
    parser.add_argument("data", help=DATA_HELP)
    parser.add_argument("--out", required=True, help="the PNG file to write")
    parser.add_argument("--split", default=defaults["split"], help="the split to show")
    parser.add_argument("--augment", help="none, a preset (seed004) or ImageDataGenerator arguments as JSON")
    parser.add_argument("--images", type=int, default=defaults["images"], help="rows")
    parser.add_argument("--variants", type=int, default=defaults["variants"], help="augmented versions per image")
    parser.add_argument("--image-size", type=int, default=defaults["image_size"], help="pixels per side")
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="which images and augmentations")


def _serve_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=5050,
        help="the dispatcher's port, on every interface (0: any free one; the first line printed says which)",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from shardflow.trainers.options import add_arguments

    add_arguments(parser)


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help=RUN_HELP)
    parser.add_argument("data", help=DATA_HELP)
    parser.add_argument("--split", default=metadata.TEST, help="the split to evaluate on")


def _diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", help="the earlier dataset folder")
    parser.add_argument("new", help="the later dataset folder")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    from shardflow.trainers.options import THRESHOLD

    parser.add_argument("run", help=RUN_HELP)
    parser.add_argument("paths", nargs="+", help="image files, folders of images, or dataset folders")
    parser.add_argument("--split", default=metadata.TEST, help="the split, when a path is a converted dataset")
    parser.add_argument(
        "--csv",
        help="write Kaggle's submission format here, a row per input in id order: id,label (label: with two "
        "classes the probability of the second, else the class name), or the shape of the CSV file the "
        "dataset's labels came from (convert --labels)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help="multi-label: name the classes whose probability is above this",
    )


# -- what each subcommand runs ----------------------------------------------------------------------------------


def _sample_data(args, _extra) -> None:
    from shardflow.testing.sample_data import write_sample_data

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    paths = write_sample_data(args.out, layout=args.layout, n=args.n, classes=classes, seed=args.seed)
    print(f"wrote {len(paths)} images ({', '.join(classes)}) to {args.out}")


def _convert(args, beam_args) -> int | None:
    from shardflow.beam_jobs.fork_server import started_ahead
    from shardflow.beam_jobs.options import local_workers

    # A local job's fork server imports Beam while this process does: the job starts about 0.6 s sooner.
    with started_ahead() if (local_workers(beam_args, args.workers) or 1) > 1 else contextlib.nullcontext():
        from shardflow.beam_jobs.frozen_imports import frozen_imports

        with frozen_imports():
            from shardflow.beam_jobs.convert import ConversionInterrupted, convert
            from shardflow.beam_jobs.options import from_arguments
        if args.like:
            return _convert_like(args, beam_args)
        options = from_arguments(args)
        try:
            info = convert(args.src, args.out, options, beam_args)
        except ConversionInterrupted as interrupted:
            print(f"shardflow convert: {interrupted}", file=sys.stderr)
            return INTERRUPTED
    print(_summary_text(info, args.out))
    return 0


def _convert_like(args, beam_args) -> int:
    """`convert SRC OUT --like DATASET`: DATASET's options on SRC, then whether the result is the same."""
    from shardflow.beam_jobs.convert import convert
    from shardflow.beam_jobs.options import RUN_ONLY, ConvertOptions, argument_names
    from shardflow.tools.diff import diff, same_shards

    chosen: Chosen = args.chosen
    given = [
        chosen.flags[name]
        for name in argument_names()
        if name not in RUN_ONLY and getattr(args, name) != chosen.parser.get_default(name)
    ]
    if given:
        raise UsageError(f"--like takes every option from {args.like}; drop {', '.join(given)}")
    recorded = metadata.read(args.like)
    if recorded.provenance is None:
        raise UsageError(f"{args.like} records no conversion options (made by a shardflow before 0.2)")
    info = convert(
        args.src,
        args.out,
        ConvertOptions.like(recorded.provenance.options, workers=args.workers, overwrite=args.overwrite),
        beam_args,
    )
    print(_summary_text(info, args.out))
    same_source = info.provenance is not None and (
        info.provenance.source_fingerprint == recorded.provenance.source_fingerprint
    )
    if same_shards(recorded, info):
        print(
            f"identical to {args.like}: every shard byte for byte"
            + ("" if same_source else " (the source's fingerprint differs: files changed that no record depends on)")
        )
        return 0
    changes = diff(args.like, args.out)
    print(
        f"differs from {args.like}: "
        + (
            "the same source (same fingerprint), other shards: made by another shardflow version?"
            if same_source
            else "the source changed since it was made"
        )
    )
    for kind, paths in changes.examples.items():
        if paths:
            print(f"  {kind}: {', '.join(paths)}")
    return 1


def _inspect(args, _extra) -> None:
    from shardflow.core.pictures import DUPLICATE_GROUPS
    from shardflow.tools.inspect import inspect_json, inspect_text
    from shardflow.tools.preview import draw_duplicates

    if args.groups is not None and not args.duplicates:
        raise UsageError("--groups N applies to the picture of --duplicates FILE.png; give that too")
    if args.groups is not None and args.groups < 1:
        raise UsageError("--groups must be >= 1")
    info = metadata.read(args.data)
    if args.json:
        print(json.dumps(inspect_json(info), indent=1))
    else:
        groups = metadata.read_duplicates(args.data) if info.duplicates and info.duplicates.listed else []
        print(inspect_text(info, groups))
    if args.duplicates:
        out = draw_duplicates(args.data, args.duplicates, args.groups or DUPLICATE_GROUPS)
        print(f"wrote {out}", file=sys.stderr if args.json else sys.stdout)


def _verify(args, _extra) -> int:
    from shardflow.tools.verify import verify

    report = verify(args.data, decode_images=not args.no_decode)
    for problem in report.problems:
        print(f"{args.data}: {problem}")
    for shard in report.shards:
        for problem in shard.problems:
            print(f"{shard.split}: {shard.filename}: {problem}")
    for note in report.notes:
        print(f"{args.data}: {note}")
    if report.ok:
        print(
            f"{args.data}: OK, {report.records} records in {len(report.shards)} shards verified"
            + (
                f"; {report.damaged_kept} of them damaged JPEGs kept by --keep-damaged-jpegs (listed in "
                f"{metadata.DAMAGED_JPEGS})"
                if report.damaged_kept
                else ""
            )
        )
        return 0
    bad = sum(1 for s in report.shards if s.problems)
    print(
        f"{args.data}: FAILED, {bad} of {len(report.shards)} shards (or their record indexes) damaged", file=sys.stderr
    )
    return 1


def _preview(args, _extra) -> None:
    from shardflow.tools.preview import preview_grid

    out = preview_grid(
        args.data,
        args.out,
        split=args.split,
        augment=args.augment,
        images=args.images,
        variants=args.variants,
        image_size=args.image_size,
        seed=args.seed,
    )
    print(f"wrote {out}")


def _serve_data(args, _extra) -> None:
    from shardflow.pipeline.service import serve

    serve(args.port, args.workers)


def _train(args, _extra) -> int | None:
    from shardflow.trainers.options import from_arguments
    from shardflow.trainers.resume import Interrupted
    from shardflow.trainers.train import train

    try:
        metrics = train(args.data, args.out, from_arguments(args))
    except Interrupted as interrupted:
        print(f"shardflow train: {in_flags(str(interrupted), args.chosen.flags)}", file=sys.stderr)
        return 128 + interrupted.signum
    rates = metrics["images_per_second"]
    wait = metrics["input_wait_fraction"]
    scores = (
        f"test accuracy {metrics['test_accuracy']:.3f}, loss {metrics['test_loss']:.3f}"
        + (
            f", macro AUC {_score(metrics['test_auc'])}, macro F1 {metrics['test_f1']:.3f}"
            if "test_f1" in metrics
            else ""
        )
        + f" ({metrics['evaluated_on']} split)"
        if metrics["evaluated_on"]
        else "not evaluated (no test split)"
    )
    print(
        f"{args.out}: {scores}, {metrics['epochs_run']} epochs in {metrics['seconds']:.0f} s"
        + (f"; last epoch {rates[-1]:.0f} images/s" if rates else "")  # (none: resumed after the last epoch)
        + (f", {wait[-1]:.0%} of step time waiting for input" if wait else "")
    )
    return None


def _evaluate(args, _extra) -> None:
    from shardflow.trainers.predict import evaluate

    result = evaluate(args.run, args.data, args.split)
    print(
        f"{args.split}: accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}"
        + (f", macro AUC {result['auc']:.4f}, macro F1 {result['f1']:.4f}" if "f1" in result else "")
        + f" on {result['num_examples']} images"
    )


def _diff(args, _extra) -> int:
    from shardflow.tools.diff import diff

    result = diff(args.old, args.new)
    print(json.dumps(result.to_json(), indent=1) if args.json else result.text())
    return 0 if result.identical else 1


def _predict(args, _extra) -> None:
    from shardflow.trainers.predict import label_meaning, predict, run_labels_file, run_preprocessing, write_submission

    predictions = predict(args.run, args.paths, args.split, args.threshold)
    unread = [p for p in predictions if p.problem]
    if args.csv:  # first: the file does not depend on stdout (`... | head` closes it early)
        class_names, labels_file = run_preprocessing(args.run).class_names, run_labels_file(args.run)
        write_submission(predictions, args.csv, class_names, labels_file)
        meaning = label_meaning(predictions, class_names, labels_file)
        print(
            f"wrote {len(predictions)} predictions to {args.csv} ({meaning}"
            + (f"; {len(unread)} without a label: their files could not be read)" if unread else ")"),
            file=sys.stderr,
        )
    for prediction in predictions:
        print(prediction.sentence(), file=sys.stderr if prediction.problem else sys.stdout)
    if unread:
        print(f"{len(unread)} of {len(predictions)} inputs could not be read (listed above)", file=sys.stderr)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _summary_text(info: metadata.DatasetInfo, out: str) -> str:
    rate = info.num_inputs / max(info.seconds, 1e-9)
    lines = [
        f"converted {info.num_inputs} inputs in {info.seconds:.1f} s ({rate:.0f} inputs/s): "
        f"{info.num_records} records, {info.num_rejected} rejected"
        + (f" (reasons in {out}/{metadata.REJECTS})" if info.num_rejected else "")
        + (f", {info.num_unselected} not selected by --split-counts" if info.num_unselected else "")
    ]
    if info.duplicates and (info.duplicates.near.groups or info.duplicates.removed):
        lines.append(f"  duplicates: {info.duplicates.sentence()}")
    if info.labels_file:
        lines.append(f"  {labels_lib.source_sentence(info.labels_file, info.multi_label)}")
    if info.debris:
        lines.append(
            f"  skipped {len(info.debris)} macOS/Windows system file(s) such as {info.debris[0]!r} "
            f"(listed in {out}/{metadata.SHARDFLOW_INFO})"
        )
    for name, split in info.splits.items():
        lines.append(
            f"  {pad(name, 11)} {split.num_examples:>7} records in {len(split.shards)} shard(s)  "
            f"({_class_counts(split.label_counts, info.class_names)})"
        )
    lines += [f"warning: {warning}" for warning in info.warnings]
    lines.append(f"dataset: {out}")
    return "\n".join(lines)


def _class_counts(counts: dict[str, int], class_names: Sequence[str]) -> str:
    """Records per class of one split; with many classes, their range instead of every class."""
    if len(counts) <= SUMMARY_MAX_CLASSES and len(class_names) <= SUMMARY_MAX_CLASSES:
        return ", ".join(f"{c} {n}" for c, n in counts.items())
    values = [counts.get(c, 0) for c in class_names] or list(counts.values())
    present = sum(1 for v in values if v)
    return f"{present} of {len(values)} classes, {min(values)}-{max(values)} per class; `shardflow inspect` lists them"


if __name__ == "__main__":
    sys.exit(main())
