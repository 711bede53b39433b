"""Use cases behind the operator API: find runs, list them, show one, and resolve a run for a
cancel (ledger first, then Resource Graph, then the run's name alone)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shared.domain.errors import LedgerConflict
from shared.domain.ids import RunId
from shared.domain.runs import Run
from shared.domain.timeline import Clock
from shared.domain.vocabulary import PlatformStatus
from shared.services.ports import ReportStore, RunLedger, RunMachinesSource
from shared.services.reporting import build_report

MAX_PAGE = 200


class InvalidQuery(ValueError):
    """A list request the API cannot answer (bad filter or token)."""


@dataclass(frozen=True)
class RunFilter:
    """Filters of GET /api/runs."""

    configuration: str | None = None
    status: str | None = None
    start_from: datetime | None = None
    start_to: datetime | None = None


@dataclass(frozen=True)
class RunPage:
    """One page of runs, newest scheduled start first."""

    runs: list[dict[str, Any]]
    next_token: str | None


def run_summary(run: Run) -> dict[str, Any]:
    """The short form of a run in lists."""
    configuration = run.run_id.configuration
    return {
        "correlationId": run.run_id.text,
        "configuration": configuration.name,
        "maintenanceConfigurationId": configuration.text,
        "runName": run.run_id.run_name,
        "scheduledStart": run.scheduled_start.isoformat(),
        "status": run.status.value,
        "platformStatus": run.platform_status,
        "gate": run.gate_outcome,
        "cancelSource": run.cancel_source,
        "preEventReceivedAt": None if run.pre_event_at is None else run.pre_event_at.isoformat(),
        "postEventReceivedAt": None if run.post_event_at is None else run.post_event_at.isoformat(),
        "preEventMissed": run.pre_event_missed,
        "report": run.report_location,
    }


def list_runs(ledger: RunLedger, wanted: RunFilter, top: int, token: str | None) -> RunPage:
    """Runs matching the filter, `top` at a time; `token` continues a previous page."""
    if not 1 <= top <= MAX_PAGE:
        raise InvalidQuery(f"top must be 1..{MAX_PAGE}")
    # One key range of the ledger's run index, one page of it: the cost does not grow with
    # the history.
    try:
        page, after = ledger.list_runs_page(
            configuration=wanted.configuration,
            status=wanted.status,
            start_from=wanted.start_from,
            start_to=wanted.start_to,
            top=top,
            after=_position(token),
        )
    except ValueError as e:
        raise InvalidQuery("continuationToken is not one this API gave") from e
    return RunPage(
        runs=[run_summary(r) for r in page if _matches(r, wanted)],
        next_token=None if after is None else _token(after),
    )


def find_runs(
    ledger: RunLedger,
    configuration: str,
    run_name: str,
    subscription_id: str | None = None,
    resource_group: str | None = None,
) -> list[Run]:
    """Runs of a configuration (by name) with this run name; several when names repeat
    across resource groups or subscriptions."""
    found = []
    for indexed in ledger.find_runs_named(configuration, run_name):
        c = indexed.run_id.configuration
        if c.name.lower() != configuration.lower() or indexed.run_id.run_name != run_name:
            continue
        if subscription_id and c.subscription_id != subscription_id.lower():
            continue
        if resource_group and c.resource_group.lower() != resource_group.lower():
            continue
        # The run's own partition is the truth; the index row only says where to look.
        run = ledger.find_run(indexed.run_id)
        if run is not None:
            found.append(run)
    return found


def run_document(run: Run, ledger: RunLedger, reports: ReportStore) -> Mapping[str, Any]:
    """The run's report: the stored one once the run is complete, else built live."""
    if run.report_location:
        stored = reports.get_report(run.run_id)
        if stored is not None:
            # What Azure says of the run can arrive after the report (a cancel confirmed by
            # reading the run back): the ledger's word and notes are the newest.
            return {
                **stored,
                "run": {**stored.get("run", {}), "platformStatus": run.platform_status},
                "notes": [
                    {
                        "at": n.at.isoformat(),
                        "level": n.level.value,
                        "source": n.source,
                        "message": n.message,
                    }
                    for n in ledger.list_notes(run.run_id)
                ],
            }
    return build_report(run, list(ledger.list_machines(run.run_id)), ledger)


def resolve_for_cancel(
    run_id: RunId, ledger: RunLedger, graph: RunMachinesSource, clock: Clock
) -> Run | None:
    """The run as the ledger knows it; else its Resource Graph record, written to the ledger so
    the cancel's rules see the platform's status; else None (the name alone will do)."""
    run = ledger.find_run(run_id)
    if run is not None:
        return run
    configuration = run_id.configuration
    for record in graph.list_runs([configuration], [configuration.subscription_id]):
        if record.run_id == run_id:
            now = clock.now()
            try:
                return ledger.save_run(
                    replace(
                        Run.first_seen(run_id, now),
                        platform_status=PlatformStatus.of(record.status),
                    )
                )
            except LedgerConflict:
                return ledger.find_run(run_id)
    return None


def _matches(run: Run, wanted: RunFilter) -> bool:
    c = run.run_id.configuration
    if wanted.configuration and wanted.configuration.lower() not in (c.name.lower(), c.key):
        return False
    if wanted.status and wanted.status.lower() not in (
        run.status.value.lower(),
        (run.platform_status or "").lower(),
    ):
        return False
    if wanted.start_from and run.scheduled_start < wanted.start_from:
        return False
    return not (wanted.start_to and run.scheduled_start >= wanted.start_to)


def _token(position: str) -> str:
    return base64.urlsafe_b64encode(f"k:{position}".encode()).decode()


def _position(token: str | None) -> str | None:
    """Where the previous page ended (a key of the ledger's index), from its token."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError) as e:
        raise InvalidQuery("continuationToken is not one this API gave") from e
    kind, _, position = text.partition(":")
    if kind != "k" or not position:
        raise InvalidQuery("continuationToken is not one this API gave")
    return position
