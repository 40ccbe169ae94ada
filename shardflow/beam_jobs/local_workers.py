"""Ctrl-C during a local run: stop Beam's worker processes first, then interrupt the launcher.

Beam's in-process runner answers an interrupt by closing its workers and waiting for each worker process to
exit, but a worker in the middle of a bundle never does: the launcher would wait forever. The worker
processes are this process's children (`sh -c python -m ...sdk_worker_main`), so they are stopped here.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import psutil  # a dependency of tensorflow-datasets

STOP_SECONDS = 3.0


def stop_child_processes() -> None:
    """Terminate every descendant of this process; kill those still alive after a few seconds."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=STOP_SECONDS)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


@contextlib.contextmanager
def workers_stopped_on_interrupt() -> Iterator[None]:
    """While inside, SIGINT stops the worker processes, then raises KeyboardInterrupt as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        stop_child_processes()
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:  # started in the background: Ctrl-C is not meant for us
        yield
        return
    signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    except KeyboardInterrupt:
        stop_child_processes()  # workers Beam was still starting when the interrupt came
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
