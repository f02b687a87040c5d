"""What a training batch is, and the one interface of its sources: in memory (batches.py) or streamed (streamed.py).

A batch is a tuple of tensors, this rank's share of one global batch along the first axis, named
by its source's `fields`. Each stage takes its fields from one definition, whichever source feeds
it: Stage 1 `ul_pipeline.data.loader.IMAGE_FIELDS` (uint8 images), Stage 2
`ul_pipeline.latents.dataset.sample_arrays` (z_clean, labels, then z_clean_hflip, z_logvar and any
conditioning the store holds). A source is called with the global sample position to start from and
yields batches forever; it says what of its position goes into a checkpoint (`position`) and
refuses a resume it cannot continue exactly (`check_position`).
"""

from __future__ import annotations

from typing import Iterator, Optional

from torch import Tensor


class BatchSource:
    """Infinite batches from a global sample position; see the module docstring."""

    kind = "batch_source"
    fields: tuple[str, ...] = ()

    def __call__(self, samples_seen: int = 0) -> Iterator[tuple[Tensor, ...]]:
        raise NotImplementedError

    def named(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """The batch's tensors by field name."""
        return dict(zip(self.fields, batch))

    def position(self, samples_seen: int) -> dict:
        """What the checkpoint keeps of this source's position after `samples_seen` samples (key `loader`)."""
        return {"source": self.kind, "samples_seen": int(samples_seen)}

    def check_position(self, saved: Optional[dict], where: str) -> None:
        """Raise when the position `saved` in checkpoint `where` cannot be continued exactly (here: never)."""
