"""A sweep's points run at once, as a UI backfill runs them: shared artifacts are made once, never read half-made.

Real processes, each materializing one partition's whole chain (`dg.materialize` in its own Python),
against one storage root and one metrics history.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SWEEP = """\
data: {limit: 240, val_size: 40, shard_size: 50}
stage1:
  preset: tiny
  train: {batch_size: 16, total_samples: 96, warmup_samples: 16, checkpoint_every_samples: 48, log_every_samples: 16}
stage2:
  preset: tiny
  train: {batch_size: 16, total_samples: 96, warmup_samples: 16, checkpoint_every_samples: 48, log_every_samples: 16}
encode: {block_size: 64, batch_size: 64}
sample: {steps: 4, decoder_steps: 4, batch_size: 32}
eval: {num_samples: 32, grid_size: 16, fid: false}
compute: {precision: fp32}
sweep:
  grid: {stage1.c_lf: [1.3, 3.0]}
  variants:
    normal_prior: {stage1.prior: normal}
    base_seed1: {latent_store_of: "conc:c_lf=1.3", stage1.c_lf: 1.3, stage2.train.seed: 1}
    base_seed2: {latent_store_of: "conc:c_lf=1.3", stage1.c_lf: 1.3, stage2.train.seed: 2}
"""
WORKER = textwrap.dedent("""
    import json, sys
    import dagster as dg
    from assets.data import dataset_shards
    from assets.evaluation import evaluation
    from assets.latents import latent_store
    from assets.stage1 import ul_autoencoder
    from assets.stage2 import base_model
    from resources import ComputeResource, ExperimentConfigResource, StorageResource

    point, root, configs, out = sys.argv[1:5]
    res = {"storage": StorageResource(root=root), "compute": ComputeResource(device="cpu"),
           "experiment_config": ExperimentConfigResource(config_dir=configs)}
    result = dg.materialize([dataset_shards, ul_autoencoder, latent_store, base_model, evaluation],
                            partition_key=point, resources=res, raise_on_error=False)
    meta = {}
    for node in ("dataset_shards", "base_model"):
        for event in result.asset_materializations_for_node(node) if result.success else []:
            meta[node] = {k: getattr(v, "value", v) for k, v in event.metadata.items()
                          if isinstance(getattr(v, "value", v), (str, int, float, bool))}
    errors = [str(e.event_specific_data.error.message) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    json.dump({"success": result.success, "meta": meta, "errors": errors}, open(out, "w"))
""")


def run_at_once(points: list[str], root: Path, configs: Path, tmp: Path) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "UL_LOCK_DIR": str(tmp / "locks"),
           "UL_CONFIG_DIR": str(configs)}  # the partitions come from this config folder
    procs = {p: subprocess.Popen([sys.executable, "-c", WORKER, p, str(root), str(configs), str(tmp / f"{p}.json")],
                                 cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for p in points}
    stderr = {p: proc.communicate(timeout=900)[1] for p, proc in procs.items()}
    out = {}
    for p in points:
        path = tmp / f"{p}.json"
        assert path.exists(), f"{p} left no result:\n{stderr[p][-3000:]}"
        out[p] = json.loads(path.read_text())
        assert out[p]["success"], (p, out[p]["errors"], stderr[p][-3000:])
    return out


@pytest.mark.slow  # ~3 min on 2 cores: five tiny chains, three and then two at once
def test_a_backfill_of_three_points_writes_the_shared_shards_once_and_every_run_finishes(tmp_path):
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "base.yaml", configs / "base.yaml")
    (configs / "experiments" / "conc.yaml").write_text(SWEEP)
    root = tmp_path / "root"

    first = run_at_once(["conc:c_lf=1.3", "conc:c_lf=3.0", "conc:normal_prior"], root, configs, tmp_path)
    statuses = sorted(r["meta"]["dataset_shards"]["status"] for r in first.values())
    assert statuses == ["kept", "kept", "written"]  # one writer; the others waited and kept its set
    (shards,) = [p for p in (root / "conc").iterdir() if p.name.startswith("shards-")]
    manifests = {r["meta"]["dataset_shards"]["manifest_sha256"] for r in first.values()}
    assert len(manifests) == 1  # everyone read the finished set

    # two base models on one latent store at once (the reuse points read c_lf=1.3's store)
    second = run_at_once(["conc:base_seed1", "conc:base_seed2"], root, configs, tmp_path)
    stores = {r["meta"]["base_model"].get("latent_store_url") or r["meta"]["base_model"].get("store") for r in
              second.values()}
    assert len(stores) == 1
    base = {p: root / "runs" / p / "stage2" / "last.pt" for p in second}
    assert all(b.is_file() for b in base.values())
    assert base["conc:base_seed1"].read_bytes() != base["conc:base_seed2"].read_bytes()  # two real runs

    import polars as pl

    history = pl.concat([pl.read_parquet(f) for f in sorted((root / "metrics_history").glob("*.parquet"))],
                        how="diagonal_relaxed")
    assert sorted(history["experiment"].to_list()) == sorted([*first, *second])  # five evaluations, five rows
    assert len(list(shards.iterdir())) > 0
