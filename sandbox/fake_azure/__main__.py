"""Run the fake Azure standalone.

``python -m sandbox.fake_azure --scenario sandbox/scenarios/demo.json [--port N] [--ready-file F]``
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from .scenario import ScenarioError
from .server import FakeAzure


def main(argv: list[str] | None = None) -> int:
    """Start the server, print where it listens, and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.fake_azure", description=__doc__)
    parser.add_argument(
        "--scenario", default="demo", help="scenario JSON path or shipped name (default: demo)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address to bind (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument(
        "--ready-file", type=Path, help="write {url, ca_path, ...} as JSON here once serving"
    )
    parser.add_argument(
        "--identity-header", help="secret expected in X-IDENTITY-HEADER (default: random)"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the fake Azure only binds loopback addresses")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s"
    )

    try:
        fake = FakeAzure.start(
            args.scenario, host=args.host, port=args.port, identity_header=args.identity_header
        )
    except ScenarioError as error:
        print(f"scenario error: {error}", file=sys.stderr)
        return 2
    details = {
        "url": fake.url,
        "ca_path": str(fake.ca_path),
        "identity_endpoint": fake.identity_endpoint,
        "identity_header": fake.identity_header,
        "credential_scope": fake.credential_scope,
        "scenario": fake.scenario.name,
        "runs": fake.applied.runs,
    }
    print(f"fake Azure listening on {fake.url}")
    print(f"CA certificate: {fake.ca_path}")
    print(
        f"export IDENTITY_ENDPOINT={fake.identity_endpoint} IDENTITY_HEADER={fake.identity_header} "
        f"REQUESTS_CA_BUNDLE={fake.ca_path}",
        flush=True,
    )
    if args.ready_file:
        args.ready_file.write_text(json.dumps(details, indent=2), encoding="utf-8")

    stopped = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stopped.wait()
    fake.stop()
    if args.ready_file:
        args.ready_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
