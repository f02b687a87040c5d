"""An experiment's artifacts and whose they are: `latent_store_of: X` means shards, Stage 1 and latents are X's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dagster import Failure
from omegaconf import DictConfig

from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.config import to_dict
from ul_pipeline.sweeps import data_hash, split_point_key

# the sections that produced the reused artifacts: a reusing experiment must state them as they were
REUSED_SECTIONS = ("data", "stage1", "encode")


@dataclass(frozen=True)
class ExperimentArtifacts:
    """Paths of one experiment (a partition key); `owner` is the experiment whose shards/Stage 1/latents it uses."""

    experiment: str
    cfg: DictConfig
    owner: str
    storage: StorageResource

    @property
    def reused(self) -> bool:
        return self.owner != self.experiment

    @property
    def storage_options(self) -> Optional[dict]:
        return self.storage.storage_options()

    @property
    def shards_url(self) -> str:
        """The owner's shards; a sweep point's are its sweep's set for its `data` section, shared by equal points."""
        sweep, label = split_point_key(self.owner)
        if label is None:
            return self.storage.shards_url(self.owner)
        return self.storage.sweep_shards_url(sweep, data_hash(self.cfg))  # cfg.data is the owner's (resolve)

    @property
    def latent_store_url(self) -> str:
        return self.storage.latent_store_url(self.owner)

    @property
    def stage1_dir(self) -> Path:
        return self.storage.run_dir(self.owner, "stage1")

    @property
    def stage1_checkpoint(self) -> Path:
        return self.stage1_dir / "last.pt"

    @property
    def stage2_dir(self) -> Path:
        return self.storage.run_dir(self.experiment, "stage2")

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
    return ExperimentArtifacts(experiment, cfg, owner, storage)


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
