"""Beam's local worker processes, started (`local_runner`: each runs `WORKER_MODULE`) and watched: Ctrl-C stops
them, and a worker that dies fails the job.

Beam's in-process runner answers an interrupt by closing its workers and waiting for each worker process to
exit, but a worker in the middle of a bundle never does; and when a worker process is killed (the
out-of-memory killer, `kill -9`) the runner may wait for its answer forever. The worker processes are this
process's children (`sh -c python -m shardflow.beam_jobs.worker_main`), so they are watched and stopped here.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import signal
import sys
import threading
from collections.abc import Iterator

import psutil  # a dependency of tensorflow-datasets
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms.environments import SubprocessSDKEnvironment

STOP_SECONDS = 3.0
WORKER_MODULE = "shardflow.beam_jobs.worker_main"  # in the command line of every local Beam worker


class _ModeWarningFilter(logging.Filter):
    """Drops Beam's warning that more than one worker wants a multi-processing mode: `local_runner` gives the
    workers their processes through its environment instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("If direct_num_workers is not equal to 1")


_MODE_WARNING = _ModeWarningFilter()


def local_runner(workers: int) -> FnApiRunner:
    """Beam's in-process runner; with more than one worker, each a process running `WORKER_MODULE` (Beam's own
    multi-processing mode runs its harness module, whose exit the runner waits for)."""
    if workers == 1:
        return FnApiRunner()
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(_MODE_WARNING)
    command = f"{shlex.quote(sys.executable)} -m {WORKER_MODULE}"
    return FnApiRunner(default_environment=SubprocessSDKEnvironment.from_command_string(command))


def local_beam_args(workers: int) -> list[str]:
    """The Beam flags that go with `local_runner(workers)`."""
    return [
        f"--direct_num_workers={workers}",
        "--direct_running_mode=in_memory",
        "--default_sdk_harness_log_level=WARNING",
    ]


class WorkerDied(RuntimeError):
    """A Beam worker process ended abnormally while the job ran."""


def beam_worker_shells() -> list[psutil.Process]:
    """This process's children that run a Beam worker (`sh -c python -m shardflow.beam_jobs.worker_main`)."""
    shells = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if WORKER_MODULE in " ".join(child.cmdline()):
                shells.append(child)
    return shells


def stop_workers() -> None:
    """Terminate the Beam worker processes; kill those still alive after a few seconds."""
    children = []
    for shell in beam_worker_shells():
        with contextlib.suppress(psutil.Error):
            children += [shell, *shell.children(recursive=True)]
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=STOP_SECONDS)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


@contextlib.contextmanager
def watched_workers() -> Iterator[None]:
    """While inside, SIGINT stops the worker processes, then raises KeyboardInterrupt as usual; a worker
    process that exits abnormally stops the others and raises `WorkerDied`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:  # started in the background: Ctrl-C is not meant for us
        yield
        return
    watch = _WorkerWatch()

    def interrupt(signum, frame):
        watch.stopping = watch.interrupted = True  # workers stopped here exit by a signal: no death to report
        stop_workers()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    previous_hook, threading.excepthook = threading.excepthook, watch.excepthook
    try:
        yield
    except KeyboardInterrupt:
        watch.stopping = True
        stop_workers()  # workers Beam was still starting when the interrupt came
        if watch.died:
            raise WorkerDied(watch.died) from None
        raise
    except Exception:
        if watch.interrupted:  # Beam's in-process mode (one worker) wraps the interrupt in a RuntimeError
            raise KeyboardInterrupt from None
        raise
    finally:
        threading.excepthook = previous_hook
        signal.signal(signal.SIGINT, previous)


class _WorkerWatch:
    """Beam runs each worker process from a thread named `run_worker` that raises "Worker subprocess exited
    with return code N" when the process ends abnormally (and nothing else notices): that interrupts the
    launcher's main thread here (a real SIGINT: `_thread.interrupt_main` would not wake a blocked wait),
    which then stops the other workers."""

    def __init__(self):
        self.died = ""
        self.stopping = self.interrupted = False
        self._default_hook = threading.excepthook

    def excepthook(self, args: threading.ExceptHookArgs) -> None:
        code = re.search(r"exited with return code (-?\d+)", str(args.exc_value))
        if args.thread is not None and args.thread.name == "run_worker" and code and not self.stopping:
            self.stopping = True
            self.died = f"a Beam worker process died (exit status {code.group(1)}: killed, or out of memory?)"
            signal.pthread_kill(
                threading.main_thread().ident or 0, signal.SIGINT
            )  # (set: it runs); wakes a blocked wait
        self._default_hook(args)
