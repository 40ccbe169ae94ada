"""Sample data the tests, the benchmarks and `shardflow sample-data` share: `sample_data` (learnable synthetic
photos in Kaggle's or flower_photos' layout), `sample_digits` (MNIST-like handwritten digits)."""
