"""Diffusion math as small pure functions: schedules, weightings, parametrisation, losses, samplers."""

from ul_pipeline.diffusion.losses import diffusion_term_nats, expand_like, sum_over_dims, terminal_kl_nats
from ul_pipeline.diffusion.parametrization import eps_from_v, v_from_x, v_target, x_from_v
from ul_pipeline.diffusion.samplers import ancestral_sample, ancestral_step, classifier_free_guidance
from ul_pipeline.diffusion.schedules import Schedule, alpha_sigma, cosine_logsnr, cosine_neg_dlogsnr_dt, resolution_shift
from ul_pipeline.diffusion.time_sampling import sample_time
from ul_pipeline.diffusion.weighting import elbo_weight, sigmoid_weight
