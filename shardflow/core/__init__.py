"""The dataset format both sides share, imported by the conversion (`beam_jobs`) and by every reader (`pipeline`,
`trainers`, `tools`); it imports neither Keras nor Apache Beam.

`schema` (the record layout, one TFDS feature spec), `metadata` (shardflow.json and the files beside the shards),
`framing` (TFRecord framing and CRCs), `shards` (a split's shards listed, read and checked against the metadata),
`record_index` (DALI's per-shard indexes), `files` (local or remote paths), `images` (per-image preparation),
`duplicates` (duplicate keys), `decoder` (stored records -> fields -> pixels), `pictures` (the card's pictures),
`figures` (matplotlib), `quiet` (TensorFlow's start-up chatter).
"""
