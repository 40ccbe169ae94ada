"""Beam's local worker processes, started (`local_runner`: forked by a process that runs `WORKER_MODULE`) and
watched: Ctrl-C stops them, and a worker that dies fails the job.

A worker spends a second or more importing Beam and the job's code before it can take any work. The workers are
forked by one process (`fork_server.ForkServer`) that imports while the launcher builds and submits the job: when
Beam asks for a worker (`ForkedWorkerHandler`), that process forks one, which gets the environment Beam gives a
worker process it starts and has nothing left to import.

Beam's in-process runner answers an interrupt by closing its workers and waiting for each worker process to
exit, but a worker in the middle of a bundle never does; and when a worker process is killed (the
out-of-memory killer, `kill -9`) the runner may wait for its answer forever. The fork server is this process's
child and the workers its children (all run `python -m shardflow.beam_jobs.worker_main --fork-server FD`), so
they are watched and stopped here.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from collections.abc import Iterator
from typing import Any

import psutil  # a dependency of tensorflow-datasets
from apache_beam.portability.api import endpoints_pb2
from apache_beam.runners.portability.fn_api_runner import FnApiRunner, worker_handlers
from apache_beam.transforms import environments
from google.protobuf import json_format, text_format

from shardflow.beam_jobs.fork_server import STOP_SECONDS, WORKER_MODULE, ForkServer

FORKED_WORKERS_URN = "shardflow:env:forked_worker_processes:v1"


class _ModeWarningFilter(logging.Filter):
    """Drops Beam's warning that more than one worker wants a multi-processing mode: `local_runner` gives the
    workers their processes through its environment instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("If direct_num_workers is not equal to 1")


_MODE_WARNING = _ModeWarningFilter()


@contextlib.contextmanager
def local_runner(workers: int, server: ForkServer | None = None) -> Iterator[FnApiRunner]:
    """Beam's in-process runner; with more than one worker, each a process forked by `server` (None: a `ForkServer`
    started now, writing to this process's stderr), stopped on leaving, its workers ended."""
    if workers == 1:
        yield FnApiRunner()
        return
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(_MODE_WARNING)
    server = server or ForkServer()
    _SERVERS[server.id] = server
    try:
        yield FnApiRunner(default_environment=ForkedWorkersEnvironment(server.id))
    finally:
        del _SERVERS[server.id]
        server.close()


def local_beam_args(workers: int) -> list[str]:
    """The Beam flags that go with `local_runner(workers)`."""
    return [
        f"--direct_num_workers={workers}",
        "--direct_running_mode=in_memory",
        "--default_sdk_harness_log_level=WARNING",
    ]


_SERVERS: dict[str, ForkServer] = {}  # by id: a runner's environment names its fork server


@environments.Environment.register_urn(FORKED_WORKERS_URN, bytes)
class ForkedWorkersEnvironment(environments.Environment):
    """Beam's environment for the workers of the `ForkServer` whose id is `pool` (in this process)."""

    def __init__(self, pool: str, capabilities: Any = (), artifacts: Any = (), resource_hints: Any = None):
        super().__init__(capabilities or environments.python_sdk_capabilities(), artifacts, resource_hints)
        self.pool = pool

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and self.pool == getattr(other, "pool", None)

    def __hash__(self) -> int:
        return hash((super().__hash__(), self.pool))

    def to_runner_api_parameter(self, context: Any) -> tuple[str, bytes]:
        return FORKED_WORKERS_URN, self.pool.encode()

    @staticmethod
    def from_runner_api_parameter(
        payload: bytes, capabilities: Any, artifacts: Any, resource_hints: Any, context: Any
    ) -> ForkedWorkersEnvironment:
        return ForkedWorkersEnvironment(payload.decode(), capabilities, artifacts, resource_hints)


@worker_handlers.WorkerHandler.register_environment(FORKED_WORKERS_URN, bytes)
class ForkedWorkerHandler(worker_handlers.GrpcWorkerHandler):
    """Beam's handle on one worker forked by a `ForkServer`: as Beam's own for a worker process it starts, a
    thread named `run_worker` waits for the process and raises when it exits abnormally."""

    def __init__(self, server: bytes, state: Any, provision_info: Any, grpc_server: Any):
        super().__init__(state, provision_info, grpc_server)
        self._server = _SERVERS[server.decode()]

    def start_worker(self) -> None:
        self._thread = threading.Thread(name="run_worker", target=self._run)
        self._thread.start()

    def stop_worker(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        control = endpoints_pb2.ApiServiceDescriptor(url=self.control_address)
        pid = self._server.hand_over(
            {
                "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(control),
                "LOGGING_API_SERVICE_DESCRIPTOR": text_format.MessageToString(self.logging_api_service_descriptor()),
                "PIPELINE_OPTIONS": json_format.MessageToJson(self.provision_info.provision_info.pipeline_options),
                "WORKER_ID": self.worker_id,
            }
        )
        status = self._server.wait(pid)
        if status:
            raise RuntimeError(f"Worker subprocess exited with return code {status}")


class WorkerDied(RuntimeError):
    """A Beam worker process ended abnormally while the job ran."""


def worker_processes() -> list[psutil.Process]:
    """This process's children that run `WORKER_MODULE` (fork servers), and their descendants (the workers)."""
    workers = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if WORKER_MODULE in " ".join(child.cmdline()):
                workers += [child, *child.children(recursive=True)]
    return workers


def stop_workers() -> None:
    """Terminate the Beam worker processes; kill those still alive after a few seconds."""
    children = worker_processes()
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
    """Each worker process is waited for by a thread named `run_worker` (`ForkedWorkerHandler`, as Beam's own) that
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
