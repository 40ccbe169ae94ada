"""The tf.data layer: converted shards -> decoded, resized uint8 batches; Augment/Resize/Normalize for the model;
`Preprocessing`, the same pixels for image files (prediction, serving)."""

from shardflow.pipeline.augment import Augment
from shardflow.pipeline.normalize import Normalize
from shardflow.pipeline.preprocessing import Preprocessing
from shardflow.pipeline.read_config import ReadConfig
from shardflow.pipeline.reader import damaged_shards_named, load, read, steps_per_epoch
from shardflow.pipeline.resize import Resize

__all__ = [
    "Augment",
    "Normalize",
    "Preprocessing",
    "ReadConfig",
    "Resize",
    "damaged_shards_named",
    "load",
    "read",
    "steps_per_epoch",
]
