"""Device, precision and data-loader workers, applied to every experiment as `compute.*` overrides."""

from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field


class ComputeResource(ConfigurableResource):
    """Where the math runs; None keeps the experiment's own `compute.*` value."""

    device: Optional[str] = Field(default=None, description="auto | cpu | cuda | cuda:N")
    precision: Optional[str] = Field(
        default=None, description="auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32) | fp32 | bf16")
    workers: Optional[int] = Field(default=None, description="DataLoader workers")

    def overrides(self) -> list[str]:
        """The set fields as config dotlist overrides, e.g. ['compute.device=cpu']."""
        return [f"compute.{k}={v}" for k, v in
                (("device", self.device), ("precision", self.precision), ("workers", self.workers)) if v is not None]
