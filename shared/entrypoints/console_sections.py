"""Pieces of the operator console's HTML shared by its pages: the report's sections (machines,
notes, cancel audit, events) and the small formatters (times, words, definition lists).

Everything that comes from events, Azure, the ledger or the request goes through `escape`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from html import escape
from typing import Any

from shared.entrypoints.console_timeline import machine_steps


def machines_section(report: Mapping[str, Any]) -> str:
    machines = report.get("machines", [])
    rows = []
    for machine in machines:
        error = machine.get("error") or {}
        steps = "".join(
            f"<li>{time_html(at)} {escape(step)}{detail_html(detail)}</li>"
            for at, step, detail in machine_steps(machine)
        )
        patch = machine.get("patch") or {}
        rows.append(
            f'<tr data-machine="{escape(str(machine.get("resourceId", "")))}">'
            f'<td title="{escape(str(machine.get("resourceId", "")))}">'
            f"{escape(str(machine.get('resourceId', '')).rsplit('/', 1)[-1])}</td>"
            f"<td>{word_html(machine.get('kind'))}</td>"
            f"<td>{word_html(machine.get('powerStateBefore'))}</td>"
            f"<td>{word_html(machine.get('powerStateAfter'))}</td>"
            f'<td class="action">{word_html(machine.get("action"))}</td>'
            f"<td>{word_html(patch.get('status'))}</td>"
            f'<td class="error">{escape(" ".join(str(v) for v in error.values() if v))}</td>'
            f'<td><ol class="steps">{steps}</ol></td></tr>'
        )
    if not rows:
        rows.append('<tr><td colspan="8" class="empty">No machine recorded yet.</td></tr>')
    return (
        "<h2>Machines</h2>"
        '<table class="machines"><thead><tr><th>Machine</th><th>Kind</th><th>Before</th>'
        "<th>After</th><th>What the app did</th><th>Patch</th><th>Error</th><th>Steps (UTC)</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def notes_section(report: Mapping[str, Any]) -> str:
    notes = report.get("notes", [])
    items = "".join(
        f'<li class="note {escape(str(n.get("level", "")).lower())}">'
        f"{time_html(parse_moment(n.get('at')))} "
        f"<strong>{escape(str(n.get('level', '')))}</strong> "
        f"{escape(str(n.get('source', '')))}: {escape(str(n.get('message', '')))}</li>"
        for n in notes
    )
    return "<h2>Notes and errors</h2>" + (
        f'<ul class="notes">{items}</ul>' if items else '<p class="empty">None.</p>'
    )


def cancel_audit_section(report: Mapping[str, Any]) -> str:
    requests = report.get("cancel", {}).get("requests", [])
    rows = "".join(
        "<tr>"
        f"<td>{moment_html(parse_moment(r.get('requestedAt')))}</td>"
        f"<td>{escape(str(r.get('requestedBy', '')))}</td>"
        f"<td>{'dry run' if r.get('dryRun') else 'cancel'}</td>"
        f"<td>{escape(str(r.get('reason', '')))}</td>"
        f"<td>{word_html(r.get('outcome'))}</td>"
        f"<td>{escape(str(r.get('detail', '')))}</td></tr>"
        for r in requests
    )
    if not rows:
        return ""
    return (
        "<h2>Cancel requests</h2>"
        '<table class="audit"><thead><tr><th>When</th><th>Who</th><th>Kind</th><th>Reason</th>'
        f"<th>Outcome</th><th>Detail</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def events_section(report: Mapping[str, Any]) -> str:
    events = report.get("timeline", {}).get("events", [])
    rows = "".join(
        "<tr>"
        f"<td>{escape(str(e.get('type', '')))}</td>"
        f"<td><code>{escape(str(e.get('id', '')))}</code></td>"
        f"<td>{escape(str(e.get('schema', '')))}</td>"
        f"<td>{moment_html(parse_moment(e.get('eventTime')))}</td>"
        f"<td>{moment_html(parse_moment(e.get('receivedAt')))}</td></tr>"
        for e in events
    )
    if not rows:
        return ""
    return (
        "<h2>Events received</h2>"
        '<table class="events"><thead><tr><th>Type</th><th>Id</th><th>Schema</th>'
        f"<th>Event time</th><th>Received</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def fact_list(rows: Iterable[tuple[str, str]]) -> str:
    """A definition list; values are already HTML."""
    return (
        '<dl class="facts">'
        + "".join(f"<dt>{escape(label)}</dt><dd>{value}</dd>" for label, value in rows)
        + "</dl>"
    )


def cell_html(value: object) -> str:
    text = str(value)
    parsed = parse_moment(text) if isinstance(value, str) else None
    return moment_html(parsed) if parsed is not None else escape(text)


def moment_html(value: datetime | None) -> str:
    """A moment in UTC, with the viewer's local time filled in by console.js."""
    if value is None:
        return '<span class="none">—</span>'
    return (
        f'<time datetime="{value.isoformat()}">{utc_text(value)}</time> '
        f'<span class="local" data-local-time="{value.isoformat()}"></span>'
    )


def utc_text(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def time_html(value: datetime | None) -> str:
    return "" if value is None else f'<time datetime="{value.isoformat()}">{value:%H:%M:%S}</time>'


def word_html(value: object) -> str:
    if value is None or value == "":
        return '<span class="none">—</span>'
    return escape(str(value))


def detail_html(value: object) -> str:
    return f" <span class='detail'>({escape(str(value))})</span>" if value else ""


def parse_moment(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or len(value) < 19 or value[4] != "-":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
