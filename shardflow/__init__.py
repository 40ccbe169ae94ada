"""shardflow: image folders and archives -> sharded TFRecords (Beam) -> tf.data streams -> Keras trainers."""

__version__ = "0.2.0"
