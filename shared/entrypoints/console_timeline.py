"""A run's timeline drawn as SVG on the server: the run's marks (T−40, the pre event, start
batches, T−15, the cancel window, T, the post event, deallocations, the end) and one row per
machine with each step the app took. Every text is HTML-escaped; nothing runs in the picture."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any

from shared.domain.runs import MachineAction
from shared.domain.timeline import (
    CANCEL_WINDOW_OPENS_BEFORE_START,
    CancelWindow,
    machines_running_deadline,
)

WIDTH = 1000
LABEL_WIDTH = 220
PLOT_LEFT = LABEL_WIDTH + 10
PLOT_RIGHT = WIDTH - 30
ROW = 26
LABEL_ROW = 15
CHAR_WIDTH = 6.2
# A stretch with nothing in it longer than this is drawn this long.
MAX_GAP = timedelta(minutes=12)
# Starts within this of each other were sent in one batch.
BATCH_GAP = timedelta(seconds=2)
STEP_COLOURS = {
    MachineAction.PLANNED.value: "#8a8f98",
    MachineAction.LEFT_ALONE.value: "#3b7dd8",
    MachineAction.SHARED_WITH_RUN.value: "#3b7dd8",
    MachineAction.STARTING.value: "#e0a100",
    MachineAction.STARTED.value: "#2e9e4f",
    MachineAction.START_FAILED.value: "#d1342f",
    MachineAction.DEALLOCATING.value: "#8e5bd0",
    MachineAction.DEALLOCATED.value: "#5a3696",
    MachineAction.DEALLOCATE_FAILED.value: "#d1342f",
}
OTHER_STEP = "#6b7280"
END_ANCHOR = ' text-anchor="end"'


@dataclass(frozen=True)
class Mark:
    """A moment of the run drawn as a vertical line with a label."""

    key: str
    label: str
    at: datetime
    colour: str = "#374151"


def run_marks(report: Mapping[str, Any], window: CancelWindow) -> list[Mark]:
    """The run's moments that are known, in time order."""
    run = report.get("run", {})
    timeline = report.get("timeline", {})
    start = _time(run.get("scheduledStart"))
    marks: list[Mark] = []
    if start is not None:
        marks.append(Mark("t-40", "T−40", start - CANCEL_WINDOW_OPENS_BEFORE_START))
        marks.append(Mark("t-15", "T−15 machines running", machines_running_deadline(start)))
        marks.append(Mark("t", "T (patching)", start, "#111827"))
    marks.append(Mark("window-opens", "cancel window opens", window.opens_at, "#2e9e4f"))
    marks.append(Mark("window-closes", "cancel window closes", window.closes_at, "#d1342f"))
    for key, label, value in (
        ("pre-event", "pre event", timeline.get("preEventReceivedAt")),
        ("post-event", "post event", timeline.get("postEventReceivedAt")),
        ("wrap-up", "wrap-up", timeline.get("wrapUpStartedAt")),
        ("end", "end", run.get("end")),
        ("completed", "completed", timeline.get("completedAt")),
    ):
        at = _time(value)
        if at is not None:
            marks.append(Mark(key, label, at, "#1f4fa3"))
    for number, at in enumerate(_batches(report, MachineAction.STARTING.value), start=1):
        marks.append(Mark(f"start-batch-{number}", f"start batch {number}", at, "#e0a100"))
    for number, at in enumerate(_batches(report, MachineAction.DEALLOCATING.value), start=1):
        marks.append(Mark(f"deallocation-{number}", f"deallocation {number}", at, "#8e5bd0"))
    return sorted(marks, key=lambda m: m.at)


class TimeScale:
    """Time → x. Long quiet stretches (a maintenance window of hours between T and the post
    event) are drawn shortened to MAX_GAP so the busy minutes stay readable; each shortened
    stretch is marked on the axis."""

    def __init__(self, moments: Sequence[datetime], left: float, right: float) -> None:
        points = sorted(set(moments))
        if len(points) == 1:
            points.append(points[0] + timedelta(minutes=1))
        drawn = [0.0]
        self.breaks: list[tuple[datetime, datetime]] = []
        for before, after in itertools.pairwise(points):
            gap = (after - before).total_seconds()
            if gap > MAX_GAP.total_seconds():
                self.breaks.append((before, after))
                gap = MAX_GAP.total_seconds()
            drawn.append(drawn[-1] + gap)
        self.points, self.left, self.right = points, left, right
        self.scale = (right - left) / (drawn[-1] or 1.0)
        self.drawn = drawn

    @property
    def first(self) -> datetime:
        """The earliest moment drawn."""
        return self.points[0]

    @property
    def last(self) -> datetime:
        """The latest moment drawn."""
        return self.points[-1]

    def x(self, at: datetime) -> float:
        """Where `at` is drawn."""
        if at <= self.points[0]:
            return self.left
        for index in range(1, len(self.points)):
            if at <= self.points[index]:
                before, after = self.points[index - 1], self.points[index]
                share = (at - before) / (after - before) if after > before else 0.0
                drawn = self.drawn[index - 1] + share * (self.drawn[index] - self.drawn[index - 1])
                return self.left + drawn * self.scale
        return self.right


def timeline_svg(report: Mapping[str, Any], window: CancelWindow) -> str:
    """The picture, as an inline <svg> element."""
    marks = run_marks(report, window)
    machines = list(report.get("machines", []))
    steps = [(machine, _steps(machine)) for machine in machines]
    moments = [m.at for m in marks] + [at for _, s in steps for at, _, _ in s]
    scale = TimeScale(moments, PLOT_LEFT, PLOT_RIGHT)
    x = scale.x
    placed = _label_rows(marks, x)
    header = LABEL_ROW * (max((row for row, _ in placed), default=0) + 1) + 14
    height = header + ROW * max(1, len(machines)) + 24
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} '
        f'{height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-labelledby="timeline-title">',
        '<title id="timeline-title">Timeline of the run: the run\'s moments and one row per '
        "machine</title>",
        f'<rect class="window" data-mark="cancel-window" x="{x(window.opens_at):.1f}" y="0" '
        f'width="{max(0.0, x(window.closes_at) - x(window.opens_at)):.1f}" height="{height}" '
        'fill="#2e9e4f" fill-opacity="0.08"/>',
    ]
    for before, after in scale.breaks:
        middle = (x(before) + x(after)) / 2
        hidden = after - before
        parts.append(
            f'<g class="break"><title>{_duration(hidden)} not drawn to scale</title>'
            f'<rect x="{middle - 6:.1f}" y="{header - 6}" width="12" '
            f'height="{height - header - 14}" fill="#f3f4f6"/>'
            f'<text x="{middle:.1f}" y="{height - 18}" font-size="11" text-anchor="middle" '
            f'fill="#6b7280">≈ {_duration(hidden)}</text></g>'
        )
    for (row, anchor_end), mark in zip(placed, marks, strict=True):
        mark_x = x(mark.at)
        label_y = 12 + row * LABEL_ROW
        text_x = mark_x - 3 if anchor_end else mark_x + 3
        parts.append(
            f'<g class="mark" data-mark="{escape(mark.key)}" data-at="{mark.at.isoformat()}">'
            f"<title>{escape(mark.label)}: {mark.at.strftime('%Y-%m-%d %H:%M:%S')} UTC</title>"
            f'<line x1="{mark_x:.1f}" y1="{label_y + 3}" x2="{mark_x:.1f}" y2="{height - 28}" '
            f'stroke="{mark.colour}" stroke-width="1" stroke-dasharray="3 3"/>'
            f'<text x="{text_x:.1f}" y="{label_y}" font-size="11" fill="{mark.colour}"'
            f"{END_ANCHOR if anchor_end else ''}>"
            f"{escape(_label(mark))}</text></g>"
        )
    for row, (machine, machine_steps) in enumerate(steps):
        y = header + row * ROW + ROW / 2
        name = _machine_name(machine)
        action = str(machine.get("action", ""))
        parts.append(
            f'<g class="machine" data-machine="{escape(name)}" data-action="{escape(action)}">'
            f'<text x="6" y="{y + 4:.1f}" font-size="12" fill="#111827">{escape(name)}</text>'
            f'<text x="{LABEL_WIDTH - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="{STEP_COLOURS.get(action, OTHER_STEP)}">{escape(action)}</text>'
        )
        if machine_steps:
            parts.append(
                f'<line x1="{x(machine_steps[0][0]):.1f}" y1="{y:.1f}" '
                f'x2="{x(machine_steps[-1][0]):.1f}" y2="{y:.1f}" stroke="#c7ccd4" '
                'stroke-width="2"/>'
            )
        for at, step, detail in machine_steps:
            said = f"{step} at {at.strftime('%H:%M:%S')} UTC" + (f": {detail}" if detail else "")
            parts.append(
                f'<circle class="step" data-step="{escape(step)}" cx="{x(at):.1f}" cy="{y:.1f}" '
                f'r="5" fill="{STEP_COLOURS.get(step, OTHER_STEP)}"><title>{escape(said)}'
                "</title></circle>"
            )
        parts.append("</g>")
    parts.append(
        f'<text x="{PLOT_LEFT}" y="{height - 4}" font-size="11" fill="#6b7280">'
        f"{scale.first.strftime('%Y-%m-%d %H:%M:%S')} UTC</text>"
        f'<text x="{PLOT_RIGHT}" y="{height - 4}" font-size="11" fill="#6b7280" '
        f'text-anchor="end">{scale.last.strftime("%Y-%m-%d %H:%M:%S")} UTC</text></svg>'
    )
    return "".join(parts)


def _label(mark: Mark) -> str:
    return f"{mark.label} {mark.at.strftime('%H:%M:%S')}"


def _label_rows(marks: Sequence[Mark], x: Callable[[datetime], float]) -> list[tuple[int, bool]]:
    """A row for each mark's label so that no two labels overlap; labels near the right edge
    end at their line instead of starting there."""
    row_ends: list[float] = []
    placed = []
    for mark in marks:
        width = len(_label(mark)) * CHAR_WIDTH
        at = x(mark.at)
        anchor_end = at + width > WIDTH - 4
        start, end = (at - width, at) if anchor_end else (at, at + width)
        for row, row_end in enumerate(row_ends):
            if start > row_end + 6:
                row_ends[row] = end
                placed.append((row, anchor_end))
                break
        else:
            row_ends.append(end)
            placed.append((len(row_ends) - 1, anchor_end))
    return placed


def _duration(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _machine_name(machine: Mapping[str, Any]) -> str:
    return str(machine.get("resourceId", "")).rstrip("/").rsplit("/", 1)[-1] or "(unnamed)"


def _steps(machine: Mapping[str, Any]) -> list[tuple[datetime, str, str]]:
    found = []
    for entry in machine.get("actions") or []:
        at = _time(entry.get("at"))
        if at is not None:
            found.append((at, str(entry.get("action", "")), str(entry.get("detail") or "")))
    return sorted(found, key=lambda s: s[0])


def _batches(report: Mapping[str, Any], action: str) -> list[datetime]:
    """The first moment of each group of `action` steps sent close together."""
    moments = sorted(
        at for m in report.get("machines", []) for at, step, _ in _steps(m) if step == action
    )
    batches: list[datetime] = []
    previous: datetime | None = None
    for at in moments:
        if previous is None or at - previous > BATCH_GAP:
            batches.append(at)
        previous = at
    return batches


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def machine_steps(machine: Mapping[str, Any]) -> Sequence[tuple[datetime, str, str]]:
    """A machine's steps in time order (for the page's table)."""
    return _steps(machine)
