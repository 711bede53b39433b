"""The run report: one JSON document per run, built from the ledger and what Azure reported."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from shared.domain.ids import MachineId
from shared.domain.platform import PatchMatch, PatchResult, match_patch_results, patch_window
from shared.domain.runs import MachineRecord, Run, RunNote
from shared.services.ports import RunLedger, RunMachinesSource

REPORT_VERSION = 1
NO_PATCH_RESULTS = (
    "no patch results matched (by run id, run name, or machine and the run's time window)"
)


def matched_patch_results(
    graph: RunMachinesSource, run: Run, machines: Sequence[MachineRecord]
) -> list[tuple[PatchResult, PatchMatch]]:
    """The run's patch results from Resource Graph: those naming the run by CorrelationId or
    run name, else those of its machines within its time window (`maintenanceRunId`'s format is
    undocumented; the one public sample is a timestamp)."""
    since, until = patch_window(run.scheduled_start, run.end)
    ids = {m.resource_id.lower() for m in machines}
    subscriptions = list(run.subscription_ids) or sorted(
        {run.run_id.configuration.subscription_id}
        | {MachineId.parse(m.resource_id).subscription_id for m in machines}
    )
    listed = graph.list_patch_results(run.run_id, subscriptions, since, until)
    return match_patch_results(listed, run.run_id, ids, since, until)


def build_report(
    run: Run,
    machines: Sequence[MachineRecord],
    ledger: RunLedger,
    *,
    patches: Sequence[tuple[PatchResult, PatchMatch]] | None = None,
    health: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything that happened in the run, in one document. `patches` None: not looked up
    yet (the run is not finished)."""
    patch_by_machine = {p.machine.key: (p, how) for p, how in patches or ()}
    actions = Counter(m.action.value for m in machines)
    return {
        "reportVersion": REPORT_VERSION,
        "run": {
            "correlationId": run.run_id.text,
            "maintenanceConfigurationId": run.run_id.configuration.text,
            "runName": run.run_id.run_name,
            "status": run.status.value,
            "platformStatus": run.platform_status,
            "scheduledStart": _iso(run.scheduled_start),
            "end": _iso(run.end),
            "cancellationCutOff": _iso(run.cancellation_cutoff),
            "subscriptionIds": list(run.subscription_ids),
        },
        "timeline": {
            "preEventReceivedAt": _iso(run.pre_event_at),
            "postEventReceivedAt": _iso(run.post_event_at),
            "postEventStatus": run.post_event_status,
            "wrapUpStartedAt": _iso(run.wrap_up_started_at),
            "completedAt": _iso(run.completed_at),
            "events": [
                {
                    "type": e.kind.value,
                    "id": e.event_id,
                    "schema": e.schema.value,
                    "eventTime": _iso(e.event_time),
                    "receivedAt": _iso(e.received_at),
                }
                for e in sorted(ledger.list_events(run.run_id), key=lambda e: e.received_at)
            ],
        },
        "gate": {"outcome": run.gate_outcome, "detail": run.gate_detail},
        "cancel": {
            "source": run.cancel_source,
            "requests": [
                {
                    "requestedAt": _iso(c.requested_at),
                    "requestedBy": c.requested_by,
                    "reason": c.reason,
                    "dryRun": c.dry_run,
                    "outcome": c.outcome.value,
                    "windowOpensAt": _iso(c.window_opens_at),
                    "windowClosesAt": _iso(c.window_closes_at),
                    "detail": c.detail,
                    "serviceCode": c.service_code,
                    "serviceMessage": c.service_message,
                }
                for c in ledger.list_cancel_requests(run.run_id)
            ],
        },
        "summary": {
            "machines": len(machines),
            "actions": dict(sorted(actions.items())),
            "patchResults": dict(Counter(p.status or "Unknown" for p, _ in patches or ())),
        },
        "patchResults": _patch_summary(patches),
        "machines": [
            _machine(m, patch_by_machine.get(m.resource_id.lower()))
            for m in sorted(machines, key=lambda m: m.resource_id.lower())
        ],
        "health": dict(health or {"checked": False}),
        "notes": [note_entry(n) for n in ledger.list_notes(run.run_id)],
    }


def _patch_summary(patches: Sequence[tuple[PatchResult, PatchMatch]] | None) -> dict[str, Any]:
    if patches is None:
        return {"lookedUp": False}
    return {
        "lookedUp": True,
        "matched": len(patches),
        "matchedBy": dict(sorted(Counter(how.value for _, how in patches).items())),
        "note": None if patches else NO_PATCH_RESULTS,
    }


def _machine(
    machine: MachineRecord, matched: tuple[PatchResult, PatchMatch] | None
) -> dict[str, Any]:
    patch = matched[0] if matched else None
    return {
        "resourceId": machine.resource_id,
        "kind": machine.kind.value,
        "powerStateBefore": machine.prior_power_state,
        "powerStateAfter": machine.last_power_state,
        "action": machine.action.value,
        "ownerRun": machine.owner_run,
        "error": {"code": machine.error_code, "message": machine.error_message}
        if machine.error_code or machine.error_message
        else None,
        "actions": [
            {"at": at, "action": action, "detail": detail} for at, action, detail in machine.history
        ],
        "patch": None
        if patch is None
        else {
            "status": patch.status,
            "installed": patch.installed,
            "failed": patch.failed,
            "rebootStatus": patch.reboot_status,
            "windowExceeded": patch.window_exceeded,
            "lastModified": patch.last_modified,
            "maintenanceRunId": patch.maintenance_run_id,
            "matchedBy": matched[1].value if matched else None,
        },
    }


def note_entry(note: RunNote) -> dict[str, Any]:
    """A note as the report lists it."""
    return {
        "at": _iso(note.at),
        "level": note.level.value,
        "source": note.source,
        "message": note.message,
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def summary_message(run: Run, report: Mapping[str, Any] | None) -> dict[str, Any]:
    """A short Teams/Slack-style message (`text`) with the report's summary attached."""
    summary = (report or {}).get("summary", {})
    actions = summary.get("actions", {})
    lines = [
        f"Maintenance run {run.run_id.run_name} of {run.run_id.configuration.name}: "
        f"{run.status.value}",
        f"Gate: {run.gate_outcome or 'not reached'}"
        + (f" ({run.gate_detail})" if run.gate_detail else ""),
        "Machines: " + (", ".join(f"{k} {v}" for k, v in sorted(actions.items())) or "none"),
    ]
    patch_results = (report or {}).get("patchResults", {})
    if patch_results.get("lookedUp"):
        lines.append(
            f"Patch results: {patch_results.get('matched')} matched"
            if patch_results.get("matched")
            else f"Patch results: {NO_PATCH_RESULTS}"
        )
    errors = [n for n in (report or {}).get("notes", []) if n.get("level") == "Error"]
    if errors:
        lines.append(f"Errors: {len(errors)}; first: {errors[0].get('message')}")
    # VMs the app started and could not stop are named in full: someone must act on them.
    lines += [f"Left running: {n.get('message')}" for n in errors if n.get("source") == "wrap-up"]
    if run.report_location:
        lines.append(f"Report: {run.report_location}")
    return {"text": "\n".join(lines), "run": (report or {}).get("run", {}), "summary": summary}
