"""`python -m sandbox.local_host`: serve function_app (or another FunctionApp) like `func start`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from sandbox.local_host.host import DEFAULT_APP, LocalHost
from sandbox.local_host.host_config import HostConfig, InvalidHostConfig
from sandbox.local_host.keys import GENERATED

log = logging.getLogger("sandbox.local_host")

# host.json log levels → Python's.
_LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "information": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.local_host",
        description="Serve a v2-model Azure Functions app locally, as Core Tools would.",
    )
    parser.add_argument("--app", default=DEFAULT_APP, help="module:attribute of the FunctionApp")
    parser.add_argument("--port", type=int, default=7071, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument(
        "--settings",
        type=Path,
        help="local.settings.json whose Values fill unset environment variables "
        "(default: ./local.settings.json if present)",
    )
    parser.add_argument(
        "--host-json", type=Path, help="host.json to honour (default: ./host.json if present)"
    )
    parser.add_argument("--keys-file", type=Path, help='JSON {"function", "master", ...} keys')
    parser.add_argument(
        "--ready-file", type=Path, help="write {url, keys} here as JSON once listening"
    )
    parser.add_argument(
        "--functions",
        nargs="+",
        metavar="NAME",
        help="serve only these functions (default: all), like `func start --functions`",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds to let running invocations finish on SIGTERM/SIGINT",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the host until SIGTERM or SIGINT; 0 on a clean stop, 1 if it cannot start."""
    arguments = parse_arguments(argv)
    settings_file = _default_file(arguments.settings, "local.settings.json")
    host_json = _default_file(arguments.host_json, "host.json")
    try:
        config = HostConfig.load(host_json)
    except InvalidHostConfig as problem:
        print(f"local host: {problem}", file=sys.stderr)
        return 1
    _configure_logging(config.log_level)
    # Run the app as Core Tools would: from the current folder, so `function_app` imports.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        host = LocalHost.start(
            arguments.app,
            port=arguments.port,
            settings_file=settings_file,
            host_json=host_json,
            keys_file=arguments.keys_file,
            functions=arguments.functions,
        )
    except (ValueError, ImportError, OSError) as problem:
        # ValueError covers the host's own start errors (bad setting, schedule, route, keys).
        log.error("Cannot start the local host: %s", problem)
        return 1
    stop_requested = threading.Event()

    def request_stop(signal_number: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signal_number).name
        if stop_requested.is_set():
            # A second Ctrl+C while draining: the developer does not want to wait.
            log.warning("Received %s again: exiting without waiting for invocations", name)
            os._exit(1)
        log.info("Received %s: stopping (again to exit at once)", name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        _print_banner(host, settings_file)
        if arguments.ready_file is not None:
            _write_ready_file(arguments.ready_file, host)
        stop_requested.wait()
    finally:
        drained = host.stop(drain_timeout=arguments.drain_timeout)
        if arguments.ready_file is not None:
            arguments.ready_file.unlink(missing_ok=True)
    return 0 if drained else 1


def _default_file(given: Path | None, default_name: str) -> Path | None:
    if given is not None:
        return given  # named explicitly: a missing file is an error, reported on load
    default = Path(default_name)
    return default if default.is_file() else None


def _configure_logging(level_name: str) -> None:
    logging.basicConfig(
        level=_LOG_LEVELS.get(level_name.lower(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # The Azure SDKs log every storage request at INFO; the real host does not show them.
    logging.getLogger("azure").setLevel(logging.WARNING)


def _print_banner(host: LocalHost, settings_file: Path | None) -> None:
    lines = ["", "Functions:"]
    lines += [f"    {line}" for line in host.describe()]
    lines += ["", "Keys (x-functions-key header or ?code=):"]
    for name, value in host.keys.as_document().items():
        source = host.keys.sources.get(name, GENERATED)
        # Show generated keys (nobody knows them yet); configured ones only by origin.
        shown = value if source == GENERATED else f"(from {source})"
        lines.append(f"    {name}: {shown}")
    if settings_file is not None:
        lines += ["", f"Settings: {settings_file} (environment variables win)"]
    lines += ["", f"Listening on {host.url} (Ctrl+C to stop)", ""]
    print("\n".join(lines), flush=True)


def _write_ready_file(path: Path, host: LocalHost) -> None:
    # Written whole and renamed, so a reader never sees half a file.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(host.ready_document(), indent=2), encoding="utf-8")
    partial.replace(path)


if __name__ == "__main__":
    sys.exit(main())
