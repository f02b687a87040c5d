"""Metadata a person looks at: scalar metrics, the resolved config, curves and image grids embedded as Markdown."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from dagster import MetadataValue
from omegaconf import DictConfig
from PIL import Image

from ul_pipeline.config import to_yaml

EMBED_MAX_SIDE = 768  # pixels: embedded pictures are downscaled so the event log stays small
EMBED_MIN_SIDE = 384  # pixels: tiny grids (32x32 images) are enlarged, pixel for pixel, to be seen


def floats(values: Mapping[str, Any], keys: Iterable[str]) -> dict[str, MetadataValue]:
    """The finite numbers among `keys` as float metadata (Dagster plots them over materializations)."""
    out = {}
    for k in keys:
        v = values.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = MetadataValue.float(float(v))
    return out


def config_md(cfg: DictConfig) -> MetadataValue:
    """The resolved config as a YAML code block."""
    return MetadataValue.md(f"```yaml\n{to_yaml(cfg)}```")


def image_md(path: str | Path, title: str) -> MetadataValue:
    """A PNG embedded as a base64 data URI (large ones downscaled, tiny ones enlarged), with its path underneath."""
    with Image.open(path) as img:
        img = img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy()
    if max(img.size) > EMBED_MAX_SIDE:
        img.thumbnail((EMBED_MAX_SIDE, EMBED_MAX_SIDE), Image.Resampling.LANCZOS)
    elif max(img.size) < EMBED_MIN_SIDE:
        factor = -(-EMBED_MIN_SIDE // max(img.size))
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{data})\n\n`{path}`")


def gif_md(path: str | Path, title: str) -> MetadataValue:
    """An animated GIF (video samples, reconstructions) embedded as a base64 data URI, with its path."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return MetadataValue.md(f"**{title}**\n\n![{title}](data:image/gif;base64,{data})\n\n`{path}`")


def training_curves_png(history: list[dict[str, float]], path: str | Path, title: str) -> Path:
    """Loss terms (nats) and bits/pixel against samples seen, as one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = [h["samples_seen"] for h in history]
    nats = [k for k in ("loss_nats", "latent_nats", "decoder_nats", "elbo_diffusion_nats") if k in history[0]]
    panels = [("nats per example", nats)]
    if "bits_per_pixel" in history[0]:
        panels.append(("bits/pixel", ["bits_per_pixel"]))
    fig = Figure(figsize=(5 * len(panels), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (ylabel, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for k in keys:
            ax.plot(x, [h.get(k, math.nan) for h in history], label=k, marker="." if len(x) < 30 else None)
        ax.set_xlabel("samples seen")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def metrics_table_md(result: Mapping[str, Any]) -> MetadataValue:
    """Scalar results as a two-column Markdown table."""
    rows = [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in result.items() if isinstance(v, (int, float, str)) and not str(v).startswith("/")]
    return MetadataValue.md("| metric | value |\n|---|---|\n" + "\n".join(rows))


def path_md(url: str | Path) -> MetadataValue:
    return MetadataValue.path(str(url))
