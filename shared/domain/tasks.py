"""Work items of the task queue: what the worker does next for a run."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from shared.domain.ids import InvalidId, MachineId, RunId
from shared.domain.json_input import UnreadableJson, load_json

# The storage queue that carries tasks (its poison queue is "<name>-poison").
TASK_QUEUE = "maintenance-tasks"
MAX_TASK_BYTES = 48 * 1024  # a Storage queue message holds 64 KiB, base64 takes a third
# The longest a task is put off in one message: a Storage queue hides a message at most 7 days,
# and by default keeps it only 7 days, so a day is left for the message to be seen. A longer
# wait is done in hops (the step re-enqueues itself) and the reconciler re-drives a lost hop.
MAX_TASK_DELAY = timedelta(days=6)
# Far more rounds than any wait loop takes (they end at deadlines); bounds what a message claims.
MAX_ROUND = 1_000_000
# A carried power state is one of Azure's short words (`deallocated`, `running`, ...).
MAX_POWER_WORD = 40


class TaskKind(enum.StrEnum):
    """The steps of a run's orchestration."""

    PREPARE = "prepare"
    START = "start"
    VERIFY = "verify"
    GATE = "gate"
    WRAP_UP = "wrap_up"
    STOP = "stop"
    FINISH = "finish"
    NOTIFY = "notify"
    CONFIRM_CANCEL = "confirm_cancel"


class InvalidTask(ValueError):
    """A queue message that is not a task this app wrote."""


@dataclass(frozen=True)
class Task:
    """One step for one run; `machines` for the steps that fan out (start, stop)."""

    kind: TaskKind
    run_id: RunId
    machines: tuple[MachineId, ...] = ()
    round: int = 0
    # Power states read in bulk for `machines` (same order; None: not read) at `read_at`:
    # wrap-up's one read of the VMs it stops, carried so that no stop task reads again.
    powers: tuple[str | None, ...] = ()
    read_at: datetime | None = None
    # When the write turns promised to this task's machines come (`Machines.turn_appointment`):
    # a delivery before then whose turns are not near goes back to wait for them.
    turn_at: datetime | None = None

    def to_json(self) -> str:
        """The queue message body."""
        body: dict[str, Any] = {
            "kind": self.kind.value,
            "run": self.run_id.text,
            "machines": [m.text for m in self.machines],
            "round": self.round,
        }
        if self.read_at is not None:
            body["powers"] = list(self.powers)
            body["read_at"] = self.read_at.isoformat()
        if self.turn_at is not None:
            body["turn_at"] = self.turn_at.isoformat()
        text = json.dumps(body)
        if len(text) > MAX_TASK_BYTES:
            raise ValueError("task too large for one queue message")
        return text

    @classmethod
    def from_json(cls, body: bytes | str) -> Task:
        """Parse and validate a queue message body."""
        try:
            document: Any = load_json(body, max_bytes=MAX_TASK_BYTES)
        except UnreadableJson as e:
            raise InvalidTask(f"not a task: {e}") from e
        if not isinstance(document, dict):
            raise InvalidTask("not a task: the message is not a JSON object")
        machines = document.get("machines", [])
        round_ = document.get("round", 0)
        if not isinstance(machines, list):
            raise InvalidTask("not a task: machines is not an array")
        if not isinstance(round_, int) or isinstance(round_, bool) or not 0 <= round_ <= MAX_ROUND:
            raise InvalidTask(f"not a task: round is not a whole number 0..{MAX_ROUND}")
        try:
            kind = TaskKind(str(document.get("kind")))
            run_id = RunId.parse(document.get("run"))
            parsed = tuple(MachineId.parse(m) for m in machines)
        except (ValueError, InvalidId) as e:
            raise InvalidTask(f"not a task: {e}") from e
        powers, read_at = _carried_powers(document, len(parsed))
        turn_at = _moment(document.get("turn_at"), "turn_at")
        return cls(
            kind=kind,
            run_id=run_id,
            machines=parsed,
            round=round_,
            powers=powers,
            read_at=read_at,
            turn_at=turn_at,
        )

    def next_round(self) -> Task:
        """The same step again, later (verify and wait loops count their rounds)."""
        return replace(self, round=self.round + 1)

    def carried_power(self, machine: MachineId) -> str | None:
        """The power state word carried for `machine`, if it was read."""
        for each, power in zip(self.machines, self.powers, strict=False):
            if each == machine:
                return power
        return None

    def with_machines(self, machines: Sequence[MachineId], round_: int) -> Task:
        """The same step for some of its machines (their carried powers kept), at `round_`."""
        carried = {m: p for m, p in zip(self.machines, self.powers, strict=False)}
        kept = tuple(machines)
        return replace(
            self,
            machines=kept,
            round=round_,
            powers=tuple(carried.get(m) for m in kept) if self.read_at is not None else (),
        )


def _carried_powers(
    document: dict[str, Any], machines: int
) -> tuple[tuple[str | None, ...], datetime | None]:
    if "read_at" not in document:
        return (), None
    powers = document.get("powers")
    read_at = document.get("read_at")
    if (
        not isinstance(powers, list)
        or len(powers) != machines
        or not all(p is None or (isinstance(p, str) and len(p) <= MAX_POWER_WORD) for p in powers)
    ):
        raise InvalidTask("not a task: powers is not one short word or null per machine")
    when = _moment(read_at, "read_at")
    if when is None:
        raise InvalidTask("not a task: read_at is not an ISO 8601 time")
    return tuple(powers), when


def _moment(value: object, name: str) -> datetime | None:
    """An optional ISO 8601 time with its zone."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError as e:
        raise InvalidTask(f"not a task: {name} is not an ISO 8601 time") from e
    if when.tzinfo is None:
        raise InvalidTask(f"not a task: {name} has no time zone")
    return when
