"""The Parquet metrics history: appends from concurrent evaluations all survive."""

from __future__ import annotations

import threading

import polars as pl

from ul_pipeline.evaluation.history import append_metrics_row


def test_concurrent_appends_keep_every_row(tmp_path):
    """Four writers at once (threads: flock locks are per open file, so they exclude each other too)."""
    history = str(tmp_path / "sub" / "metrics_history.parquet")
    start = threading.Barrier(4)
    errors = []

    def append_many(writer: int) -> None:
        try:
            start.wait()
            for i in range(15):
                append_metrics_row(history, {"writer": writer, "i": i, "psnr_db": float(i)})
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=append_many, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    rows = pl.read_parquet(history)
    assert rows.height == 60
    assert sorted(zip(rows["writer"], rows["i"])) == [(w, i) for w in range(4) for i in range(15)]


def test_new_columns_are_added_to_old_rows(tmp_path):
    history = str(tmp_path / "metrics_history.parquet")
    append_metrics_row(history, {"experiment": "a", "psnr_db": 20.0})
    append_metrics_row(history, {"experiment": "b", "psnr_db": 21.0, "gfid": 30.0})
    rows = pl.read_parquet(history)
    assert rows["experiment"].to_list() == ["a", "b"]
    assert rows["gfid"].to_list() == [None, 30.0]
