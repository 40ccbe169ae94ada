"""Beam's local worker processes, started (`local_runner`: each runs `WORKER_MODULE`) and watched: Ctrl-C stops
them, and a worker that dies fails the job.

A worker spends a second or more importing Beam and the job's code before it can take any work. `local_runner`
starts its workers at once, to import while the launcher builds and submits the job (`WarmWorkers`); when Beam
asks for a worker (`WarmWorkerHandler`), one of them gets the environment Beam gives a worker process it starts.

Beam's in-process runner answers an interrupt by closing its workers and waiting for each worker process to
exit, but a worker in the middle of a bundle never does; and when a worker process is killed (the
out-of-memory killer, `kill -9`) the runner may wait for its answer forever. The worker processes are this
process's children (`python -m shardflow.beam_jobs.worker_main --warm`), so they are watched and stopped here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psutil  # a dependency of tensorflow-datasets
from apache_beam.portability.api import endpoints_pb2
from apache_beam.runners.portability.fn_api_runner import FnApiRunner, worker_handlers
from apache_beam.transforms import environments
from google.protobuf import json_format, text_format

STOP_SECONDS = 3.0
WORKER_MODULE = "shardflow.beam_jobs.worker_main"  # in the command line of every local Beam worker
WARM = "--warm"  # its flag: started ahead of the job, it waits for Beam's addresses on its stdin
WARM_WORKERS_URN = "shardflow:env:warm_worker_processes:v1"


class _ModeWarningFilter(logging.Filter):
    """Drops Beam's warning that more than one worker wants a multi-processing mode: `local_runner` gives the
    workers their processes through its environment instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("If direct_num_workers is not equal to 1")


_MODE_WARNING = _ModeWarningFilter()


@contextlib.contextmanager
def local_runner(workers: int) -> Iterator[FnApiRunner]:
    """Beam's in-process runner; with more than one worker, each a process running `WORKER_MODULE`, started now
    (`WarmWorkers`; those the job did not take are stopped on leaving). Worker processes inherit stderr."""
    if workers == 1:
        yield FnApiRunner()
        return
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(_MODE_WARNING)
    pool = WarmWorkers(workers)
    _POOLS[pool.id] = pool
    try:
        yield FnApiRunner(default_environment=WarmWorkersEnvironment(pool.id))
    finally:
        del _POOLS[pool.id]
        pool.close()


def local_beam_args(workers: int) -> list[str]:
    """The Beam flags that go with `local_runner(workers)`."""
    return [
        f"--direct_num_workers={workers}",
        "--direct_running_mode=in_memory",
        "--default_sdk_harness_log_level=WARNING",
    ]


class WarmWorkers:
    """Worker processes started before the job needs them: each imports Beam and the job's code, then waits for
    the environment Beam gives a worker process (one line of JSON on its stdin)."""

    def __init__(self, count: int):
        self.id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._waiting = [self._start() for _ in range(count)]

    @staticmethod
    def _start() -> subprocess.Popen:
        with worker_handlers.SUBPROCESS_LOCK:  # (Beam's: one process started at a time, inheriting no other's pipes)
            return subprocess.Popen([sys.executable, "-m", WORKER_MODULE, WARM], stdin=subprocess.PIPE)

    def hand_over(self, environment: dict[str, str]) -> subprocess.Popen:
        """A waiting worker (a new one when none is left), given `environment`: it joins the job."""
        with self._lock:
            process = self._waiting.pop(0) if self._waiting else self._start()
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died waiting: its exit status tells the runner
            process.stdin.write(json.dumps(environment).encode() + b"\n")
            process.stdin.close()
        return process

    def close(self) -> None:
        """Stop the workers the job did not take."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for process in waiting:
            process.kill()
            process.wait()


_POOLS: dict[str, WarmWorkers] = {}  # by id: a runner's environment names its pool


@environments.Environment.register_urn(WARM_WORKERS_URN, bytes)
class WarmWorkersEnvironment(environments.Environment):
    """Beam's environment for the workers of the `WarmWorkers` pool `pool` (in this process)."""

    def __init__(self, pool: str, capabilities: Any = (), artifacts: Any = (), resource_hints: Any = None):
        super().__init__(capabilities or environments.python_sdk_capabilities(), artifacts, resource_hints)
        self.pool = pool

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and self.pool == getattr(other, "pool", None)

    def __hash__(self) -> int:
        return hash((super().__hash__(), self.pool))

    def to_runner_api_parameter(self, context: Any) -> tuple[str, bytes]:
        return WARM_WORKERS_URN, self.pool.encode()

    @staticmethod
    def from_runner_api_parameter(
        payload: bytes, capabilities: Any, artifacts: Any, resource_hints: Any, context: Any
    ) -> WarmWorkersEnvironment:
        return WarmWorkersEnvironment(payload.decode(), capabilities, artifacts, resource_hints)


@worker_handlers.WorkerHandler.register_environment(WARM_WORKERS_URN, bytes)
class WarmWorkerHandler(worker_handlers.GrpcWorkerHandler):
    """Beam's handle on one worker of a `WarmWorkers` pool: as Beam's own for a worker process it starts, a
    thread named `run_worker` waits for the process and raises when it exits abnormally."""

    def __init__(self, pool: bytes, state: Any, provision_info: Any, grpc_server: Any):
        super().__init__(state, provision_info, grpc_server)
        self._pool = _POOLS[pool.decode()]

    def start_worker(self) -> None:
        self._thread = threading.Thread(name="run_worker", target=self._run)
        self._thread.start()

    def stop_worker(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        control = endpoints_pb2.ApiServiceDescriptor(url=self.control_address)
        process = self._pool.hand_over(
            {
                "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(control),
                "LOGGING_API_SERVICE_DESCRIPTOR": text_format.MessageToString(self.logging_api_service_descriptor()),
                "PIPELINE_OPTIONS": json_format.MessageToJson(self.provision_info.provision_info.pipeline_options),
                "WORKER_ID": self.worker_id,
            }
        )
        try:
            process.wait()
            if process.returncode:
                raise RuntimeError(f"Worker subprocess exited with return code {process.returncode}")
        finally:
            if process.poll() is None:
                process.kill()


class WorkerDied(RuntimeError):
    """A Beam worker process ended abnormally while the job ran."""


def worker_processes() -> list[psutil.Process]:
    """This process's children that run a Beam worker (`WORKER_MODULE`)."""
    workers = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if WORKER_MODULE in " ".join(child.cmdline()):
                workers.append(child)
    return workers


def stop_workers() -> None:
    """Terminate the Beam worker processes; kill those still alive after a few seconds."""
    children = []
    for worker in worker_processes():
        with contextlib.suppress(psutil.Error):
            children += [worker, *worker.children(recursive=True)]
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
    """Each worker process is waited for by a thread named `run_worker` (`WarmWorkerHandler`, as Beam's own) that
    raises "Worker subprocess exited with return code N" when it ends abnormally (and nothing else notices): that
    interrupts the launcher's main thread here (a real SIGINT: `_thread.interrupt_main` would not wake a blocked
    wait), which then stops the other workers."""

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
