"""`shardflow ...`: a thin command-line layer over the Python API."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from shardflow import metadata


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "convert":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args, extra) or 0
    except (UsageError, ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"shardflow {args.command}: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample-data", help="write a learnable synthetic JPEG dataset")
    sample.add_argument("out")
    sample.add_argument("--layout", choices=("kaggle", "folders"), default="kaggle")
    sample.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    sample.add_argument("--classes", default="cat,dog", help="comma-separated class names (default cat,dog)")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(run=_sample_data)

    convert = commands.add_parser(
        "convert",
        help="convert images (folder, .zip, .tar[.gz], IDX) to sharded TFRecords",
        description="Convert raw images into a sharded, TFDS-compatible TFRecord dataset with Apache Beam. "
        "Unknown flags (--runner, --project, --job_endpoint, ...) go to Beam unchanged.",
    )
    convert.add_argument("src", help="a folder, a .zip, a .tar/.tar.gz/.tgz, or a folder of IDX files")
    convert.add_argument("out", help="the dataset folder to create")
    convert.add_argument("--name", help="dataset name used in shard file names (default: from SRC)")
    convert.add_argument("--layout", default="auto", choices=("auto", "kaggle", "folders", "idx"))
    convert.add_argument("--unlabeled", action="store_true", help="no labels (e.g. Kaggle's test1/): label -1")
    convert.add_argument("--class-names", help="comma-separated class order (default: sorted)")
    convert.add_argument("--splits", default="train=0.8,validation=0.1,test=0.1",
                         help="fractions by a stable hash of the path (default %(default)s)")
    convert.add_argument("--split-counts", help="exact records per class, e.g. train=1000,validation=500,test=500")
    convert.add_argument("--channels", type=int, choices=(1, 3), help="3 = RGB (default; IDX: 1)")
    convert.add_argument("--image-format", choices=("passthrough", "jpeg", "png", "raw"),
                         help="passthrough (default) keeps valid JPEGs byte for byte; IDX default: png")
    convert.add_argument("--max-side", type=int, help="downscale so the longer side is at most N pixels")
    convert.add_argument("--quality", type=int, default=95, help="JPEG quality when re-encoding (default 95)")
    convert.add_argument("--shard-size-mb", type=float, default=128.0, help="target shard size (default 128)")
    convert.add_argument("--workers", type=int, default=0, help="local worker processes (default: one per core)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    convert.set_defaults(run=_convert)

    inspect = commands.add_parser("inspect", help="show a dataset's splits, classes and statistics")
    inspect.add_argument("data")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(run=_inspect)
    return parser


def _sample_data(args, _extra) -> None:
    from shardflow.sample_data import write_sample_data

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    paths = write_sample_data(args.out, layout=args.layout, n=args.n, classes=classes, seed=args.seed)
    print(f"wrote {len(paths)} images ({', '.join(classes)}) to {args.out}")


def _convert(args, beam_args) -> None:
    from shardflow.beam_jobs import splits
    from shardflow.beam_jobs.convert import ConvertOptions, convert

    if args.max_side is not None and args.max_side < 1:
        raise UsageError("--max-side must be a positive number of pixels")
    if not 1 <= args.quality <= 100:
        raise UsageError("--quality must be between 1 and 100")
    if args.shard_size_mb <= 0:
        raise UsageError("--shard-size-mb must be positive")
    options = ConvertOptions(
        name=args.name,
        layout=args.layout,
        unlabeled=args.unlabeled,
        class_names=tuple(c.strip() for c in args.class_names.split(",")) if args.class_names else None,
        splits=splits.parse_splits(args.splits),
        split_counts=splits.parse_split_counts(args.split_counts) if args.split_counts else None,
        channels=args.channels,
        image_format=args.image_format,
        max_side=args.max_side,
        quality=args.quality,
        shard_size_mb=args.shard_size_mb,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    info = convert(args.src, args.out, options, beam_args)
    print(_summary_text(info, args.out))


def _inspect(args, _extra) -> None:
    meta = metadata.read(args.data)
    if args.json:
        print(json.dumps(_inspect_json(meta), indent=1))
    else:
        print(_inspect_text(meta))


def _inspect_json(meta: metadata.DatasetMetadata) -> dict:
    info = dict(meta.info)
    info["splits"] = {
        name: {key: value for key, value in split.items() if key != "split"} for name, split in meta.splits.items()
    }
    return info


def _summary_text(info: dict, out: str) -> str:
    rate = info["num_inputs"] / max(info["seconds"], 1e-9)
    lines = [
        f"converted {info['num_inputs']} inputs in {info['seconds']:.1f} s ({rate:.0f} inputs/s): "
        f"{info['num_records']} records, {info['num_rejected']} rejected"
        + (f" (reasons in {out}/{metadata.REJECTS})" if info["num_rejected"] else "")
        + (f", {info['num_unselected']} not selected by --split-counts" if info["num_unselected"] else "")
    ]
    for name, split in info["splits"].items():
        counts = ", ".join(f"{c} {n}" for c, n in split["label_counts"].items())
        lines.append(f"  {name:<11} {split['num_examples']:>7} records in {len(split['shards'])} shard(s)  ({counts})")
    lines.append(f"dataset: {out}")
    return "\n".join(lines)


def _inspect_text(meta: metadata.DatasetMetadata) -> str:
    from shardflow.beam_jobs.convert import SIZE_BINS

    info = meta.info
    lines = [
        f"{meta.data_dir}: dataset {meta.name!r}",
        f"  classes ({len(meta.class_names)}): {', '.join(meta.class_names) or '(unlabeled)'}",
        f"  images: {info['image_format']}, {meta.channels} channel(s)"
        + (f", longer side <= {info['max_side']}" if info.get("max_side") else ""),
        f"  inputs: {info['num_inputs']}  records: {info['num_records']}  rejected: {info['num_rejected']}"
        + (f"  unselected: {info['num_unselected']}" if info.get("num_unselected") else ""),
    ]
    labels = [f"<{SIZE_BINS[0]}"] + [f"{a}-{b - 1}" for a, b in zip(SIZE_BINS, SIZE_BINS[1:])] + [f">={SIZE_BINS[-1]}"]
    for name, split in meta.splits.items():
        mb = split["num_bytes"] / 2**20
        lines.append(f"\n  {name}: {split['num_examples']} records, {len(split['shards'])} shard(s), {mb:.1f} MB")
        lines.append("    per class: " + ", ".join(f"{c} {n}" for c, n in split["label_counts"].items()))
        lines.append("    mean: " + " ".join(f"{v:.1f}" for v in split["mean"])
                     + "   std: " + " ".join(f"{v:.1f}" for v in split["std"]))
        peak = max(split["size_histogram"]) or 1
        lines.append("    longer side (px):")
        for label, count in zip(labels, split["size_histogram"]):
            if count:
                lines.append(f"      {label:>9} {count:>7}  {'#' * max(1, round(30 * count / peak))}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
