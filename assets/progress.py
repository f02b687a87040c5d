"""Progress of long steps through the Dagster logger: a training callback and a `progress(done, total)`."""

from __future__ import annotations

import logging
import time
from typing import Callable

from ul_pipeline.train.loop import Callback, TrainState
from ul_pipeline.train.progress import data_wait_text


class TrainingLog(Callback):
    """Logs samples_seen/total, loss, bits/pixel, speed and the time waiting for data at every log step."""

    def __init__(self, log: logging.Logger, label: str):
        self.log, self.label, self.total, self.t0 = log, label, 0, time.perf_counter()

    def on_start(self, state: TrainState, total_samples: int) -> None:
        self.total, self.t0 = total_samples, time.perf_counter()
        where = "from scratch" if state.samples_seen == 0 else f"resuming at samples_seen {state.samples_seen}"
        self.log.info(f"{self.label}: training to {total_samples} samples, {where}")

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        parts = [f"{self.label}: {state.samples_seen}/{self.total} samples "
                 f"({100 * state.samples_seen / max(self.total, 1):.0f}%)"]
        if "loss_nats" in metrics:
            parts.append(f"loss {metrics['loss_nats']:.4g} nats")
        if "bits_per_pixel" in metrics:
            parts.append(f"bits/pixel {metrics['bits_per_pixel']:.4f}")
        if "samples_per_s" in metrics:
            parts.append(f"{metrics['samples_per_s']:.0f} samples/s")
        if "data_wait_s" in metrics:
            parts.append(data_wait_text(metrics))
        self.log.info(", ".join(parts))

    def on_checkpoint(self, state: TrainState, path) -> None:
        self.log.info(f"{self.label}: checkpoint {path} at samples_seen {state.samples_seen}")

    def on_end(self, state: TrainState) -> None:
        self.log.info(f"{self.label}: done at samples_seen {state.samples_seen} "
                      f"({time.perf_counter() - self.t0:.1f} s this run)")


def progress_log(log: logging.Logger, label: str, every: float = 0.1) -> Callable[[int, int], None]:
    """A `progress(done, total)` that logs each time another `every` fraction (10%) is done."""
    last = -1

    def progress(done: int, total: int) -> None:
        nonlocal last
        step = int(done / max(total, 1) / every)
        if step > last:
            last = step
            log.info(f"{label}: {done}/{total} ({100 * done / max(total, 1):.0f}%)")

    return progress
