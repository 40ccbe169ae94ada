"""shardflow: raw images -> sharded TFRecords (Apache Beam) -> fast tf.data streams -> Keras trainers.

Also Beam's ``--setup_file``: remote workers install this package from it.
"""
from setuptools import find_packages, setup

setup(
    name="shardflow",
    version="0.1.0",
    description="Image data pipelines for TensorFlow: Beam conversion to TFRecords, tf.data streams, trainers.",
    python_requires=">=3.10",
    packages=find_packages(include=["shardflow", "shardflow.*"]),
    install_requires=[
        "apache-beam[tfrecord]>=2.60,<3",
        "google-crc32c>=1.5,<2",
        "matplotlib>=3.6,<4",  # history.png, preview grids, the card's samples.png (font fallback: 3.6)
        "numpy>=1.26,<3",
        "pillow>=10.0,<13",
        "psutil>=5",  # stopping Beam's local worker processes on Ctrl-C or a dead worker
        "simplejpeg>=1.9,<2",  # libjpeg-turbo that reports libjpeg's warnings (damaged JPEGs), which PIL silences
        "tensorboard>=2.16,<3",
        "tensorflow>=2.16,<2.22",
        "tensorflow-datasets>=4.9.6,<5",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": ["pytest>=8", "tf-keras>=2.16,<2.22", "scipy>=1.11"],
        "gcp": ["apache-beam[gcp]>=2.60,<3"],  # Dataflow and gs:// paths
        # load(..., backend="dali"). The TF plugin compiles against the installed TensorFlow: install it after this
        # extra, `pip install --no-build-isolation nvidia-dali-tf-plugin-cuda120==<this version>` (see the Makefile).
        "dali": ["nvidia-dali-cuda120==2.4.0"],
    },
    entry_points={"console_scripts": ["shardflow=shardflow.cli:main"]},
)
