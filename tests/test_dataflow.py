"""What can be checked of the Dataflow path offline: the package Beam would stage, and the pipeline it submits."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tarfile

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from shardflow.beam_jobs.convert import ConvertOptions, build
from shardflow.beam_jobs.sources import list_source
from shardflow.core.images import ImageOptions

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_setup_py_builds_an_sdist_with_the_package(tmp_path):
    """Dataflow runs `python setup.py sdist` on --setup_file and installs the result on every worker."""
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (archive,) = tmp_path.glob("shardflow-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {
        "setup.py",
        "shardflow/beam_jobs/convert.py",
        "shardflow/core/schema.py",
        "shardflow/core/metadata.py",
    } <= names


def test_the_dataflow_pipeline_constructs_and_pickles(kaggle_dir, tmp_path):
    options = PipelineOptions(
        [
            "--runner",
            "DataflowRunner",
            "--project",
            "my-project",
            "--region",
            "europe-west1",
            "--temp_location",
            "gs://my-bucket/tmp",
            "--setup_file",
            str(ROOT / "setup.py"),
        ]
    )
    assert options.view_as(SetupOptions).setup_file.endswith("setup.py")
    pipeline = beam.Pipeline(options=options)
    staging = str(tmp_path / ".shardflow-staging")  # gs:// paths need the apache-beam[gcp] extra (`.[gcp]`)
    build(pipeline, list_source(str(kaggle_dir)), ConvertOptions(), ImageOptions(), "pets", staging)
    proto = pipeline.to_runner_api()  # pickles every DoFn, as submission does
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"ReadAndPrepare", "PlanShards", "WriteShards", "Summarize"} <= {n.split("/")[0] for n in names}
