"""Stage 2: base models trained on frozen, cached latents (docs/concepts/method.md, Stage 2).

`model.py` holds the class-conditional `BaseModel` (the interface: `loss_terms`, `sample_z0`) and
`Stage2Terms`; `frame_conditioned.py` continues a clip from context latent frames; `build.py` picks
the configured one.
"""

from ul_pipeline.stage2.build import build_stage2_model
from ul_pipeline.stage2.frame_conditioned import FrameConditionedBaseModel, context_latent_frames
from ul_pipeline.stage2.model import BaseModel, Stage2Terms

__all__ = ["BaseModel", "FrameConditionedBaseModel", "Stage2Terms", "build_stage2_model", "context_latent_frames"]
