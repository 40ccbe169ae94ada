"""The tf.data layer: converted shards -> decoded, resized uint8 batches; Augment/Normalize for the model."""
from shardflow.pipeline.reader import load, steps_per_epoch

__all__ = ["load", "steps_per_epoch"]
