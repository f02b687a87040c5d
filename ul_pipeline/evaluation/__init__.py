"""Evaluation: everything that turns checkpoints into numbers, one module per concern.

- `metrics.py`: units (bits/pixel, bits/image) and pixel metrics (PSNR, uint8 conversions);
- `image.py`: the image evaluation (bits, reconstructions, samples, rFID/gFID/KID, grids);
- `video.py`: the video evaluation (per-frame PSNR, frame-FID, FVD, GIFs);
- `fid.py`: the Inception feature network, Fréchet distance and KID; `fid_reference.py` caches the
  real images' features; `fvd.py` and `i3d.py`: the Fréchet Video Distance and its I3D detector;
- `history.py`: the metrics history (one Parquet row per evaluation);
- `study.py`: a sweep's table and rate-distortion picture.

This package imports nothing at import time, so lower layers (Stage 1 uses `metrics`) never pull
in the evaluation code.
"""
