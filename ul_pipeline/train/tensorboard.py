"""Live training curves in TensorBoard: a callback that writes event files beside the checkpoint.

Every logged row (losses, bits/pixel, learning rate, samples/s, GFLOP/s, gradient norm) becomes a
scalar under `<stage>/<name>` at x = samples seen (comparable across batch sizes and world sizes);
at each checkpoint an optional picture (a small reconstruction or sample grid) is added. A resumed
run opens the same folder with `purge_step` one past its checkpoint, so the steps the killed run
logged after that checkpoint (or, restarted from scratch, all it logged) are dropped by TensorBoard
and every step appears once. The loop calls
callbacks on rank 0 only, so one process writes. Open with `tensorboard --logdir artifacts/runs`:
every run folder of every experiment (a sweep's points) shows side by side.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

from torch import Tensor

from ul_pipeline.train.loop import Callback, TrainState

SKIP = ("step", "samples_seen")  # the x axis, not curves
LOG_DIR = "tensorboard"  # inside the run folder


class TensorBoardLog(Callback):
    """Scalars at every log row, a picture at every checkpoint; `picture(checkpoint) -> (3|1, H, W) in [0, 1]`."""

    def __init__(self, run_dir: str | Path, stage: str, picture: Optional[Callable[[Path], Tensor]] = None):
        self.log_dir, self.stage, self.picture = Path(run_dir) / LOG_DIR, stage, picture
        self.writer = None

    def on_start(self, state: TrainState, total_samples: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # resumed at samples_seen S: whatever a killed run logged after S goes (S itself is in the checkpoint's past);
        # a start from 0 purges from step 1, so the rows of a run killed before its first checkpoint go too
        self.writer = SummaryWriter(str(self.log_dir), purge_step=state.samples_seen + 1)

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            if name not in SKIP and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{self.stage}/{name}", value, state.samples_seen)
        self.writer.flush()

    def on_checkpoint(self, state: TrainState, path: Path) -> None:
        if self.picture is not None:
            self.writer.add_image(f"{self.stage}/grid", self.picture(path), state.samples_seen)
            self.writer.flush()

    def on_end(self, state: TrainState) -> None:
        if self.writer is not None:
            self.writer.close()
