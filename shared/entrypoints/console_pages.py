"""The operator console's HTML, rendered on the server with the standard library.

Everything that comes from events, Azure, the ledger or the request goes through `escape` (text
and attribute values alike). The pages hold no script of their own: console.js, served by the app
under the Content-Security-Policy `script-src 'self'`, fills in local times, the cancel
countdown and the refresh.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from shared.domain.runs import RefusedEvent, RunStatus
from shared.entrypoints.console_sections import (
    cancel_audit_section,
    cell_html,
    detail_html,
    events_section,
    fact_list,
    machines_section,
    moment_html,
    notes_section,
    parse_moment,
    utc_text,
    word_html,
)
from shared.entrypoints.console_timeline import timeline_svg

if TYPE_CHECKING:
    from shared.services.console_views import RunsOverview, RunView

REFRESH_SECONDS = 15
# The answer fields a cancel shows first, in this order; any other field follows.
ANSWER_FIELDS = (
    ("outcome", "Outcome"),
    ("now", "Answered at"),
    ("windowOpensAt", "Window opens"),
    ("windowClosesAt", "Window closes"),
    ("windowClosesBecause", "Closes because"),
    ("runStatus", "Our status"),
    ("platformStatus", "Platform status"),
    ("serviceCode", "Azure's code"),
    ("serviceMessage", "Azure's message"),
)
HIDDEN_ANSWER_FIELDS = frozenset({"type", "title", "status", "detail", "correlationId"})


@dataclass(frozen=True)
class Links:
    """Builds the console's links. `code` is the function key the caller's own URL carried,
    passed on so the next page opens too (the Functions host reads keys only from `code` or
    the x-functions-key header); None when the key came in the header."""

    base: str
    code: str | None = None

    def to(self, page: str = "", **params: str | None) -> str:
        """A path below the console with its query, the caller's key last."""
        query = {k: v for k, v in params.items() if v}
        if self.code:
            query["code"] = self.code
        path = self.base + (f"/{page}" if page else "")
        return path + ("?" + urllib.parse.urlencode(query) if query else "")


@dataclass(frozen=True)
class Page:
    """What every page carries besides its body."""

    links: Links
    now: datetime
    caller: str
    csrf_token: str = ""
    https: bool = False


def layout(page: Page, title: str, body: str, *, refresh: bool = False) -> str:
    """The whole document around `body`."""
    refresh_attribute = f' data-refresh-seconds="{REFRESH_SECONDS}"' if refresh else ""
    links = page.links
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="same-origin">'
        f"<title>{escape(title)} · Update Manager console</title>"
        f'<link rel="stylesheet" href="{escape(links.to("static/console.css"))}">'
        f'<script src="{escape(links.to("static/console.js"))}" defer></script>'
        "</head>"
        f'<body data-server-now="{page.now.isoformat()}"{refresh_attribute}>'
        '<header class="top"><span class="brand">Update Manager console</span><nav>'
        f'<a href="{escape(links.to())}">Runs</a>'
        f'<a href="{escape(links.to("refused"))}">Refused events</a></nav>'
        f'<span class="who">{escape(page.caller)}</span></header>'
        f"<main>{body}</main>"
        f"<footer>Page made {utc_text(page.now)}"
        f"{' · refreshes while a run is under way' if refresh else ''}</footer></body></html>"
    )


def runs_page(
    page: Page, overview: RunsOverview, configuration: str, status: str, token: str | None
) -> str:
    """Every run, newest first, filtered and paged."""
    links = page.links
    options = "".join(
        f'<option value="{escape(s)}"{" selected" if s.lower() == status.lower() else ""}>'
        f"{escape(s or 'any status')}</option>"
        for s in ("", *(s.value for s in RunStatus))
    )
    hidden_key = (
        f'<input type="hidden" name="code" value="{escape(links.code)}">' if links.code else ""
    )
    filters = (
        f'<form class="filters" method="get" action="{escape(links.base)}">'
        '<label>Configuration <input type="text" name="configuration" '
        f'value="{escape(configuration)}" placeholder="any"></label>'
        f'<label>Status <select name="status">{options}</select></label>'
        f'{hidden_key}<button type="submit">Filter</button></form>'
    )
    refused = ""
    if overview.refused_events:
        refused = (
            f'<p class="banner attention">{overview.refused_events} maintenance event(s) '
            f'were refused recently: <a href="{escape(links.to("refused"))}">see why</a>.</p>'
        )
    rows = "".join(_run_row(page, row) for row in overview.rows)
    if not rows:
        rows = '<tr><td colspan="14" class="empty">No run matches.</td></tr>'
    paging = []
    if token:
        paging.append(
            f'<a href="{escape(links.to(configuration=configuration, status=status))}">'
            "First page</a>"
        )
    if overview.next_token:
        paging.append(
            '<a rel="next" href="'
            + escape(
                links.to(
                    configuration=configuration,
                    status=status,
                    continuationToken=overview.next_token,
                )
            )
            + '">Next page</a>'
        )
    body = (
        "<h1>Maintenance runs</h1>"
        f"{filters}{refused}"
        '<table class="runs"><thead><tr><th title="needs attention">!</th><th>Configuration</th>'
        "<th>Run</th><th>Scheduled start</th><th>Platform</th><th>Ours</th><th>Gate</th>"
        "<th>Machines</th><th>To start</th><th>Started</th><th>Left alone</th><th>Skipped</th>"
        f"<th>Failed</th><th>Stopped</th></tr></thead><tbody>{rows}</tbody></table>"
        f'<nav class="paging">{" ".join(paging)}</nav>'
    )
    under_way = any(row.under_way for row in overview.rows)
    return layout(page, "Runs", body, refresh=under_way)


def _run_row(page: Page, row: Any) -> str:
    summary = row.summary
    counts = row.counts
    start = parse_moment(summary.get("scheduledStart"))
    mark = ""
    if row.attention:
        mark = (
            f'<span class="attention-mark" title="{escape("; ".join(row.attention))}">!</span>'
            f'<span class="attention-text">{escape("; ".join(row.attention))}</span>'
        )
    run_link = page.links.to("run", run=str(summary["correlationId"]))
    return (
        f'<tr class="run{" needs-attention" if row.attention else ""}" '
        f'data-run="{escape(str(summary["correlationId"]))}">'
        f'<td class="attention">{mark}</td>'
        f"<td>{escape(str(summary.get('configuration') or ''))}</td>"
        f'<td><a class="run-link" href="{escape(run_link)}">'
        f"{escape(str(summary.get('runName') or ''))}</a></td>"
        f"<td>{moment_html(start)}</td>"
        f"<td>{word_html(summary.get('platformStatus'))}</td>"
        f'<td class="status">{word_html(summary.get("status"))}</td>'
        f"<td>{word_html(summary.get('gate'))}</td>"
        f'<td class="num">{counts.machines}</td><td class="num">{counts.to_start}</td>'
        f'<td class="num">{counts.started}</td><td class="num">{counts.left_alone}</td>'
        f'<td class="num">{counts.skipped}</td><td class="num">{counts.failed}</td>'
        f'<td class="num">{counts.stopped}</td></tr>'
    )


def run_page(page: Page, view: RunView, cancel_answer: CancelAnswerView | None = None) -> str:
    """One run: facts, cancel, timeline, machines, notes, cancel audit, events."""
    report = view.report
    run = report.get("run", {})
    links = page.links
    correlation_id = view.run.run_id.text
    facts = fact_list(
        (
            ("Configuration", escape(view.run.run_id.configuration.name)),
            ("Correlation id", f"<code>{escape(correlation_id)}</code>"),
            ("Scheduled start (T)", moment_html(view.run.scheduled_start)),
            ("End", moment_html(parse_moment(run.get("end")))),
            ("Our status", word_html(run.get("status"))),
            ("Platform status", word_html(run.get("platformStatus"))),
            (
                "Gate",
                word_html(report.get("gate", {}).get("outcome"))
                + detail_html(report.get("gate", {}).get("detail")),
            ),
            ("Cancelled by", word_html(report.get("cancel", {}).get("source"))),
            (
                "Report",
                '<a class="report-download" href="'
                f'{escape(links.to("report", run=correlation_id))}" download>'
                "Download the report (JSON)</a>",
            ),
        )
    )
    body = (
        f'<p class="crumbs"><a href="{escape(links.to())}">← all runs</a></p>'
        f"<h1>Run {escape(view.run.run_id.run_name)} "
        f"<small>{escape(view.run.run_id.configuration.name)}</small></h1>"
        f"{facts}"
        f"{_cancel_section(page, view, cancel_answer)}"
        "<h2>Timeline</h2>"
        f'<div class="timeline-box">{timeline_svg(report, view.window)}</div>'
        f"{machines_section(report)}{notes_section(report)}{cancel_audit_section(report)}{events_section(report)}"
    )
    # A page showing a cancel's answer does not reload itself: that would post the form again.
    return layout(
        page,
        f"Run {view.run.run_id.run_name}",
        body,
        refresh=view.under_way and cancel_answer is None,
    )


@dataclass(frozen=True)
class CancelAnswerView:
    """The cancel API's answer for the page: its HTTP status and its JSON document."""

    status: int
    document: Mapping[str, Any]
    dry_run: bool


def _cancel_section(page: Page, view: RunView, answer: CancelAnswerView | None) -> str:
    window = view.window
    links = page.links
    correlation_id = view.run.run_id.text
    token = escape(page.csrf_token)
    run_field = f'<input type="hidden" name="run" value="{escape(correlation_id)}">'
    csrf_field = f'<input type="hidden" name="csrf" value="{token}">'
    action = escape(links.to("cancel"))
    shown = _answer(answer) if answer is not None else ""
    return (
        '<section class="cancel" id="cancel"><h2>Cancel this run</h2>'
        f'<p class="window">The cancel window is open from {moment_html(window.opens_at)} until '
        f"{moment_html(window.closes_at)} ({escape(window.closes_because)}). "
        f'<span id="countdown" data-opens="{window.opens_at.isoformat()}" '
        f'data-closes="{window.closes_at.isoformat()}">'
        f"{escape(window.position(page.now).value)}</span></p>"
        f"{shown}"
        '<div class="cancel-forms">'
        f'<form method="post" action="{action}" class="check-form">{run_field}{csrf_field}'
        '<input type="hidden" name="intent" value="check">'
        '<button type="submit" id="check-button">Check (dry run)</button>'
        '<span class="hint">asks the cancel API whether a cancel would be sent now; '
        "nothing is sent to Azure</span></form>"
        f'<form method="post" action="{action}" class="cancel-form" id="cancel-form">'
        f'{run_field}{csrf_field}<input type="hidden" name="intent" value="cancel">'
        '<label>Reason <input type="text" name="reason" id="cancel-reason" required '
        'maxlength="500" placeholder="why the run must not patch"></label>'
        '<label class="confirm"><input type="checkbox" name="confirm" value="yes" '
        'id="cancel-confirm" required> I confirm: cancel this maintenance run in Azure</label>'
        '<button type="submit" id="cancel-button" class="danger">Cancel the run</button>'
        "</form></div></section>"
    )


def _answer(answer: CancelAnswerView) -> str:
    document = answer.document
    ok = 200 <= answer.status < 300
    title = document.get("title") or document.get("outcome") or "no outcome given"
    kind = "Check (dry run)" if answer.dry_run else "Cancel"
    rows = [
        (label, cell_html(document[key]))
        for key, label in ANSWER_FIELDS
        if document.get(key) is not None
    ]
    known = {key for key, _ in ANSWER_FIELDS} | HIDDEN_ANSWER_FIELDS
    rows += [
        (str(key), cell_html(value))
        for key, value in document.items()
        if key not in known and value is not None
    ]
    return (
        f'<div id="cancel-answer" class="answer {"ok" if ok else "refused"}" '
        f'data-status="{answer.status}" data-outcome="{escape(str(document.get("outcome", "")))}" '
        f'role="status"><h3>{kind}: {escape(str(title))} '
        f"<small>HTTP {answer.status}</small></h3>"
        f'<p class="detail">{escape(str(document.get("detail") or ""))}</p>'
        f"{fact_list(rows)}</div>"
    )


def refused_page(page: Page, refused: Sequence[RefusedEvent]) -> str:
    """Every maintenance event the app refused, newest first, and why."""
    rows = "".join(
        '<tr class="refused">'
        f"<td>{moment_html(r.refused_at)}</td>"
        f"<td>{escape(r.channel)}</td>"
        f'<td class="reason">{escape(r.reason)}</td>'
        f"<td><code>{escape(r.event_id or '')}</code></td>"
        f'<td><pre class="excerpt">{escape(r.excerpt)}</pre></td></tr>'
        for r in refused
    )
    if not rows:
        rows = '<tr><td colspan="5" class="empty">The app has refused no event.</td></tr>'
    body = (
        "<h1>Refused events</h1>"
        "<p>Maintenance events the app could not act on, newest first. Each one was also logged "
        "as an error when it came.</p>"
        '<table class="refused-events"><thead><tr><th>Refused</th><th>Channel</th><th>Why</th>'
        f"<th>Event id</th><th>What came (excerpt)</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return layout(page, "Refused events", body)


def message_page(page: Page, title: str, detail: str) -> str:
    """A page that only says something (not found, bad request, not allowed)."""
    body = (
        f'<p class="crumbs"><a href="{escape(page.links.to())}">← all runs</a></p>'
        f'<h1>{escape(title)}</h1><p class="detail">{escape(detail)}</p>'
    )
    return layout(page, title, body)
