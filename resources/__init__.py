"""Dagster resources: the environment a run needs (storage, compute, where configs live), never science."""

from resources.compute import ComputeResource
from resources.experiment_config import ExperimentConfigResource
from resources.storage import StorageResource

__all__ = ["ComputeResource", "ExperimentConfigResource", "StorageResource"]
