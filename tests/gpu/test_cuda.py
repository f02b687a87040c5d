"""CUDA paths the CPU suite cannot reach: autocast, SDPA's fused kernels, pinned copies, NCCL DDP, and
checkpoints moving between CPU and CUDA. Every test is marked `gpu` (deselected by default; run with
`pytest -m gpu`, or scripts/gpu_check.sh) and skips itself without a CUDA device."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _images(source, n: int = 128) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.image for s in source])[:n])  # (n, 1, 32, 32) uint8


def test_autocast_on_cuda_runs_matmuls_in_bf16_and_keeps_weights_fp32(tmp_path, fmnist_400_source):
    from ul_pipeline.config import load_config
    from ul_pipeline.nets.presets import build_base_model
    from ul_pipeline.stage1.training import train_stage1

    net = build_base_model("tiny", (4, 8, 8), 10).cuda()
    z, logsnr, labels = torch.randn(2, 4, 8, 8, device="cuda"), torch.zeros(2, device="cuda"), torch.zeros(2, dtype=torch.long, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net(z, logsnr, labels)
    assert out.dtype == torch.bfloat16
    cfg = load_config("smoke", ["stage1.train.total_samples=64", "compute.device=cuda", "compute.precision=bf16"])
    result = train_stage1(cfg, _images(fmnist_400_source), tmp_path)
    assert result.state.samples_seen == 64
    assert all(p.dtype == torch.float32 and p.is_cuda and torch.isfinite(p).all() for p in result.model.parameters())


@pytest.mark.parametrize("backend", ["FLASH_ATTENTION", "EFFICIENT_ATTENTION"])
def test_the_networks_attention_runs_on_sdpas_fused_kernels_and_matches_the_math_kernel(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ul_pipeline.nets.presets import build_base_model

    torch.manual_seed(0)
    net = build_base_model("small", (4, 8, 8), 10).cuda()  # heads of 32 channels, 64 and 16 tokens
    z = torch.randn(8, 4, 8, 8, device="cuda")
    logsnr, labels = torch.randn(8, device="cuda"), torch.arange(8, device="cuda")
    outs = {}
    for name in (backend, "MATH"):
        net.zero_grad(set_to_none=True)
        with sdpa_kernel([getattr(SDPBackend, name)]), torch.autocast("cuda", dtype=torch.bfloat16):
            out = net(z, logsnr, labels)  # raises when the kernel cannot take these shapes
        out.float().square().mean().backward()
        outs[name] = (out.float(), next(net.parameters()).grad.clone())
    (fused, g_fused), (math_, g_math) = outs[backend], outs["MATH"]
    assert (fused - math_).abs().max() <= 0.05 * math_.abs().max()  # bf16 rounding, different summation
    assert (g_fused - g_math).abs().max() <= 0.05 * g_math.abs().max()


def test_pinned_host_batches_copy_to_the_device_unchanged():
    x = torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8)
    pinned = x.pin_memory()
    assert pinned.is_pinned()
    y = pinned.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    assert torch.equal(y.cpu(), x)


def test_checkpoints_move_between_cpu_and_cuda_and_resume_either_way(tmp_path, fmnist_400_source):
    from ul_pipeline.config import load_config
    from ul_pipeline.stage1.training import load_stage1, train_stage1

    images = _images(fmnist_400_source)
    common = ["stage1.train.checkpoint_every_samples=32", "compute.precision=fp32"]
    for first, second in (("cpu", "cuda"), ("cuda", "cpu")):
        run = tmp_path / f"{first}_then_{second}"
        half = load_config("smoke", ["stage1.train.total_samples=32", f"compute.device={first}", *common])
        train_stage1(half, images, run)
        full = load_config("smoke", ["stage1.train.total_samples=64", f"compute.device={second}", *common])
        result = train_stage1(full, images, run)  # resumes the other device's checkpoint
        assert result.state.samples_seen == 64
        for device in ("cpu", "cuda"):
            model, _, meta = load_stage1(run / "last.pt", device=device)
            assert next(model.parameters()).device.type == device and meta["samples_seen"] == 64


def _ddp_worker(rank: int, world: int, port: int, results) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    torch.manual_seed(0)
    net = torch.nn.Linear(16, 4).cuda()
    ddp = DistributedDataParallel(net, device_ids=[rank])
    x = torch.randn(8, 16, device="cuda")[rank * 4:(rank + 1) * 4]  # this rank's half of one batch
    ddp(x).square().mean().backward()
    results[rank] = net.weight.grad.cpu()
    dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_nccl_ddp_averages_two_half_batch_gradients_into_the_full_batch_gradient():
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, results), nprocs=2, join=True)
    torch.manual_seed(0)  # the workers' weights and batch, on one device
    net = torch.nn.Linear(16, 4).cuda()
    x = torch.randn(8, 16, device="cuda")
    net(x).square().mean().backward()
    for rank in (0, 1):
        assert torch.allclose(results[rank], net.weight.grad.cpu(), atol=1e-6)
