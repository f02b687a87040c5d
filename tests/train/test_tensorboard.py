"""TensorBoard curves beside the checkpoint: every logged row once, also across a kill and resume; pictures."""

from pathlib import Path

import pytest

from ul_pipeline.config import load_config
from ul_pipeline.lifecycle import encode_latents, run_stage1, run_stage2
from ul_pipeline.train.loop import Callback

TINY = ["stage1.train.total_samples=256", "stage1.train.batch_size=32", "stage1.train.log_every_samples=32",
        "stage1.train.checkpoint_every_samples=128", "stage2.train.total_samples=128", "stage2.train.batch_size=32",
        "stage2.train.log_every_samples=32", "stage2.train.checkpoint_every_samples=64", "compute.device=cpu"]


@pytest.fixture
def shards(fmnist_400_shards):
    return fmnist_400_shards


def events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()  # purge_orphaned_data: a resumed writer's purge_step drops the killed run's later steps
    return acc


class KillAt(Callback):
    """Stops the run (as a kill would) at a given samples_seen, after the rows before it were logged."""

    def __init__(self, at: int):
        self.at = at

    def on_step(self, state, loss):
        if state.samples_seen == self.at:
            raise KeyboardInterrupt


def test_a_killed_and_resumed_stage1_logs_every_step_once_with_pictures(tmp_path, shards):
    cfg = load_config("smoke", TINY)
    run_dir = tmp_path / "stage1"
    with pytest.raises(KeyboardInterrupt):  # checkpoint at 128; rows 160 and 192 logged after it, then killed
        run_stage1(cfg, shards, run_dir, callbacks=[KillAt(224)])
    log_dir = run_dir / "tensorboard"
    assert [e.step for e in events(log_dir).Scalars("stage1/loss_nats")] == [32, 64, 96, 128, 160, 192]
    result = run_stage1(cfg, shards, run_dir)  # resumes from samples_seen 128
    acc = events(log_dir)
    steps = [e.step for e in acc.Scalars("stage1/loss_nats")]
    assert steps == list(range(32, 257, 32))  # each step once: 160 and 192 of the killed run are gone
    logged = {h["samples_seen"]: h["loss_nats"] for h in result.history}
    assert [round(e.value, 3) for e in acc.Scalars("stage1/loss_nats")] == [round(logged[s], 3) for s in steps]
    for name in ("bits_per_pixel", "lr", "samples_per_s", "grad_norm"):
        assert len(acc.Scalars(f"stage1/{name}")) == 8, name
    grids = acc.Images("stage1/grid")
    assert [g.step for g in grids] == [128, 256]  # one picture per checkpoint, not duplicated by the resume
    assert grids[0].width > 8 * 32 and grids[0].height > 2 * 32  # 8 images over their 8 reconstructions


def test_a_run_killed_before_its_first_checkpoint_and_rerun_logs_every_step_once(tmp_path, shards):
    """No last.pt: the re-run starts from 0, and the killed run's rows (32, 64 here) must not show twice."""
    cfg = load_config("smoke", TINY)
    run_dir = tmp_path / "stage1"
    with pytest.raises(KeyboardInterrupt):  # first checkpoint at 128: none written
        run_stage1(cfg, shards, run_dir, callbacks=[KillAt(96)])
    assert not (run_dir / "last.pt").exists()
    run_stage1(cfg, shards, run_dir)
    assert [e.step for e in events(run_dir / "tensorboard").Scalars("stage1/loss_nats")] == list(range(32, 257, 32))


def test_stage2_logs_curves_and_sample_pictures_and_tensorboard_off_writes_nothing(tmp_path, shards):
    cfg = load_config("smoke", TINY)
    run_stage1(cfg, shards, tmp_path / "stage1")
    store = encode_latents(tmp_path / "stage1" / "last.pt", shards, str(tmp_path / "latents.zarr"), cfg=cfg)
    run_stage2(cfg, store.url, tmp_path / "stage2")
    acc = events(tmp_path / "stage2" / "tensorboard")
    assert [e.step for e in acc.Scalars("stage2/loss_nats")] == [32, 64, 96, 128]
    assert [g.step for g in acc.Images("stage2/grid")] == [64, 128]

    off = load_config("smoke", [*TINY, "compute.tensorboard=false"])
    run_stage2(off, store.url, tmp_path / "stage2_off")
    assert not (tmp_path / "stage2_off" / "tensorboard").exists()


@pytest.mark.slow  # ~40 s: a finished Stage-1 run's curves in TensorBoard, in headless Chromium
def test_tensorboard_shows_the_run_as_a_scalar_chart_in_a_browser(tmp_path, shards):
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright for the browser test")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    run_stage1(load_config("smoke", TINY), shards, tmp_path / "runs" / "smoke" / "stage1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(tmp_path / "runs"),
                             "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "tensorboard did not start"
                time.sleep(0.5)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/#timeseries")
            page.get_by_role("combobox", name="Filter tags (regex)").fill("loss_nats")
            title = page.get_by_text("stage1/loss_nats", exact=True).first
            title.wait_for(timeout=60_000)
            page.wait_for_timeout(3000)  # the line is drawn after the data arrives
            page.screenshot(path=str(tmp_path / "tensorboard.png"))
            if os.environ.get("UL_SCREENSHOT_DIR"):
                shutil.copy(tmp_path / "tensorboard.png", os.environ["UL_SCREENSHOT_DIR"])
            body = page.inner_text("body")
            assert "smoke/stage1/tensorboard" in body  # the run, named by its folder
            assert "\n256\n" in body.replace("\t", "\n").replace(" ", "")  # the last step in the chart's table
            browser.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)
