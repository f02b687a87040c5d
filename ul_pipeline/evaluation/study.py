"""A sweep's study: one row per point (its latest evaluation in the metrics history) and a rate-distortion picture.

The table has the point, its swept values or variant name, bits/pixel and bits/image, PSNR, rFID,
gFID and KID, the wall time (the sum of the stage timings the evaluation row carries, each also a
column), and the evaluation protocol (samples, steps, guidance), so that points are compared on
equal terms. The picture puts bits/pixel on the x axis against PSNR, rFID and gFID.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import polars as pl

from ul_pipeline.data.storage import StorageOptions
from ul_pipeline.evaluation.history import read_history
from ul_pipeline.config.sweeps import Sweep

METRICS = ("bits_per_pixel", "bits_per_image", "psnr", "rfid", "gfid", "kid", "kid_std")
TIME_PARTS = ("stage1_train_seconds", "encode_seconds", "stage2_train_seconds", "eval_seconds")
PROTOCOL = ("num_samples", "steps", "decoder_steps", "guidance")
PANELS = (("psnr", "PSNR (dB), higher is better"), ("rfid", "rFID, lower is better"),
          ("gfid", "gFID, lower is better"))
TEXT_COLUMNS = ("point", "label", "variant", "evaluated_at")
FIXED_COLUMNS = ("point", "label", "variant", *METRICS, *TIME_PARTS, "wall_seconds", *PROTOCOL, "evaluated_at")


class StudyError(ValueError):
    """A point of the sweep has no evaluation in the metrics history; the message names it."""


@dataclass(frozen=True)
class StudyResult:
    table: pl.DataFrame  # one row per point, in sweep order
    parquet: Path
    png: Path


def grid_columns(sweep: Sweep) -> dict[str, str]:
    """Dotted grid key -> its column: the short name (c_lf), or the dotted key where that name is taken."""
    return {k: (s if s not in FIXED_COLUMNS else k) for k, s in sweep.grid_keys.items()}


def study_table(sweep: Sweep, history: pl.DataFrame, history_url: str = "the metrics history",
                current: Optional[dict[str, dict[str, Optional[str]]]] = None) -> pl.DataFrame:
    """One row per point from its latest (last appended) evaluation row; StudyError names points without one.

    `current` (point -> {"stage1_sha256": ..., "base_sha256": ...}): only rows made on those
    checkpoints count, so an evaluation of older weights never stands for the point.
    """
    keys = [p.key for p in sweep.points]
    latest: dict[str, dict[str, Any]] = {}
    if "experiment" in history.columns:
        for row in history.iter_rows(named=True):
            want = (current or {}).get(row["experiment"])
            if row["experiment"] in keys and (want is None or all(row.get(k) == v for k, v in want.items())):
                latest[row["experiment"]] = row
    missing = [k for k in keys if k not in latest]
    if missing:
        on = " made on their current checkpoints" if current else ""
        raise StudyError(f"sweep {sweep.name}: {len(missing)} of {len(keys)} points have no evaluation{on} in "
                         f"{history_url}: {', '.join(missing)}")
    columns = grid_columns(sweep)
    rows = []
    for p in sweep.points:
        ev = latest[p.key]
        parts = {t: _number(ev.get(t)) for t in TIME_PARTS}
        present = [v for v in parts.values() if v is not None]
        rows.append({"point": p.key, "label": p.label, "variant": p.variant,
                     **{col: (None if p.variant else p.overrides.get(k)) for k, col in columns.items()},
                     **{m: _number(ev.get(m)) for m in METRICS}, **parts,
                     "wall_seconds": sum(present) if present else None,
                     **{k: ev.get(k) for k in PROTOCOL}, "evaluated_at": ev.get("evaluated_at")})
    return pl.DataFrame([_series(c, [r[c] for r in rows]) for c in rows[0]])


def study_png(table: pl.DataFrame, path: str | Path, title: str, connect_grid: bool = False) -> Path:
    """Bits/pixel against PSNR, rFID and gFID, one labelled marker per point (variants as squares).

    `connect_grid` joins the grid points in order of bits/pixel (a one-key grid traces a curve).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5 * len(PANELS), 4), layout="constrained")
    FigureCanvasAgg(fig)
    rows = table.to_dicts()
    for i, (metric, ylabel) in enumerate(PANELS):
        ax = fig.add_subplot(1, len(PANELS), i + 1)
        shown = [r for r in rows if _finite(r["bits_per_pixel"]) and _finite(r[metric])]
        grid = sorted((r for r in shown if r["variant"] is None), key=lambda r: r["bits_per_pixel"])
        if connect_grid and len(grid) > 1:
            ax.plot([r["bits_per_pixel"] for r in grid], [r[metric] for r in grid], color="0.7", lw=1, zorder=1)
        for r in shown:
            ax.scatter(r["bits_per_pixel"], r[metric], marker="s" if r["variant"] else "o", zorder=2)
            ax.annotate(r["label"], (r["bits_per_pixel"], r[metric]), textcoords="offset points", xytext=(4, 4),
                        fontsize="small")
        if not shown:
            ax.text(0.5, 0.5, f"no {metric} in the evaluations\n(eval.fid: false, or no base model)",
                    ha="center", va="center", transform=ax.transAxes)
        if shown and all(r["bits_per_pixel"] > 0 for r in shown):
            ax.set_xscale("log")  # rates of a sweep span orders of magnitude
        ax.set_xlabel("bits/pixel")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def write_study(sweep: Sweep, history_url: str, out_dir: str | Path, storage_options: StorageOptions = None,
                current: Optional[dict[str, dict[str, Optional[str]]]] = None) -> StudyResult:
    """Build the study of `sweep` from a metrics history; writes `study.parquet` and `study.png` in out_dir."""
    table = study_table(sweep, read_history(history_url, storage_options), history_url, current)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet = out_dir / "study.parquet"
    buf = io.BytesIO()
    table.write_parquet(buf)
    parquet.write_bytes(buf.getvalue())
    png = study_png(table, out_dir / "study.png", f"{sweep.name}: rate and distortion ({table.height} points)",
                    connect_grid=len(sweep.grid_keys) == 1)
    return StudyResult(table, parquet, png)


def summary_columns(table: pl.DataFrame) -> list[str]:
    """The columns a person reads first: the point, what was swept, the metrics and the wall time."""
    skip = {"point", "variant", "evaluated_at", *TIME_PARTS}
    return [c for c in table.columns if c not in skip and not table[c].is_null().all()]


def _number(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _finite(v: Any) -> bool:
    return _number(v) is not None


def _series(name: str, values: Sequence[Any]) -> pl.Series:
    """One typed column, whose points may mix ints, floats and strings (strings win, then floats)."""
    present = [v for v in values if v is not None]
    if name in TEXT_COLUMNS:
        return pl.Series(name, values, dtype=pl.String)
    if present and all(isinstance(v, bool) for v in present):
        return pl.Series(name, values, dtype=pl.Boolean)
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pl.Series(name, values, dtype=pl.Int64)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pl.Series(name, [None if v is None else float(v) for v in values], dtype=pl.Float64)
    return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)
