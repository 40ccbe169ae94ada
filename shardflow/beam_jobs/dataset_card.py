"""The dataset card, `OUT/README.md`: what a team receiving the dataset needs to know, in one page: what it is,
its classes and splits, a few images of each class (`samples.png`), statistics, what was rejected and why, its
duplicates (the leaks and groups whose labels differ named, the groups drawn in `duplicates.png`), how to load it
and how it was made."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from shardflow.core import labels as labels_lib
from shardflow.core import metadata

CARD = "README.md"
SAMPLES = "samples.png"  # drawn by `shardflow.core.pictures.class_samples`
DUPLICATES_PICTURE = "duplicates.png"  # drawn by `shardflow.core.pictures.duplicates_picture`


def summary(info: metadata.DatasetInfo) -> str:
    """One sentence: the description TFDS shows when none was given."""
    return (
        f"{info.num_records} images of {len(info.class_names)} classes converted by shardflow from "
        f"{info.num_inputs} inputs ({info.layout} layout); {info.num_rejected} rejected, listed in "
        f"{metadata.REJECTS}."
    )


def markdown(info: metadata.DatasetInfo, reject_kinds: Counter[str], groups: Sequence[metadata.DuplicateGroup]) -> str:
    """The card: what the dataset holds, its rejects by kind (`metadata.reject_kind`), its duplicates."""
    card = info.card
    lines = [f"# {info.name} {card.version}", "", card.description or summary(info), ""]
    lines += [
        f"- {label}: {value}" for label, value in (("Homepage", card.homepage), ("License", card.license)) if value
    ]
    if card.citation:
        lines += ["", "Cite as:", "", "```", card.citation.strip(), "```"]
    storage = f"{info.image_format}, {info.channels} channel(s)" + (
        f", longer side at most {info.max_side} px" if info.max_side else ""
    )
    lines += [
        "",
        "## Contents",
        "",
        f"Classes ({len(info.class_names)}): {', '.join(info.class_names) or '-'}.",
        f"Images: {storage}.",
        "",
        "| split | records | shards | MB | per class | mean (0-255) | std |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, split in info.splits.items():
        classes = ", ".join(f"{c} {n}" for c, n in split.label_counts.items())
        lines.append(
            f"| {name} | {split.num_examples} | {len(split.shards)} | {split.num_bytes / 2**20:.1f} | "
            f"{classes} | {_numbers(split.mean)} | {_numbers(split.std)} |"
        )
    lines += _labels(info)
    lines += ["", f"![A few images of each class]({SAMPLES})"]
    lines += ["", "## Rejected inputs", ""]
    if reject_kinds:
        lines += [
            f"{reject_kinds.total()} of {info.num_inputs} inputs could not become records (each is listed "
            f"with its reason in `{metadata.REJECTS}`):",
            "",
        ]
        lines += [f"- {reason}: {count}" for reason, count in reject_kinds.most_common()]
    else:
        lines.append(f"None: all {info.num_inputs} inputs became records.")
    if info.duplicates:
        lines += [
            "",
            "## Duplicates",
            "",
            info.duplicates.sentence() + ".",
            "",
            "Exact duplicates decode to the same pixels; near duplicates look the same (re-encoded, "
            "resized). A leak is a group with images in more than one split: a test image whose twin is "
            "in train is not unseen.",
        ]
        lines += _named(
            "Leaks (path, split, class; the first is the one `--dedupe` keeps)",
            [group for group in groups if group.leak],
        )
        lines += _named(
            "Groups whose labels differ (a labelling question)", [group for group in groups if group.labels_differ]
        )
        if groups:
            lines += [
                "",
                f"![Groups of duplicates side by side, leaks first; each group is a line of "
                f"{metadata.DUPLICATES}]({DUPLICATES_PICTURE})",
            ]
    if info.warnings:
        lines += ["", "## Warnings", ""] + [f"- {warning}" for warning in info.warnings]
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "import tensorflow_datasets as tfds",
        "",
        'ds = tfds.builder_from_directory("THIS_FOLDER").as_dataset(split="train")',
        *(
            [
                f"# label: the indices of each image's classes; multi-hot: "
                f"tf.reduce_max(tf.one_hot(label, {len(info.class_names)}), axis=0)"
            ]
            if info.multi_label
            else []
        ),
        f"# or, with this folder at ROOT/{info.name}/{card.version}: "
        f'tfds.load("{info.name}:{card.version}", data_dir="ROOT")',
        "",
        "from shardflow.pipeline import load  # the fast path: parallel reads, DCT-scaled decode",
        "",
        'train = load("THIS_FOLDER", "train", batch_size=32, image_size=150)',
        "```",
        "",
    ]
    if info.provenance:
        made = info.provenance
        lines += [
            "## How it was made",
            "",
            f"shardflow {made.shardflow_version} converted `{made.source}` on {made.created} with the "
            f"{made.runner}. `shardflow verify THIS_FOLDER` checks every shard against the checksums in "
            f"`{metadata.SHARDFLOW_INFO}`. Options:",
            "",
            "```json",
            json.dumps(made.options, indent=1, sort_keys=True),
            "```",
            "",
        ]
    return "\n".join(lines)


def _labels(info: metadata.DatasetInfo) -> list[str]:
    """Where the labels came from (`--labels`) and, for a multi-label dataset, their frequencies and co-occurrence."""
    if not (info.labels_file or info.multi_label):
        return []
    lines = ["", "## Labels", ""]
    if info.labels_file:
        lines += [labels_lib.source_sentence(info.labels_file, info.multi_label) + ".", ""]
    if info.multi_label:
        lines += [
            "Each image has any number of classes: `label` holds their indices (TFDS `Sequence(ClassLabel)`); "
            '`shardflow.pipeline.load` gives them as multi-hot float vectors. "per class" above counts the '
            "images with each class (label frequencies).",
            "",
        ]
        lines += [f"- {line}" for line in labels_lib.summary_lines(info)]
        table = labels_lib.matrix_table(info)
        if table:
            lines += [
                "",
                "Co-occurrence over all splits (images with both classes; on the diagonal, with the class):",
                "",
            ] + table
    return lines


def _named(title: str, groups: Sequence[metadata.DuplicateGroup]) -> list[str]:
    """A titled list naming the first of `groups` (none: nothing)."""
    if not groups:
        return []
    return ["", f"{title}:", ""] + [f"- {line}" for line in metadata.named_groups(groups, quote="`")]


def _numbers(values: Sequence[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)
