"""Beam's local worker processes, started (`local_runner`: forked by a process that runs `WORKER_MODULE`) and
watched: Ctrl-C stops them, and a worker that dies fails the job.

A worker spends a second or more importing Beam and the job's code before it can take any work. `local_runner`
starts one process at once (`ForkServer`) that imports while the launcher builds and submits the job; when Beam
asks for a worker (`ForkedWorkerHandler`), that process forks one, which gets the environment Beam gives a worker
process it starts and has nothing left to import.

Beam's in-process runner answers an interrupt by closing its workers and waiting for each worker process to
exit, but a worker in the middle of a bundle never does; and when a worker process is killed (the
out-of-memory killer, `kill -9`) the runner may wait for its answer forever. The fork server is this process's
child and the workers its children (all run `python -m shardflow.beam_jobs.worker_main --fork-server FD`), so
they are watched and stopped here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
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
FORK_SERVER = "--fork-server"  # its flag (and a file descriptor): it forks the job's workers (`ForkServer`)
FORKED_WORKERS_URN = "shardflow:env:forked_worker_processes:v1"


class _ModeWarningFilter(logging.Filter):
    """Drops Beam's warning that more than one worker wants a multi-processing mode: `local_runner` gives the
    workers their processes through its environment instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("If direct_num_workers is not equal to 1")


_MODE_WARNING = _ModeWarningFilter()


@contextlib.contextmanager
def local_runner(workers: int, stderr: int | None = None) -> Iterator[FnApiRunner]:
    """Beam's in-process runner; with more than one worker, each a process forked by a `ForkServer` started now
    (stopped on leaving, its workers ended), writing to file descriptor `stderr` (None: this process's)."""
    if workers == 1:
        yield FnApiRunner()
        return
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(_MODE_WARNING)
    server = ForkServer(stderr)
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


class ForkServer:
    """One process (`WORKER_MODULE` with `FORK_SERVER`) that imports Beam and the job's code as soon as it starts,
    then forks each worker handed the environment Beam gives a worker process; it reports each worker's pid, and
    its exit status when it ends, through a pipe that a thread here reads. Its workers write to `stderr` (a file
    descriptor; None: this process's)."""

    def __init__(self, stderr: int | None = None) -> None:
        self.id = uuid.uuid4().hex
        read_end, write_end = os.pipe()
        with worker_handlers.SUBPROCESS_LOCK:  # (Beam's: one process started at a time, inheriting no other's pipes)
            self._process = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, FORK_SERVER, str(write_end)],
                stdin=subprocess.PIPE,
                stderr=stderr,
                pass_fds=[write_end],
            )
        os.close(write_end)
        self._lock = threading.Lock()  # one hand-over at a time: its answer is the next "started"
        self._started: queue.Queue[int | None] = queue.Queue()  # pids, in the order the workers were asked for
        self._ended: dict[int, int] = {}  # pid -> exit status
        self._forked: list[int] = []
        self._gone: int | None = None  # the fork server's own exit status, once it has ended
        self._changed = threading.Condition()
        self._reports = threading.Thread(target=self._read_reports, args=(read_end,), name="fork_server", daemon=True)
        self._reports.start()

    def hand_over(self, environment: dict[str, str]) -> int | None:
        """A new worker forked with `environment` (it joins the job): its pid, or None if the server has died."""
        assert self._process.stdin is not None
        with self._lock:
            if self._gone is not None:  # (its one None answered an earlier hand-over)
                return None
            with contextlib.suppress(BrokenPipeError):  # it died: its exit status is the worker's
                self._process.stdin.write(json.dumps(environment).encode() + b"\n")
                self._process.stdin.flush()
            return self._started.get()

    def wait(self, pid: int | None) -> int:
        """The exit status of worker `pid` once it has ended (as `subprocess.Popen.returncode`); that of the
        server for a worker it did not live to fork or report (pid None, or the server killed: its orphans are
        killed too)."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._ended or self._gone is not None)
            return self._ended[pid] if pid in self._ended else self._gone  # type: ignore[return-value]

    def close(self) -> None:
        """No more workers: the fork server ends once its workers have; stopped at once if none was forked."""
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        if not self._forked:
            self._process.kill()
        try:
            self._process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reports.join()

    def _read_reports(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb") as reports:
            for line in reports:
                what, pid, *status = line.split()
                if what == b"started":
                    self._forked.append(int(pid))
                    self._started.put(int(pid))
                else:
                    with self._changed:
                        self._ended[int(pid)] = int(status[0])
                        self._changed.notify_all()
        gone = self._process.wait()
        with self._changed:
            self._gone = gone
            self._changed.notify_all()
        self._started.put(None)
        for orphan in set(self._forked) - set(self._ended):  # workers of a killed fork server
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)


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
