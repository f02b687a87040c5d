"""Where artifacts live: a root URL for shards, latent stores and the metrics history, a local runs folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field

from ul_pipeline.data.storage import (DEFAULT_ROOT, ROOT_ENV, RUNS_ENV, artifact_root, is_remote_url, runs_folder,
                                      s3_options_from_env)
from ul_pipeline.versioning import short_hash

class StorageResource(ConfigurableResource):
    """Artifact root (local folder or s3://bucket/prefix) and the local folder for checkpoints and evaluations.

    Layout: `{root}/{experiment}/shards-{data_hash}` (one set per data section, so a changed one never
    overwrites the old), `{root}/{experiment}/latents-{encoder short hash}.zarr`,
    `{root}/metrics_history/` (one Parquet object per evaluation), `{runs_dir}/{experiment}/{stage1,stage2,evaluation}`; a sweep's
    points share `{root}/{sweep}/shards-{data_hash}` and its study lives in `{runs_dir}/{sweep}/study`.
    S3 credentials never enter the config: they come from AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY (and UL_S3_ENDPOINT_URL for a non-AWS endpoint) at run time.
    """

    root: Optional[str] = Field(
        default=None, description=f"artifact root URL; None = ${ROOT_ENV}, else ./{DEFAULT_ROOT}")
    runs_dir: Optional[str] = Field(
        default=None, description=f"local folder for checkpoints and evaluation outputs; None = ${RUNS_ENV}, "
                                  f"else {{root}}/runs for a local root, else ./{DEFAULT_ROOT}/runs")
    s3_endpoint_url: Optional[str] = Field(
        default=None, description="S3 endpoint for a non-AWS server (MinIO, rclone); None = $UL_S3_ENDPOINT_URL")

    def root_url(self) -> str:
        """The absolute root: a local path or a remote URL, without a trailing slash."""
        return artifact_root(self.root)

    def is_remote(self) -> bool:
        return is_remote_url(self.root_url())

    def runs_path(self) -> Path:
        """The local runs folder (absolute)."""
        return runs_folder(self.runs_dir, self.root)

    def storage_options(self) -> Optional[dict]:
        """fsspec options for the root (None for a local root or the default AWS credential chain)."""
        if not self.is_remote():
            return None
        return s3_options_from_env(self.s3_endpoint_url)

    def url(self, *parts: str) -> str:
        return "/".join([self.root_url(), *(p.strip("/") for p in parts)])

    def shards_url(self, name: str, data_hash: str) -> str:
        """`{root}/{name}/shards-{data_hash}`: the shards of experiment `name`, or those shared by the points
        of sweep `name`, whose data sections hash to `data_hash` (ul_pipeline.config.sweeps.data_hash)."""
        return self.url(name, f"shards-{data_hash}")

    def latent_store_url(self, experiment: str, encoder_sha256: str) -> str:
        """`{root}/{experiment}/latents-{short encoder hash}.zarr`: one store per Stage-1 checkpoint."""
        return self.url(experiment, f"latents-{short_hash(encoder_sha256)}.zarr")

    def history_url(self) -> str:
        return self.url("metrics_history")  # a folder: one Parquet object per evaluation

    def run_dir(self, experiment: str, stage: str) -> Path:
        """`{runs_dir}/{experiment}/{stage}` (stage: stage1 | stage2 | evaluation)."""
        return self.runs_path() / experiment / stage
