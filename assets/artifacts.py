"""An experiment's artifacts and whose they are: `latent_store_of: X` means shards, Stage 1 and latents are X's."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional

from dagster import Failure
from omegaconf import DictConfig

from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.config import to_dict
from ul_pipeline.latents.store import LatentStoreError, open_store
from ul_pipeline.lifecycle import stage1_run, stage2_run
from ul_pipeline.train.checkpoint import file_sha256
from ul_pipeline.versioning import RunChoice
from ul_pipeline.config.sweeps import data_hash, split_point_key

# the sections that produced the reused artifacts: a reusing experiment must state them as they were
REUSED_SECTIONS = ("data", "stage1", "encode")


@dataclass(frozen=True)
class ExperimentArtifacts:
    """Paths of one experiment (a partition key); `owner` is the experiment whose shards/Stage 1/latents it uses."""

    experiment: str
    cfg: DictConfig
    owner: str
    storage: StorageResource
    owner_cfg: Optional[DictConfig] = None  # the owner's config (its stage1 section made the reused checkpoint)

    @property
    def reused(self) -> bool:
        return self.owner != self.experiment

    @property
    def storage_options(self) -> Optional[dict]:
        return self.storage.storage_options()

    @property
    def shards_url(self) -> str:
        """The owner's shards for its `data` section; a sweep point's are its sweep's, shared by equal points."""
        name, _ = split_point_key(self.owner)  # a plain experiment's own name, or the point's sweep
        return self.storage.shards_url(name, data_hash(self.cfg))  # cfg.data is the owner's (resolve)

    @cached_property
    def encoder_sha256(self) -> str:
        """sha256 of the Stage-1 checkpoint in use (the latent store's key); a clear failure when absent."""
        if not self.stage1_checkpoint.exists():
            raise self.missing("Stage-1 checkpoint", f"{self.stage1_checkpoint} does not exist", "ul_autoencoder")
        return file_sha256(self.stage1_checkpoint)

    @property
    def latent_store_url(self) -> str:
        """The owner's store of the Stage-1 checkpoint in use: a retrained encoder gets a new store."""
        return self.storage.latent_store_url(self.owner, self.encoder_sha256)

    @cached_property
    def stage1_choice(self) -> RunChoice:
        """The owner's Stage-1 run for its config and the current code (ul_pipeline.versioning)."""
        base = self.storage.run_dir(self.owner, "stage1")
        try:
            return stage1_run(self.owner_cfg or self.cfg, self.shards_url, base, storage_options=self.storage_options)
        except FileNotFoundError:  # no shards yet: nothing trained either
            return RunChoice(base, "new")

    @property
    def stage1_dir(self) -> Path:
        return self.stage1_choice.run_dir

    @property
    def stage1_checkpoint(self) -> Path:
        return self.stage1_dir / "last.pt"

    @cached_property
    def stage2_choice(self) -> RunChoice:
        """This experiment's Stage-2 run for its config, the current code and the store of the current encoder."""
        base = self.storage.run_dir(self.experiment, "stage2")
        try:
            store = open_store(self.latent_store_url, storage_options=self.storage_options, allow_incomplete=True)
        except (Failure, LatentStoreError):
            return RunChoice(base, "new")
        return stage2_run(self.cfg, store, base)

    @property
    def stage2_dir(self) -> Path:
        return self.stage2_choice.run_dir

    @property
    def base_checkpoint(self) -> Path:
        return self.stage2_dir / "last.pt"

    @property
    def evaluation_dir(self) -> Path:
        return self.storage.run_dir(self.experiment, "evaluation")

    def reuse_note(self, what: str, where: object) -> str:
        return (f"reused from {self.owner}: {self.experiment} has latent_store_of: {self.owner}, so its {what} "
                f"is {self.owner}'s ({where})")

    def missing(self, what: str, where: str, asset: str) -> Failure:
        """A clear failure for a reused artifact that is absent or incomplete."""
        return Failure(description=f"{self.experiment} reuses {self.owner}'s {what} (latent_store_of: {self.owner}), "
                                   f"but {where}. Materialize {asset} for partition '{self.owner}' first.",
                       metadata={"reused_from": self.owner})


def resolve(experiment: str, storage: StorageResource, experiment_config: ExperimentConfigResource,
            compute: ComputeResource) -> ExperimentArtifacts:
    """Load the experiment's config and follow `latent_store_of` to the experiment that owns the latents."""
    cfg = experiment_config.load(experiment, compute.overrides())
    owner, owner_cfg, chain = experiment, cfg, [experiment]
    while owner_cfg.latent_store_of:
        owner = owner_cfg.latent_store_of
        if owner in chain:
            raise ValueError(f"latent_store_of forms a cycle: {' -> '.join([*chain, owner])}")
        chain.append(owner)
        owner_cfg = experiment_config.load(owner, compute.overrides())
    if owner != experiment:
        ours, theirs = to_dict(cfg), to_dict(owner_cfg)
        diffs = [d for section in REUSED_SECTIONS
                 for d in _differences(theirs[section], ours[section], f"{section}.", owner, experiment)]
        if diffs:
            raise ValueError(f"experiment {experiment} reuses {owner}'s shards, Stage 1 and latent store "
                             f"(latent_store_of: {' -> '.join(chain[1:])}), so its {', '.join(REUSED_SECTIONS)} "
                             f"settings must be {owner}'s; they differ:\n  " + "\n  ".join(diffs))
        ctx, owner_ctx = int(cfg.stage2.get("context_frames", 0)), int(owner_cfg.stage2.get("context_frames", 0))
        if ctx and ctx != owner_ctx:  # the store's z_clean_context is the owner's; 0 (no context) reads it as it is
            raise ValueError(f"experiment {experiment} reuses {owner}'s latent store (latent_store_of), whose "
                             f"z_clean_context is encoded for {owner}'s stage2.context_frames={owner_ctx}, and "
                             f"{experiment} has {ctx}: set stage2.context_frames to {owner_ctx} or 0, or drop "
                             "latent_store_of to encode its own store")
    return ExperimentArtifacts(experiment, cfg, owner, storage, owner_cfg)


def _differences(a: dict, b: dict, prefix: str, name_a: str, name_b: str) -> list[str]:
    """Dotted keys whose values differ between two resolved config sections."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{k}.", name_a, name_b)
        elif va != vb:
            out.append(f"{prefix}{k}: {name_a} has {va!r}, {name_b} has {vb!r}")
    return out
