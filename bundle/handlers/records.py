"""Per-image records from an Ignite evaluator: one row per (image, model, method, test, step)."""

from __future__ import annotations

from ignite.engine import Engine, Events


class PerImageRecords:
    """Collects the per-image values of every metric handler with ``save_details`` on an evaluator.

    Image ids come from ``batch[id_key]`` in iteration order, values from
    ``engine.state.metric_details`` at completion, so the records are exactly
    what the aggregate metrics were computed from.
    """

    def __init__(self, model: str, method: str, step: str = "trained", id_key: str = "patient_id") -> None:
        self.model, self.method, self.step, self.id_key = model, method, step, id_key
        self.image_ids: list[str] = []
        self.records: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect_ids)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._build)

    def _reset(self, engine: Engine) -> None:
        self.image_ids, self.records = [], []

    def _collect_ids(self, engine: Engine) -> None:
        ids = engine.state.batch[self.id_key]
        self.image_ids.extend(str(i) for i in ids)

    def _build(self, engine: Engine) -> None:
        details = getattr(engine.state, "metric_details", {})
        for test, values in details.items():
            values = values.reshape(-1).tolist()
            if len(values) != len(self.image_ids):
                raise RuntimeError(f"metric {test!r} has {len(values)} values for {len(self.image_ids)} images")
            self.records.extend(
                {"image_id": i, "model": self.model, "method": self.method, "test": test, "step": self.step,
                 "value": float(v)}
                for i, v in zip(self.image_ids, values)
            )
