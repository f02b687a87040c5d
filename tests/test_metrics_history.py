"""The Parquet metrics history: appends from concurrent evaluations all survive."""

from __future__ import annotations

import multiprocessing as mp

import polars as pl

from ul_pipeline.lifecycle import append_metrics_row


def _append_many(history: str, writer: int, n: int) -> None:
    for i in range(n):
        append_metrics_row(history, {"writer": writer, "i": i, "psnr_db": float(i)})


def test_concurrent_appends_keep_every_row(tmp_path):
    history = str(tmp_path / "sub" / "metrics_history.parquet")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(history, w, 15)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = pl.read_parquet(history)
    assert rows.height == 45
    assert sorted(zip(rows["writer"], rows["i"])) == [(w, i) for w in range(3) for i in range(15)]


def test_new_columns_are_added_to_old_rows(tmp_path):
    history = str(tmp_path / "metrics_history.parquet")
    append_metrics_row(history, {"experiment": "a", "psnr_db": 20.0})
    append_metrics_row(history, {"experiment": "b", "psnr_db": 21.0, "gfid": 30.0})
    rows = pl.read_parquet(history)
    assert rows["experiment"].to_list() == ["a", "b"]
    assert rows["gfid"].to_list() == [None, 30.0]
