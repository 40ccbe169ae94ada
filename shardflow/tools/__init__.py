"""What works on a finished dataset: `verify` (checksums, framing, records, images), `diff` (what changed
between two versions), `inspect` (splits, classes, statistics, duplicates) and `preview` (pictures). `verify`,
`diff` and `inspect` import neither Keras nor Apache Beam; `preview_grid` shows augmentation, so it loads Keras
when called."""
