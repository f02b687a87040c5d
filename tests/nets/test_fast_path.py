"""The opt-in fast path (compute.fast_transformer): off, the reference bit for bit; on, the same math
and the same state dicts, within bf16 rounding."""

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ul_pipeline.nets import layers
from ul_pipeline.nets.fast import set_fast_transformer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from make_vit_fixtures import inputs, randomize, reference_nets, run, stats  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vit_reference.pt"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small networks: one thread


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURE, weights_only=True)


def nets(fast: bool) -> dict[str, torch.nn.Module]:
    return {name: set_fast_transformer(randomize(net), fast) for name, net in reference_nets().items()}


# Tolerances relative to each quantity's magnitude, not to its elements: the fixture was written on
# one machine, and CPU kernels of the same kind of machine may order sums differently (a bf16 output
# element near zero moved by 0.0024, 28% of itself, on another machine). fp32 agrees to ~1e-7 of the
# norm; bf16 autocast to ~1e-3. A changed function (tanh GELU made exact, one weight scaled by 1%)
# moves fp32 by >= 1e-4 of the norm, so the fp32 bound 1e-5 still catches it (tests below).
REL_TOL = {"fp32": 1e-5, "bf16": 2e-2}


def fingerprint_mismatches(net: torch.nn.Module, ref: dict, name: str, change=lambda net: None) -> list[str]:
    """What differs between `net` (freshly built) and the committed fingerprint `ref`, beyond rounding.

    Initial weights: (sum, sum of squares) of each tensor, relative to sqrt(numel * sum of squares)
    (the largest the sum can be) and to the sum of squares. Outputs: the norm of the difference
    relative to the reference's norm. Gradients: the same bound as initial weights, per parameter.
    `change(net)` runs after the weights are randomised (the tests' deliberate change of the math).
    """
    def off(stat: torch.Tensor, stat_ref: torch.Tensor, numel: int, rtol: float) -> bool:
        scale_sum = (numel * stat_ref[1].clamp_min(0)).sqrt() + 1e-30
        return bool((stat[0] - stat_ref[0]).abs() > rtol * scale_sum
                    or (stat[1] - stat_ref[1]).abs() > rtol * stat_ref[1].abs() + 1e-30)

    found = []
    state = net.state_dict()
    if state.keys() != ref["init"].keys():
        return [f"parameter names differ: {sorted(set(state) ^ set(ref['init']))}"]
    found += [f"init {k}" for k, v in state.items() if off(stats(v), ref["init"][k], v.numel(), 1e-9)]
    randomize(net)
    change(net)
    sizes = {k: p.numel() for k, p in net.named_parameters()}
    for precision, rtol in REL_TOL.items():
        out, grads = run(net, inputs(name), precision)
        out_ref = ref[precision]["out"]
        rel = ((out - out_ref).norm() / out_ref.norm()).item()
        if rel > rtol:
            found.append(f"{precision} output: relative difference {rel:.2e} > {rtol:.0e}")
        found += [f"{precision} gradient {k}" for k in grads if off(grads[k], ref[precision]["grads"][k], sizes[k], rtol)]
    return found


@pytest.mark.parametrize("name", ["prior", "base"])
def test_switch_off_computes_the_committed_reference(reference, name):
    """Initial weights (what initialisation draws), outputs and gradients as the code before the fast path."""
    assert fingerprint_mismatches(reference_nets()[name], reference[name], name) == []


@pytest.mark.parametrize("change", ["exact_gelu", "scaled_weight"])
@pytest.mark.parametrize("name", ["prior", "base"])
def test_a_changed_function_fails_the_committed_reference(reference, name, change):
    """The tolerances above still see the math change: the tanh GELU made exact, or one weight scaled by 1%."""
    def exact_gelu(net):
        for module in net.modules():
            if isinstance(module, torch.nn.GELU):
                module.approximate = "none"

    def scaled_weight(net):
        with torch.no_grad():
            next(p for n, p in net.named_parameters() if n.endswith("qkv.weight")).mul_(1.01)

    changes = {"exact_gelu": exact_gelu, "scaled_weight": scaled_weight}
    found = fingerprint_mismatches(reference_nets()[name], reference[name], name, changes[change])
    assert any(m.startswith("fp32") for m in found), found


def test_switch_off_never_calls_the_fast_attention(monkeypatch):
    """Off (and on, then off again) the attention is the reference SDPA call, also in bf16 training."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the fast path ran with the switch off")
    monkeypatch.setattr(layers, "attention_fast", forbidden)
    for name, net in nets(False).items():
        run(net, inputs(name), "bf16")
        run(set_fast_transformer(set_fast_transformer(net, True), False), inputs(name), "bf16")


@pytest.mark.parametrize("name", ["prior", "base"])
def test_fast_path_is_the_same_math(name):
    """fp32: identical outputs and gradients. bf16 training: the fp32 attention kernel, and outputs and
    gradients no further from the fp32 reference than the reference bf16 path is (within bf16 rounding)."""
    ref_net, fast_net = nets(False)[name], nets(True)[name]
    ref32, fast32 = run(ref_net, inputs(name), "fp32"), run(fast_net, inputs(name), "fp32")
    assert torch.equal(ref32[0], fast32[0])
    assert all(torch.equal(ref32[1][k], fast32[1][k]) for k in ref32[1])

    kernel_dtypes = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        kernel_dtypes.append(q.dtype)
        return sdpa(q, k, v, **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(layers.F, "scaled_dot_product_attention", recording)
        fast16 = run(fast_net, inputs(name), "bf16")
    assert kernel_dtypes and set(kernel_dtypes) == {torch.float32}
    ref16 = run(ref_net, inputs(name), "bf16")
    scale = ref32[0].abs().max()
    assert scale > 0.1  # randomised weights: a non-trivial output
    ref_err = (ref16[0] - ref32[0]).abs().max()
    fast_err = (fast16[0] - ref32[0]).abs().max()
    assert fast_err <= 2 * ref_err + 1e-3 * scale
    assert fast_err < 2e-2 * scale
    for k, g32 in ref32[1].items():
        assert (fast16[1][k] - g32).abs().max() <= 2 * (ref16[1][k] - g32).abs().max() + 1e-2 * g32.abs().max()


def test_fast_attention_without_gradients_is_the_reference_call():
    """Sampling (no gradients) keeps the bf16 kernel: there the fp32 one is no faster."""
    for name, net in nets(True).items():
        ref = nets(False)[name].eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(net.eval()(*inputs(name)), ref(*inputs(name)))


def test_state_dicts_interchange():
    """The switch adds, removes and reshapes nothing: checkpoints load in both directions."""
    for name in ("prior", "base"):
        ref, fast = nets(False)[name], nets(True)[name]
        sd_ref, sd_fast = ref.state_dict(), fast.state_dict()
        assert [(k, v.shape) for k, v in sd_ref.items()] == [(k, v.shape) for k, v in sd_fast.items()]
        other = randomize(copy.deepcopy(ref), seed=7)
        fast.load_state_dict(other.state_dict())
        ref.load_state_dict(fast.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), other.state_dict().values()))
