"""The time an Ignite engine waits for its batches, timed as the ``data`` work besides a run's passes."""

from __future__ import annotations

import time

from ignite.engine import Engine, Events

from bundle.passes import add_work


class DataTimer:
    """Times an engine's batch loading (``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED``: reading, the transforms a
    cache does not hold, collation) as ``data`` in :mod:`bundle.passes`, so that a training's time beyond the floor of
    its passes says what its data took. Times nothing where no pass counter counts (a plain training run)."""

    def __init__(self) -> None:
        self._started = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._start)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._stop)

    def _start(self, engine: Engine) -> None:
        self._started = time.perf_counter()

    def _stop(self, engine: Engine) -> None:
        add_work("data", time.perf_counter() - self._started)
