"""Start Azurite (the Azure Storage emulator) on free loopback ports in a temporary folder.

Used by `make test` (as a wrapper around the test commands) and by the test suite when no
Azurite is running yet. Azurite comes from `node_modules` (installed by `npm ci`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"

# Azurite's documented development account. It is public, not a secret.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ENV_CONNECTION_STRING = "AZURITE_CONNECTION_STRING"
START_ATTEMPTS = 3


class AzuriteExitedEarly(RuntimeError):
    """Azurite stopped before it listened (most often: a port was taken meanwhile)."""


@dataclass(frozen=True)
class AzuriteEndpoints:
    """Where a running Azurite listens."""

    blob_port: int
    queue_port: int
    table_port: int
    host: str = "127.0.0.1"

    @property
    def connection_string(self) -> str:
        """A storage connection string for the SDKs and the Functions host."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://{self.host}:{self.blob_port}/{DEV_ACCOUNT};"
            f"QueueEndpoint=http://{self.host}:{self.queue_port}/{DEV_ACCOUNT};"
            f"TableEndpoint=http://{self.host}:{self.table_port}/{DEV_ACCOUNT};"
        )


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_listening(ports: list[int], process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if process.poll() is not None:
            raise AzuriteExitedEarly(f"Azurite exited early with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Azurite did not listen on ports {pending} within {timeout} s")
        try:
            with socket.create_connection(("127.0.0.1", pending[0]), timeout=0.2):
                pending.pop(0)
        except OSError:
            time.sleep(0.05)
    if process.poll() is not None:  # another process answered on a port it could not take
        raise AzuriteExitedEarly(f"Azurite exited early with code {process.returncode}")


@contextlib.contextmanager
def running_azurite(
    timeout: float = 30.0, *, in_memory: bool = False, debug_log: str | None = None
) -> Iterator[AzuriteEndpoints]:
    """Run Azurite for the duration of the block; always stop it and remove its folder.

    `in_memory` keeps its data in memory only (benchmarks with large tables, the test suite:
    Azurite's on-disk store rewrites its whole database file as it grows). `debug_log` is a
    file for Azurite's debug log, which has a line for every request it serves (benchmarks
    count storage requests from it; it is large, and slows Azurite down)."""
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"{AZURITE_BIN} is missing: run `npm ci` (or `make test`) first")
    workdir = tempfile.mkdtemp(prefix="azurite-")
    try:
        # Free ports are picked before Azurite binds them, so a process starting beside us (a
        # parallel test worker) can take one first: Azurite then exits, and we pick again.
        for attempt in range(1, START_ATTEMPTS + 1):
            process, log, endpoints = _start(workdir, in_memory, attempt, debug_log)
            try:
                try:
                    _wait_listening(
                        [endpoints.blob_port, endpoints.queue_port, endpoints.table_port],
                        process,
                        timeout,
                    )
                except AzuriteExitedEarly:
                    if attempt == START_ATTEMPTS:
                        raise
                    continue
                yield endpoints
                return
            finally:
                _stop(process)
                log.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _start(
    workdir: str, in_memory: bool, attempt: int, debug_log: str | None = None
) -> tuple[subprocess.Popen[bytes], BinaryIO, AzuriteEndpoints]:
    blob, queue, table = _free_ports(3)
    args = [
        str(AZURITE_BIN),
        "--silent",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        *(["--inMemoryPersistence"] if in_memory else ["--location", workdir]),
        "--blobHost", "127.0.0.1", "--blobPort", str(blob),
        "--queueHost", "127.0.0.1", "--queuePort", str(queue),
        "--tableHost", "127.0.0.1", "--tablePort", str(table),
        *(["--debug", debug_log] if debug_log else []),
    ]  # fmt: skip
    log = open(os.path.join(workdir, f"azurite-{attempt}.log"), "wb")  # noqa: SIM115 - closed by the caller
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return process, log, AzuriteEndpoints(blob_port=blob, queue_port=queue, table_port=table)


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(argv: list[str] | None = None) -> int:
    """`python -m sandbox.azurite -- CMD [ARGS]`: run CMD with Azurite up, then stop Azurite."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run with Azurite up")
    ns = parser.parse_args(argv)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if not command:
        parser.error("give a command to run, e.g. -- pytest")
    with running_azurite() as endpoints:
        env = dict(os.environ, **{ENV_CONNECTION_STRING: endpoints.connection_string})
        print(
            f"azurite: tables on 127.0.0.1:{endpoints.table_port}, "
            f"queues on 127.0.0.1:{endpoints.queue_port}",
            file=sys.stderr,
        )
        return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
