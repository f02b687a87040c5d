"""The metrics history: appends from concurrent evaluations all survive, locally and on S3, and any tool reads it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl

from ul_pipeline.evaluation.history import append_metrics_row, read_history

REPO = Path(__file__).resolve().parents[2]
WRITER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ul_pipeline.evaluation.history import append_metrics_row
url, writer, options = sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
for i in range(10):
    append_metrics_row(url, {"writer": writer, "i": i, "psnr_db": float(i)}, options or None)
"""


def append_from_processes(url: str, writers: int, options: dict | None = None) -> None:
    """`writers` real processes appending 10 rows each to one history at the same time."""
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(REPO), url, str(w), json.dumps(options or {})],
                              stderr=subprocess.PIPE, text=True) for w in range(writers)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors


def test_concurrent_processes_keep_every_row_locally(tmp_path):
    history = str(tmp_path / "sub" / "metrics_history")
    append_from_processes(history, 4)
    rows = read_history(history)
    assert rows.height == 40
    assert sorted(zip(rows["writer"], rows["i"])) == [(w, i) for w in range(4) for i in range(10)]
    # each writer's rows come back in the order it appended them
    for w in range(4):
        assert rows.filter(pl.col("writer") == w)["i"].to_list() == list(range(10))
    # another tool reads the folder as one table, without our package
    assert pl.read_parquet(f"{history}/*.parquet").height == 40


def test_concurrent_processes_keep_every_row_on_s3(s3_server):
    """4 writers x 10 appends on S3 once left 23 of 40 rows (read-modify-write of one object)."""
    history = s3_server.url("metrics_history")
    append_from_processes(history, 4, s3_server.storage_options)
    rows = read_history(history, s3_server.storage_options)
    assert rows.height == 40
    assert sorted(zip(rows["writer"], rows["i"])) == [(w, i) for w in range(4) for i in range(10)]


def test_new_columns_are_added_to_old_rows_and_a_legacy_file_reads_first(tmp_path):
    history = str(tmp_path / "metrics_history")
    pl.DataFrame([{"experiment": "old", "psnr_db": 19.0}]).write_parquet(history + ".parquet")  # an earlier layout
    append_metrics_row(history, {"experiment": "a", "psnr_db": 20.0})
    append_metrics_row(history, {"experiment": "b", "psnr_db": 21.0, "gfid": 30.0})
    rows = read_history(history)
    assert rows["experiment"].to_list() == ["old", "a", "b"]
    assert rows["gfid"].to_list() == [None, None, 30.0]
    assert read_history(str(tmp_path / "none")).height == 0


def test_the_done_marker_is_written_only_after_the_history_row(tmp_path, monkeypatch):
    """metrics.json tells the sweep runner a point is done: a failed append must not leave one behind."""
    from ul_pipeline.evaluation import image

    def failing_append(*args, **kwargs):
        raise OSError("the history's storage is gone")

    monkeypatch.setattr(image, "append_metrics_row", failing_append)
    try:
        image._finish_evaluation({"experiment": "p"}, {}, 0.0, tmp_path, str(tmp_path / "h"), None, print)
    except OSError:
        pass
    assert not (tmp_path / "metrics.json").exists()
    monkeypatch.undo()
    image._finish_evaluation({"experiment": "p"}, {}, 0.0, tmp_path, str(tmp_path / "h"), None, print)
    assert json.loads((tmp_path / "metrics.json").read_text())["experiment"] == "p"
    assert read_history(str(tmp_path / "h"))["experiment"].to_list() == ["p"]
