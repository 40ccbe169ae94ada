"""The tf.data layer: shards -> decoded, resized uint8 batches; Augment and Normalize layers."""
