"""Write tests/fixtures/vit_reference.pt: the reference outputs of the ViT prior and base model.

    PYTHONPATH=<checkout> .venv/bin/python scripts/make_vit_fixtures.py [--out tests/fixtures/vit_reference.pt]

Run with the code the fixture should pin (it was made from commit 6a6ef1b, before the opt-in fast path
of compute.fast_transformer existed). For the `tiny` preset's prior and base model on (4, 8, 8)
latents it stores: per-parameter sums of the initial weights built after torch.manual_seed(0) (so a
change in what initialisation draws shows), and, after every weight is set from a second seed, the
training-mode outputs and the sums of the parameter gradients of a fixed batch in fp32 and under bf16 autocast.
tests/nets/test_fast_path.py checks that the reference path (the switch off) still computes these.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

import torch

from ul_pipeline.nets.presets import build_base_model, build_stage1_nets

LATENT = (4, 8, 8)


def reference_nets() -> dict[str, torch.nn.Module]:
    """The tiny prior and base model, each built right after torch.manual_seed(0)."""
    torch.manual_seed(0)
    prior = build_stage1_nets("tiny", (1, 32, 32))[1]
    torch.manual_seed(0)
    base = build_base_model("tiny", LATENT, 10)
    return {"prior": prior, "base": base}


def randomize(net: torch.nn.Module, seed: int = 1, std: float = 0.05) -> torch.nn.Module:
    """Every weight drawn from N(0, std^2) with `seed`, so no output is trivially zero (adaLN-Zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def inputs(name: str, batch: int = 4) -> tuple[torch.Tensor, ...]:
    """A fixed batch: z (B, 4, 8, 8), logsnr (B,) and, for the base model, labels (B,)."""
    g = torch.Generator().manual_seed(2)
    z, logsnr = torch.randn(batch, *LATENT, generator=g), torch.rand(batch, generator=g) * 20 - 10
    labels = torch.randint(0, 10, (batch,), generator=g)
    return (z, logsnr) if name == "prior" else (z, logsnr, labels)


def stats(t: torch.Tensor) -> torch.Tensor:
    """(sum, sum of squares) in float64: a small fingerprint of a tensor."""
    return torch.stack([t.double().sum(), t.double().square().sum()])


def run(net: torch.nn.Module, args: tuple, precision: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(fp32 output, {parameter: stats of its gradient}) of a training-mode forward and backward of sum(out^2)."""
    net.train()
    net.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext():
        out = net(*args)
    out.float().square().sum().backward()
    return out.detach().float(), {k: stats(p.grad) for k, p in net.named_parameters()}


def reference_record() -> dict:
    """What the fixture holds (see the module docstring)."""
    record = {}
    for name, net in reference_nets().items():
        init = {k: stats(v) for k, v in net.state_dict().items()}
        randomize(net)
        record[name] = {"init": init, **{p: dict(zip(("out", "grads"), run(net, inputs(name), p)))
                                         for p in ("fp32", "bf16")}}
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/vit_reference.pt"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.save(reference_record(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
