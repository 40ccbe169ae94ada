"""The conversion job: sources -> validated images -> splits -> TFRecord shards + TFDS metadata."""
