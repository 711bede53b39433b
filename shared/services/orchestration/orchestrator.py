"""The task worker's entry: one task in, the step it names run."""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.domain.tasks import Task, TaskKind
from shared.services.orchestration.finishing import Finishing
from shared.services.orchestration.starting import Starting
from shared.services.orchestration.watching import Watching

log = logging.getLogger(__name__)


class Orchestrator(Starting, Watching, Finishing):
    """The task worker's use cases, with their ports (see StepsBase for the fields)."""

    def handle(self, task: Task) -> None:
        """Run one task. Raises on infrastructure failures, so the queue retries it."""
        steps: dict[TaskKind, Callable[[Task], None]] = {
            TaskKind.PREPARE: self.prepare,
            TaskKind.START: self.start,
            TaskKind.VERIFY: self.verify,
            TaskKind.GATE: self.gate,
            TaskKind.WRAP_UP: self.wrap_up,
            TaskKind.STOP: self.stop,
            TaskKind.FINISH: self.finish,
            TaskKind.NOTIFY: self.notify,
            TaskKind.CONFIRM_CANCEL: self.confirm_cancel,
        }
        step = steps.get(task.kind)
        if step is None:
            log.info("Task %s for run %s is handled elsewhere", task.kind, task.run_id.text)
            return
        step(task)
