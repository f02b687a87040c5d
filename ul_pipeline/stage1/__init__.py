"""Stage 1 (docs/concepts/method.md, Stage 1 and ablations): the model and its variants (priors, decoders, encoder noise)."""

from ul_pipeline.stage1.decoders import DiffusionDecoder, MSEDecoder, decoder_term
from ul_pipeline.stage1.model import Stage1Terms, UnifiedLatents
from ul_pipeline.stage1.posterior import FixedNoise, LatentPosterior, LearnedNoise
from ul_pipeline.stage1.priors import DiffusionPrior, LatentTerms, NormalPrior, gaussian_kl_nats, prior_terms

__all__ = ["DiffusionDecoder", "DiffusionPrior", "FixedNoise", "LatentPosterior", "LatentTerms", "LearnedNoise",
           "MSEDecoder", "NormalPrior", "Stage1Terms", "UnifiedLatents", "decoder_term", "gaussian_kl_nats",
           "prior_terms"]
