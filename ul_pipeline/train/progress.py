"""Progress of a training run on a terminal: a tqdm bar in samples seen, and the data-wait text every front shows."""

from __future__ import annotations

from ul_pipeline.train.loop import Callback


def data_wait_text(metrics: dict[str, float]) -> str:
    """'data wait 3.1 ms/step (4% of 78 ms)': a loader that cannot keep up shows here."""
    wait, step = metrics["data_wait_s"], metrics["data_wait_s"] + metrics["compute_s"]
    return f"data wait {1e3 * wait:.1f} ms/step ({100 * wait / max(step, 1e-12):.0f}% of {1e3 * step:.0f} ms)"


class ProgressBar(Callback):
    """A tqdm bar in samples seen, with the latest loss and the share of each step spent waiting for data."""

    def __init__(self, desc: str = "train"):
        self.desc, self.bar, self.wait = desc, None, ""

    def on_log(self, state, metrics):
        if "data_wait_s" in metrics:
            self.wait = f"{100 * metrics['data_wait_s'] / max(metrics['data_wait_s'] + metrics['compute_s'], 1e-12):.0f}%"

    def on_start(self, state, total_samples):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_samples, initial=state.samples_seen, desc=self.desc, unit="sample",
                        dynamic_ncols=True, mininterval=1.0)

    def on_step(self, state, loss):
        self.bar.n = state.samples_seen
        self.bar.set_postfix(loss=f"{loss:.4g}", **({"data_wait": self.wait} if self.wait else {}), refresh=False)
        self.bar.update(0)

    def on_end(self, state):
        self.bar.close()
