"""Device, precision, data-loader workers and data parallelism, applied to every experiment as `compute.*` overrides."""

from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field

FIELDS = ("device", "precision", "workers", "nproc_per_node", "nnodes", "rdzv_endpoint", "dist_timeout_s",
          "max_restarts", "compile")


class ComputeResource(ConfigurableResource):
    """Where the math runs; None keeps the experiment's own `compute.*` value."""

    device: Optional[str] = Field(default=None, description="auto | cpu | cuda | cuda:N")
    precision: Optional[str] = Field(
        default=None, description="auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32) | fp32 | bf16")
    workers: Optional[int] = Field(default=None, description="DataLoader workers")
    nproc_per_node: Optional[int] = Field(
        default=None, description="processes per machine; above 1, training and extraction run under torchrun "
                                  "through Dagster Pipes")
    nnodes: Optional[int] = Field(default=None, description="machines in the torchrun group (Slurm launcher)")
    rdzv_endpoint: Optional[str] = Field(default=None, description="torchrun rendezvous host:port")
    dist_timeout_s: Optional[float] = Field(default=None, description="gloo/NCCL collective timeout (s)")
    max_restarts: Optional[int] = Field(default=None, description="torchrun --max-restarts")
    compile: Optional[bool] = Field(default=None, description="torch.compile the training loss")

    def overrides(self) -> list[str]:
        """The set fields as config dotlist overrides, e.g. ['compute.device=cpu']."""
        return [f"compute.{k}={getattr(self, k)}" for k in FIELDS if getattr(self, k) is not None]
