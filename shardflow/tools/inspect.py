"""`shardflow inspect`: a dataset's splits, classes, images, statistics and duplicates, from its metadata alone (no
shard is read), as text for people or as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from shardflow.core import files, metadata
from shardflow.core import labels as labels_lib


def inspect_json(info: metadata.DatasetInfo) -> dict:
    return json.loads(info.to_json())


def inspect_text(info: metadata.DatasetInfo, groups: Sequence[metadata.DuplicateGroup]) -> str:
    lines = [
        f"{info.data_dir}: dataset {info.name!r}",
        f"  classes ({len(info.class_names)}): {', '.join(info.class_names) or '(unlabeled)'}",
        f"  images: {info.image_format}, {info.channels} channel(s)"
        + (f", longer side <= {info.max_side}" if info.max_side else "")
        + (
            f", all {info.size[0]}x{info.size[1]} (HxW{', centre-cropped' if info.crop_to_aspect_ratio else ''})"
            if info.size
            else ""
        ),
        f"  inputs: {info.num_inputs}  records: {info.num_records}  rejected: {info.num_rejected}"
        + (f"  unselected: {info.num_unselected}" if info.num_unselected else "")
        + (
            f"  damaged JPEGs kept: {info.damaged_jpegs} (listed in {metadata.DAMAGED_JPEGS})"
            if info.damaged_jpegs
            else ""
        ),
        "  duplicates: " + (info.duplicates.sentence() if info.duplicates else "not looked for (an older shardflow)"),
    ]
    about_labels = (
        [labels_lib.source_sentence(info.labels_file, info.multi_label)] if info.labels_file else []
    ) + labels_lib.summary_lines(info)
    lines[2:2] = [f"  {line}" for line in about_labels]  # after the classes
    listed_in = files.join(info.data_dir, metadata.DUPLICATES)
    for title, named in (
        ("leaks", [g for g in groups if g.leak]),
        ("labels differ", [g for g in groups if g.labels_differ]),
    ):
        if named:
            lines.append(f"    {title} ({len(named)} group(s); path (split, class), the first kept by --dedupe):")
            lines += [f"      {line}" for line in metadata.named_groups(named, listed_in=listed_in)]
    bins = metadata.SIZE_BINS
    labels = [f"<{bins[0]}"] + [f"{a}-{b - 1}" for a, b in zip(bins, bins[1:])] + [f">={bins[-1]}"]
    for name, split in info.splits.items():
        mb = split.num_bytes / 2**20
        lines.append(f"\n  {name}: {split.num_examples} records, {len(split.shards)} shard(s), {mb:.1f} MB")
        lines.append(
            f"    per class{' (images with it)' if info.multi_label else ''}: "
            + ", ".join(f"{c} {n}" for c, n in split.label_counts.items())
        )
        lines.append(
            "    mean: "
            + " ".join(f"{v:.1f}" for v in split.mean)
            + "   std: "
            + " ".join(f"{v:.1f}" for v in split.std)
        )
        peak = max(split.size_histogram) or 1
        lines.append("    longer side (px):")
        for label, count in zip(labels, split.size_histogram):
            if count:
                lines.append(f"      {label:>9} {count:>7}  {'#' * max(1, round(30 * count / peak))}")
    return "\n".join(lines)
