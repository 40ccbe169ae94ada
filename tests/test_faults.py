"""Faults around a conversion, built for real: a full disk, Ctrl-C, two conversions into one OUT.

Each runs the CLI as a separate process (`python -m shardflow.cli`), so a hang shows as a timeout, not as a
stuck test run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from shardflow.beam_jobs.local_workers import WORKER_MODULE
from shardflow.beam_jobs.out_lock import LOCK_NAME
from shardflow.cli import main
from shardflow.core import metadata
from shardflow.testing.sample_data import write_sample_data
from tests.conftest import convert_cli, ctrl_c_as_in_a_terminal, last_line, photo_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_convert(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        ctrl_c_as_in_a_terminal([sys.executable, "-m", "shardflow.cli", "convert", *map(str, args)]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def converting(out) -> bool:
    """Whether the conversion into `out` has workers reporting progress (images are being converted)."""
    progress = out / metadata.STAGING / "progress"
    return progress.is_dir() and any(progress.glob("*.json"))


def wait_until_converting(run: subprocess.Popen, out) -> None:
    """Until the conversion's workers report progress; fails if it ended first."""
    deadline = time.monotonic() + 60
    while not converting(out) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, "the conversion ended before images were being converted"


def errors_of(run: subprocess.Popen, timeout: float, hang: str) -> str:
    """The conversion's stderr once it exits; the test fails with `hang` if it has not within `timeout` seconds."""
    try:
        return run.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail(hang)


def beam_workers_of(pid: int) -> list[psutil.Process]:
    """Beam worker processes still running that this test's conversion started (orphans included)."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            if WORKER_MODULE in " ".join(process.info["cmdline"] or ()) and (process.info["environ"] or {}).get(
                "SHARDFLOW_TEST_RUN"
            ) == str(pid):
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module")
def corpus(sample_photos, tmp_path_factory):
    """250 sample JPEGs (about 7 MB): enough to overflow a 1 MB filesystem."""
    return photo_subset(sample_photos, tmp_path_factory.mktemp("faults") / "raw", per_class=125)


@pytest.fixture
def small_filesystem(tmp_path):
    """A 1 MB tmpfs mounted for this test (needs root); skipped where no such filesystem can be made."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if made.returncode:
        pytest.skip(f"cannot mount a 1 MB tmpfs to fill up (needs root): {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_full_disk_stops_with_one_line_and_leaves_out_incomplete(corpus, small_filesystem):
    out = small_filesystem / "out"
    started = time.monotonic()
    run = start_convert(corpus, out, "--workers", "2")
    err = errors_of(run, 90, "the conversion hung on a full disk")
    assert run.returncode == 2, err[-3000:]
    assert time.monotonic() - started < 60
    line = last_line(err)
    assert line.startswith("shardflow convert: error: disk full: no space left on ")
    assert str(small_filesystem) in line and "Traceback" not in err
    assert not (out / metadata.DATASET_INFO).exists() and (out / metadata.STAGING).exists()
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # (Beam's, for the killed worker)
def test_a_failed_job_leaves_no_thread_drawing_figures(corpus, tmp_path):
    """The card's figures warm up in a thread once the workers report. Were it still in matplotlib's code as Python
    exits after the job's error, the process would crash (a segfault or an abort) instead of exiting 2."""
    out = tmp_path / "out"

    def kill_a_worker_once_converting() -> None:
        deadline = time.monotonic() + 60
        while not converting(out) and time.monotonic() < deadline:
            time.sleep(0.02)
        beam_workers_of(os.getpid())[0].kill()

    os.environ["SHARDFLOW_TEST_RUN"] = str(os.getpid())
    try:
        threading.Thread(target=kill_a_worker_once_converting, daemon=True).start()
        assert convert_cli(corpus, out, "--workers", "2", "--image-format", "png") == 2
    finally:
        os.environ.pop("SHARDFLOW_TEST_RUN")
    assert "figures" not in [thread.name for thread in threading.enumerate()]


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])  # 1: Beam runs the job in this process
def test_ctrl_c_stops_the_workers_and_exits_130(corpus, tmp_path, workers):
    out = tmp_path / "out"
    os.environ["SHARDFLOW_TEST_RUN"] = str(os.getpid())  # marks the workers of this run (they inherit it)
    try:
        run = start_convert(corpus, out, "--workers", workers, "--image-format", "png")  # PNG: slow enough
        wait_until_converting(run, out)
        before = beam_workers_of(os.getpid())
        if workers == "2":  # worker processes to stop
            assert before, "no Beam worker process was running when Ctrl-C came"
        else:  # Beam runs the job in the launching process: the interrupt reaches it there
            assert not before
        run.send_signal(signal.SIGINT)
        err = errors_of(run, 30, "the conversion did not stop after Ctrl-C")
        assert run.returncode == 130, err[-2000:]
        assert last_line(err) == f"shardflow convert: interrupted; {out} is incomplete, rerun with --overwrite"
        assert "Traceback" not in err
        assert not beam_workers_of(os.getpid()) and not any(worker.is_running() for worker in before)
        assert not (out / metadata.DATASET_INFO).exists() and not (out / LOCK_NAME).exists()
    finally:
        os.environ.pop("SHARDFLOW_TEST_RUN")


@pytest.mark.parametrize("attempt", range(5))  # (numpy's own import is the narrow window: 1 in 6 attempts hit it)
def test_ctrl_c_while_the_command_starts_exits_130_without_a_traceback(pets_dataset, attempt):
    """The `shardflow` command, interrupted while Python imports its modules (TensorFlow Datasets, after numpy;
    numpy's extension module turned a KeyboardInterrupt in its import into an ImportError and a traceback)."""
    shardflow = os.path.join(os.path.dirname(sys.executable), "shardflow")
    run = subprocess.Popen(
        ctrl_c_as_in_a_terminal([shardflow, "verify", str(pets_dataset)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while run.poll() is None and time.monotonic() < deadline:
        with open(f"/proc/{run.pid}/maps") as mapped:
            if "_multiarray_umath" in mapped.read():  # numpy is loading: the imports have begun
                break
        time.sleep(0.01)
    run.send_signal(signal.SIGINT)
    err = errors_of(run, 30, "the command did not stop after Ctrl-C")
    assert run.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert last_line(err) in ("shardflow: interrupted", "shardflow verify: interrupted")  # (imports done: main's)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["waiting", "converting"])  # started before the job: killed before it starts
def test_a_killed_worker_process_ends_the_job_with_one_line(corpus, tmp_path, when):
    out = tmp_path / "out"
    os.environ["SHARDFLOW_TEST_RUN"] = str(os.getpid())
    try:
        run = start_convert(corpus, out, "--workers", "2", "--image-format", "png")
        deadline = time.monotonic() + 60
        while not beam_workers_of(os.getpid()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if when == "converting":
            wait_until_converting(run, out)
        beam_workers_of(os.getpid())[0].kill()  # what the out-of-memory killer does
        err = errors_of(run, 90, "the conversion hung after a worker process was killed")
    finally:
        os.environ.pop("SHARDFLOW_TEST_RUN")
    assert run.returncode == 2
    assert last_line(err).startswith("shardflow convert: error: the Beam job failed: a Beam worker process died")
    assert not (out / metadata.DATASET_INFO).exists() and not beam_workers_of(os.getpid())


@pytest.mark.slow
def test_a_second_conversion_into_the_same_out_is_refused(corpus, tmp_path):
    out = tmp_path / "out"
    first = start_convert(corpus, out, "--workers", "1", "--overwrite")
    deadline = time.monotonic() + 60
    while not (out / LOCK_NAME).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # paused while it holds the lock: the second run meets it for sure
    try:
        second = start_convert(corpus, out, "--workers", "1", "--overwrite", "--max-side", "32")
        _, second_err = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 2
    assert last_line(second_err).startswith(
        f"shardflow convert: error: {out} is being written by another conversion (pid {first.pid} on "
        f"{socket.gethostname()}, started "
    )
    info = metadata.read(str(out))
    assert info.max_side is None and info.num_records == 250  # the first run's dataset, whole
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_run_whose_lock_was_taken_over_writes_no_metadata(corpus, tmp_path):
    """The lock is checked again before any metadata is written: a run that lost it (here another conversion's
    lock replaces it while images are converted) ends with one line and leaves OUT to the other run."""
    out = tmp_path / "out"
    run = start_convert(corpus, out, "--workers", "1", "--image-format", "png")
    wait_until_converting(run, out)
    other = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "run": "another"}
    (out / LOCK_NAME).write_text(json.dumps(other))
    err = errors_of(run, 120, "the conversion hung")
    assert run.returncode == 2, err[-2000:]
    assert last_line(err) == (
        f"shardflow convert: error: {out}: another conversion took over this output folder; "
        "this run's results are not written"
    )
    assert not (out / metadata.DATASET_INFO).exists() and not (out / metadata.SHARDFLOW_INFO).exists()
    assert not list(out.glob("*.tfrecord*"))
    assert json.loads((out / LOCK_NAME).read_text()) == other  # the other run's lock stays


def test_a_stale_lock_from_a_killed_run_is_taken_over(tmp_path):
    src = tmp_path / "src"
    write_sample_data(src, layout="kaggle", n=6, seed=3)
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(
        json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": 0, "run": "killed"})
    )
    assert main(["convert", str(src), str(out), "--workers", "1"]) == 0
    assert metadata.read(str(out)).num_records == 6
    assert not (out / LOCK_NAME).exists()


def test_a_lock_held_on_another_host_is_reported_not_taken(tmp_path, capsys):
    src = tmp_path / "src"
    write_sample_data(src, layout="kaggle", n=6, seed=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"host": "other-host", "pid": 1, "started": 0, "run": "x"}))
    assert main(["convert", str(src), str(out), "--workers", "1"]) == 2
    error = capsys.readouterr().err
    assert "pid 1 on other-host" in last_line(error) and f"delete {out / LOCK_NAME}" in last_line(error)
    assert (out / LOCK_NAME).exists()
