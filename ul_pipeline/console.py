"""Console feedback for the command line: progress bars for long steps (shards, encoding, sampling)."""

from __future__ import annotations


def progress_bar(label: str):
    """A callback update(done, total) that draws a tqdm bar named `label` on stderr, closed at the end."""
    from tqdm.auto import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, dynamic_ncols=True)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update
