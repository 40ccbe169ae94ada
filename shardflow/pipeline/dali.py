"""`load(..., backend="dali")`: the same batches as `load`, read and decoded by NVIDIA DALI.

DALI's own TFRecord reader reads the shards (with their record indexes, `record_index`), JPEGs are decoded on the
GPU (nvJPEG, `device="mixed"`) or, without a GPU, in DALI's CPU mode, and the resize to the model's size is one
bilinear `warp_affine` per image, with ImageDataGenerator's augmentation fused into it: the matrix is
`augment.affine_matrix`, the geometry `Augment` and `load(augment=...)` use. Normalization stays in the model
(`Normalize`), as with `load`: the batches are uint8.

Batches come back to host memory (one copy of the uint8 batch), so the result is an ordinary `tf.data.Dataset`
with `load`'s epochs: every record once per pass, the last batch partial (or dropped with `drop_remainder`), the
number of batches known. DALI pads each pass to whole, equal batches (`pad_last_batch`); the padding is cut off
here. `nvidia.dali` is imported only when this module's `load` runs.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from shardflow.core import files, metadata, record_index, schema
from shardflow.pipeline import augment as augment_lib
from shardflow.pipeline.read_config import ReadConfig

PACKAGES = ("nvidia-dali-cuda120", "nvidia-dali-tf-plugin-cuda120")
FILL_MODES = ("nearest", "constant")  # warp_affine: clamped coordinates, or a fill value
_DEFAULTS = {tf.string: "", tf.int64: 0, tf.float32: 0.0}  # a feature's value when a record lacks it
INSTALL = (
    f"pip install 'shardflow[dali]' (or {PACKAGES[0]}), then pip install --no-build-isolation "
    f"{PACKAGES[1]} (it compiles against the installed TensorFlow)"
)


def load(
    info: metadata.DatasetInfo, split: str, shards: Sequence[tuple[str, int]], size: tuple[int, int], config: ReadConfig
) -> tf.data.Dataset:
    """`reader.read`'s dataset from DALI: `shards` are the split's (path, records), checked; `size` the output
    size; `config` decided for the split (`ReadConfig.for_split`)."""
    dali = import_dali()
    params = augment_lib.parse_augment(config.augment)
    input_context, batch_size, shuffle = config.input_context, config.batch_size, bool(config.shuffle)
    if params and params["fill_mode"] not in FILL_MODES:
        raise ValueError(
            f"backend='dali' supports fill_mode {' or '.join(map(repr, FILL_MODES))}, got {params['fill_mode']!r}"
        )
    if any(files.is_remote(path) for path, _ in shards):
        raise ValueError(f"{info.data_dir}: backend='dali' reads local files only; copy the dataset to a local disk")
    shard_id, num_shards = (
        (0, 1) if input_context is None else (input_context.input_pipeline_id, input_context.num_input_pipelines)
    )
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    paths = _reading_order(info, split, shards, shuffle, config.seed, shared=input_context is not None)
    total = sum(n for _, n in shards)
    count = total * (shard_id + 1) // num_shards - total * shard_id // num_shards  # records [total*i/n, total*(i+1)/n)
    device_id = 0 if tf.config.list_physical_devices("GPU") else None
    pipe = _pipeline(
        dali,
        info,
        paths,
        size,
        params,
        config.crop_to_aspect_ratio,
        shuffle=shuffle,
        shuffle_buffer=config.shuffle_buffer,
        shard_id=shard_id,
        num_shards=num_shards,
        batch_size=batch_size,
        device_id=device_id,
        seed=config.seed,
    )
    with tf.device("/cpu:0"):
        stream = dali.plugin_tf.DALIDataset(
            pipe,
            batch_size=batch_size,
            device_id=device_id,
            fail_on_device_mismatch=False,
            output_dtypes=(tf.uint8, tf.int64),
            output_shapes=((batch_size, *size, info.schema.channels), (batch_size,)),
        )
    return _epochs(stream, count, math.ceil(total / num_shards), batch_size, config.repeat, config.drop_remainder)


def _epochs(
    stream: tf.data.Dataset, count: int, padded: int, batch_size: int, repeat: bool, drop_remainder: bool
) -> tf.data.Dataset:
    """DALI's endless batches -> passes of `count` records: each pass is `padded` records (a pipeline's share,
    made equal across pipelines) rounded up to whole batches; what follows the `count` real ones is cut off."""
    steps = math.ceil(padded / batch_size)

    def real(step, batch):
        kept = tf.clip_by_value(count - (step % steps) * batch_size, 0, batch_size)
        return batch[0][:kept], batch[1][:kept]

    dataset = stream.enumerate().map(real)
    if not repeat:
        dataset = dataset.take(steps)
    smallest = batch_size if drop_remainder else 1
    dataset = dataset.filter(lambda images, labels: tf.shape(labels)[0] >= smallest)
    if not repeat:
        dataset = dataset.apply(
            tf.data.experimental.assert_cardinality(
                count // batch_size if drop_remainder else math.ceil(count / batch_size)
            )
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _reading_order(
    info: metadata.DatasetInfo,
    split: str,
    shards: Sequence[tuple[str, int]],
    shuffle: bool,
    seed: int | None,
    shared: bool,
) -> list[tuple[str, str]]:
    """(shard, index) paths in the order DALI reads them: shuffled when shuffling (by `seed`; pipelines that share
    the records keep the stored order without one, so they agree on who reads what), else stored."""
    described = {files.join(info.data_dir, s.filename): s for s in info.split(split).shards}
    paths = [(path, record_index.index_for(path, described[path])) for path, _ in shards]
    if shuffle and not (shared and seed is None):
        random.Random(seed).shuffle(paths)
    return paths


def import_dali() -> Any:
    """The DALI modules this backend uses, or an ImportError that says what to install."""
    try:
        import types

        from nvidia import dali
        from nvidia.dali import fn, tfrecord
        from nvidia.dali import math as dali_math
        from nvidia.dali import types as dali_types
        from nvidia.dali.plugin import tf as plugin_tf
    except ImportError as error:
        raise ImportError(f"backend='dali' needs NVIDIA DALI and its TensorFlow plugin ({error}); {INSTALL}") from error
    return types.SimpleNamespace(
        pipeline_def=dali.pipeline_def, fn=fn, tfrecord=tfrecord, math=dali_math, types=dali_types, plugin_tf=plugin_tf
    )


def _pipeline(
    dali: Any,
    info: metadata.DatasetInfo,
    paths: list[tuple[str, str]],
    size: tuple[int, int],
    params: dict[str, Any] | None,
    crop_to_aspect_ratio: bool,
    *,
    shuffle: bool,
    shuffle_buffer: int,
    shard_id: int,
    num_shards: int,
    batch_size: int,
    device_id: int | None,
    seed: int | None,
) -> Any:
    """The DALI pipeline: records -> (uint8 images [size, channels], int64 labels), in host memory."""
    fn = dali.fn
    features = {key: _feature(dali, spec) for key, spec in info.schema.parse_spec().items() if key != schema.FILENAME}

    @dali.pipeline_def(
        batch_size=batch_size, num_threads=os.cpu_count() or 1, device_id=device_id, seed=seed, exec_dynamic=True
    )
    def records():
        record = fn.readers.tfrecord(
            path=[p for p, _ in paths],
            index_path=[i for _, i in paths],
            features=features,
            random_shuffle=shuffle,
            initial_fill=shuffle_buffer,
            shard_id=shard_id,
            num_shards=num_shards,
            stick_to_shard=True,
            pad_last_batch=True,
            name="records",
        )
        images = _decode(dali, record, info.schema, "cpu" if device_id is None else "mixed")
        if size != info.stored_size or params or crop_to_aspect_ratio:
            draws = [fn.random.uniform(range=[0.0, 1.0]) for _ in range(augment_lib.DRAWS)] if params else None
            images = resample(dali, images, size, info.schema.channels, params, crop_to_aspect_ratio, draws)
        labels = fn.reshape(record[schema.LABEL], shape=[])
        return images.cpu(), labels

    return records()


def _feature(dali: Any, spec: tf.io.FixedLenFeature) -> Any:
    """A TF parse spec entry as DALI's."""
    kind = {tf.string: dali.tfrecord.string, tf.int64: dali.tfrecord.int64, tf.float32: dali.tfrecord.float32}
    return dali.tfrecord.FixedLenFeature(list(spec.shape), kind[spec.dtype], _DEFAULTS[spec.dtype])


def _decode(dali: Any, record: dict[str, Any], record_schema: schema.RecordSchema, device: str) -> Any:
    """The stored images as uint8 HWC, decoded on the GPU (device "mixed") or the CPU."""
    fn = dali.fn
    if record_schema.encoding == "raw":
        keys = dict(zip(("shape", "value"), record_schema.image_keys))  # image/shape, image/value
        images = fn.reshape(
            record[keys["value"]], shape=fn.cast(record[keys["shape"]], dtype=dali.types.INT32), layout="HWC"
        )
        return images if device == "cpu" else images.gpu()
    output_type = dali.types.GRAY if record_schema.channels == 1 else dali.types.RGB
    return fn.decoders.image(
        record[record_schema.image_keys[0]], device=device, output_type=output_type, adjust_orientation=False
    )  # like tf.io.decode_jpeg: the converter already oriented


def resample(
    dali: Any,
    images: Any,
    size: tuple[int, int],
    channels: int,
    params: dict[str, Any] | None,
    crop_to_aspect_ratio: bool = False,
    draws: Sequence[Any] | None = None,
) -> Any:
    """Images (DALI graph nodes, any size) -> uint8 at `size`, centre-cropped to its aspect first if asked, and
    augmented with `params` from `draws` (`augment.DRAWS` uniform numbers in [0, 1) per image, as
    `augment.random_geometry` takes them): one bilinear `warp_affine` per image, then brightness and channel shift
    (like `augment._augment`). `dali`: what `import_dali` returns."""
    fn, dmath, types = dali.fn, dali.math, dali.types
    shape = images.shape(dtype=types.FLOAT)  # on the CPU, also for images on the GPU
    height, width = shape[0], shape[1]
    if crop_to_aspect_ratio:  # the window of decoder.central_crop_window
        aspect = size[1] / size[0]
        crop_h = dmath.max(dmath.min(height, dmath.floor(width / aspect + 0.5)), 1)
        crop_w = dmath.max(dmath.min(width, dmath.floor(height * aspect + 0.5)), 1)
        corner = fn.stack(dmath.floor((height - crop_h) / 2), dmath.floor((width - crop_w) / 2))
        images = fn.slice(
            images, corner, fn.stack(crop_h, crop_w), axes=[0, 1], normalized_anchor=False, normalized_shape=False
        )
        height, width = crop_h, crop_w
    geometry: dict[str, Any] = {}
    brightness = None
    if params:
        if draws is None:
            raise ValueError("`params` need `draws`: augment.DRAWS uniform numbers per image")
        geometry, brightness = augment_lib.random_geometry(params, draws, size)
    matrix = augment_lib.affine_matrix(
        (height, width), size, sin=dmath.sin, cos=dmath.cos, pixel_centre=0.5, **geometry
    )
    matrix = fn.reshape(fn.stack(*[_node(dali, e) for row in matrix for e in row]), shape=[2, 3])
    fill = {"fill_value": params["cval"]} if params and params["fill_mode"] == "constant" else {}
    images = fn.warp_affine(
        images, _beside(images, matrix), size=size, interp_type=types.INTERP_LINEAR, dtype=types.FLOAT, **fill
    )
    if params and params["channel_shift_range"]:
        shifts = augment_lib.symmetric(
            fn.random.uniform(range=[0.0, 1.0], shape=[1, 1, channels]), params["channel_shift_range"]
        )
        images = dmath.clamp(images + _beside(images, shifts), 0, 255)
    if params and params["brightness_range"] is not None:
        images = dmath.min(images * _beside(images, brightness), 255)
    return fn.cast(images, dtype=types.UINT8)  # rounded to nearest and clamped (saturated), like augment._like_input


def _node(dali: Any, value: Any) -> Any:
    """A matrix entry as a float graph node (entries that are plain numbers become constants)."""
    if isinstance(value, (int, float)):
        return dali.types.Constant(float(value), dtype=dali.types.FLOAT)
    return dali.fn.cast(value, dtype=dali.types.FLOAT)


def _beside(images: Any, node: Any) -> Any:
    """`node` on the device of `images` (the random draws are made on the CPU)."""
    return node.gpu() if images.device == "gpu" else node
