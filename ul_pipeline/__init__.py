"""ul_pipeline: Unified Latents (Heek et al., arXiv 2602.17270) as a plain PyTorch library.

Never imports dagster. See docs/ (getting-started.md, concepts/architecture.md) for the lifecycle and `python -m ul_pipeline --help`.
"""

__version__ = "0.1.0"
