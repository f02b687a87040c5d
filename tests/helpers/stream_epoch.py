"""Under torchrun: the sample indices this rank's streamed batches hold for two epochs, per stage, as JSON.

Usage: stream_epoch.py OUT_DIR SHARDS_URL STORE_URL. Each rank builds the stages' batch sources as
training does (data.in_memory=false, compute.workers=2, global batch 32; ranks from the torchrun
environment) and writes OUT_DIR/rank<R>.json: {stage: [[indices of step 0], [step 1], ...]}.
"""

import json
import sys
from pathlib import Path

from ul_pipeline import distributed
from ul_pipeline.config import load_config
from ul_pipeline.latents.store import open_store
from ul_pipeline.stage1.batches import stage1_batches
from ul_pipeline.stage2.batches import stage2_batches
from tests.synthetic import image_index, latent_index

out, shards, store = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = load_config("smoke", ["data.in_memory=false", "compute.workers=2", "data.shuffle_buffer=60",
                            "stage1.train.batch_size=32", "stage2.train.batch_size=32"])
seen = {}
for stage, source, index in (("stage1", stage1_batches(cfg, shards), image_index),
                             ("stage2", stage2_batches(cfg, open_store(store)), latent_index)):
    it = source(0)
    seen[stage] = [index(next(it)[0]) for _ in range(20)]  # 320 samples, 32 per global step: two epochs
    del it
(out / f"rank{distributed.world().rank}.json").write_text(json.dumps(seen))
