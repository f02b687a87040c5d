"""Evaluation: everything that turns checkpoints into numbers, one module per concern.

- `metrics.py`: units (bits/pixel, bits/image) and pixel metrics (PSNR, uint8 conversions);
- `image.py`: the image evaluation (bits, reconstructions, samples, rFID/gFID/KID, grids);
- `video.py`: the video evaluation (per-frame PSNR, frame-FID, FVD, GIFs);
- `fid.py`: the Inception feature network, Fréchet distance and KID; `fid_reference.py` caches the
  real images' features; `fvd.py` and `i3d.py`: the Fréchet Video Distance and its I3D detector;
- `quality.py`: feature-space metrics of one evaluation (rFID, cross-FID, gFID, KID +- SE);
- `statistics.py`: KID with its standard error, paired bootstrap intervals of KID and FID differences;
- `agreement.py`: text-image agreement (retrieval of each image's caption by our own dual encoder,
  `agreement_model.py`, trained on the train split), with its ceiling and floors;
- `history.py`: the metrics history (one Parquet row per evaluation);
- `study.py`: a sweep's table and rate-distortion picture; `results.py`: committed point results
  that outlive a machine; `comparison.py`: the latent families compared on them.

This package imports nothing at import time, so lower layers (Stage 1 uses `metrics`) never pull
in the evaluation code.
"""
