"""Seeds derived from (seed, rank, samples_seen), so a resumed run is the same run."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, rank: int, samples_seen: int) -> int:
    """A 63-bit seed, decorrelated across its inputs."""
    digest = hashlib.sha256(f"{seed}/{rank}/{samples_seen}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
