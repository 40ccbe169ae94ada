"""The tf.data layer: converted shards -> decoded, resized uint8 batches; Augment/Normalize for the model."""
from shardflow.pipeline.augment import Augment
from shardflow.pipeline.normalize import Normalize
from shardflow.pipeline.reader import damaged_shards_named, load, steps_per_epoch

__all__ = ["Augment", "Normalize", "damaged_shards_named", "load", "steps_per_epoch"]
