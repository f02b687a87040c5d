"""Device, precision, data-loader workers and data parallelism, applied to every experiment as `compute.*` overrides."""

from __future__ import annotations

from typing import List, Optional

from dagster import ConfigurableResource
from pydantic import Field

FIELDS = ("device", "precision", "workers", "nproc_per_node", "nnodes", "rdzv_endpoint", "dist_timeout_s",
          "max_restarts", "compile", "tensorboard")


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
    tensorboard: Optional[bool] = Field(default=None, description="TensorBoard event files in each run folder")
    plan_gpu: Optional[str] = Field(
        default=None, description="h100 | h200 | a100 | l40s | cpu: before training, plan the stage on "
                                  "nproc_per_node x nnodes of these (ul-pipeline plan) and record it as metadata")
    launcher: Optional[str] = Field(
        default=None, description="how training and extraction steps run: None (in this process, or local torchrun "
                                  "when nproc_per_node or nnodes > 1) | torchrun | slurm (sbatch from this machine)")
    slurm_partition: Optional[str] = Field(default=None, description="sbatch --partition")
    slurm_time: Optional[str] = Field(default=None, description="sbatch --time, e.g. 2-00:00:00")
    slurm_gpus_per_node: Optional[int] = Field(default=None, description="sbatch --gpus-per-node")
    slurm_sbatch_args: List[str] = Field(default_factory=list, description="more sbatch flags, e.g. --account=lab")
    slurm_rdzv_port: int = Field(default=29400, description="c10d rendezvous port on the job's first node")
    slurm_requeue: bool = Field(default=True, description="requeue after a node failure (resumes from last.pt)")
    slurm_poll_s: float = Field(default=5.0, description="seconds between `scontrol show job` polls")
    slurm_python: Optional[str] = Field(default=None, description="the interpreter on the nodes (default: this one)")
    slurm_entry: str = Field(default="assets.pipes_entry", description="the module every rank runs")

    def slurm_settings(self) -> dict:
        """The slurm_* fields without their prefix (assets.sbatch.SlurmSettings)."""
        return {k[len("slurm_"):]: getattr(self, k) for k in type(self).model_fields if k.startswith("slurm_")}

    def overrides(self) -> list[str]:
        """The set fields as config dotlist overrides, e.g. ['compute.device=cpu']."""
        return [f"compute.{k}={getattr(self, k)}" for k in FIELDS if getattr(self, k) is not None]
