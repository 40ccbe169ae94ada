"""A conversion sent to a job server (Beam's Job API: `--runner PortableRunner --job_endpoint`, Flink, Spark): the
server checked first, then the job given as long as it runs.

Beam takes one option, `--job_server_timeout` (300 s unless given), both as how long to wait for the job server
and as the deadline of the streams that report the job's state: a job that runs longer fails, however well it runs
(apache/beam#35867). Unless the user gives it, shardflow waits `CONNECT_SECONDS` for the server itself and gives
Beam `JOB_SECONDS`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import grpc
from apache_beam.runners.portability.portable_runner import PortableRunner
from apache_beam.runners.runner import PipelineRunner, create_runner

CONNECT_SECONDS = 60  # how long an unreachable job server is waited for (a server may still be starting)
JOB_SECONDS = 30 * 24 * 3600  # Beam's deadline for the job's state and message streams: 30 days
_READY_SECONDS = 2  # a reachable server answers within this; longer, and the wait is said
logger = logging.getLogger(__name__)


class NoJobServer(RuntimeError):
    """No job server to send the job to: none named, or none answering."""


def job_server_args(beam_args: Sequence[str]) -> list[str]:
    """The Beam flags to add to `beam_args` for a job on a job server: `--job_server_timeout JOB_SECONDS` unless
    they give one; none for other runners. NoJobServer when `--runner PortableRunner` has no `--job_endpoint`, or
    theirs does not answer within their `--job_server_timeout`, or `CONNECT_SECONDS`."""
    given, _ = _parser().parse_known_args(beam_args)
    runner = _runner(given.runner) if given.runner else None
    if not isinstance(runner, PortableRunner):
        return []
    if type(runner) is PortableRunner and not given.job_endpoint:  # (Flink's and Spark's start their own server)
        raise NoJobServer("--runner PortableRunner sends the job to a job server: give its --job_endpoint HOST:PORT")
    if given.job_endpoint and given.job_endpoint != "embed":  # ("embed": Beam's job service in this process)
        _check_answers(given.job_endpoint, given.job_server_timeout or CONNECT_SECONDS)
    return [] if given.job_server_timeout else ["--job_server_timeout", str(JOB_SECONDS)]


def _parser() -> argparse.ArgumentParser:
    """The three Beam options this module reads, spelt as Beam's parser takes them (no abbreviations)."""
    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    parser.add_argument("--runner")
    parser.add_argument("--job_endpoint")
    parser.add_argument("--job_server_timeout", "--job-server-timeout", type=int)
    return parser


def _runner(name: str) -> PipelineRunner | None:
    """Beam's runner named `name`; None for a name Beam does not know (it says so when the pipeline is built)."""
    try:
        return create_runner(name)
    except (ImportError, ValueError):
        return None


def _check_answers(endpoint: str, seconds: int) -> None:
    """NoJobServer unless a gRPC channel to `endpoint` is ready within `seconds` (said when it takes
    longer than `_READY_SECONDS`)."""
    with grpc.insecure_channel(endpoint) as channel:
        ready = grpc.channel_ready_future(channel)
        if _ready_within(ready, min(_READY_SECONDS, seconds)):
            return
        if seconds > _READY_SECONDS:
            logger.info(f"waiting up to {seconds} s for the job server at {endpoint}")
            if _ready_within(ready, seconds - _READY_SECONDS):
                return
    raise NoJobServer(
        f"no job server answered at {endpoint} in {seconds} s (is it running, on that port? "
        "--job_server_timeout sets how long to wait)"
    )


def _ready_within(ready: grpc.Future, seconds: float) -> bool:
    try:
        ready.result(timeout=seconds)
    except grpc.FutureTimeoutError:
        return False
    return True
