"""Work items of the task queue: what the worker does next for a run."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from shared.domain.ids import InvalidId, MachineId, RunId

MAX_TASK_BYTES = 48 * 1024  # a Storage queue message holds 64 KiB, base64 takes a third


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

    def to_json(self) -> str:
        """The queue message body."""
        text = json.dumps(
            {
                "kind": self.kind.value,
                "run": self.run_id.text,
                "machines": [m.text for m in self.machines],
                "round": self.round,
            }
        )
        if len(text) > MAX_TASK_BYTES:
            raise ValueError("task too large for one queue message")
        return text

    @classmethod
    def from_json(cls, body: bytes | str) -> Task:
        """Parse and validate a queue message body."""
        try:
            document = json.loads(body)
            kind = TaskKind(document["kind"])
            run_id = RunId.parse(document["run"])
            machines = tuple(MachineId.parse(m) for m in document.get("machines", []))
            round_ = int(document.get("round", 0))
        except (ValueError, KeyError, TypeError, InvalidId) as e:
            raise InvalidTask(f"not a task: {e}") from e
        return cls(kind=kind, run_id=run_id, machines=machines, round=round_)

    def next_round(self) -> Task:
        """The same step again, later (verify and wait loops count their rounds)."""
        return Task(
            kind=self.kind, run_id=self.run_id, machines=self.machines, round=self.round + 1
        )
