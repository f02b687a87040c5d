"""The CLI front: the whole chain on local paths, resume on re-run, and config errors before compute."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ul_pipeline.cli import main
from ul_pipeline.data import write_shards

FAST = ["stage1.train.total_samples=128", "stage2.train.total_samples=128"]


@pytest.fixture(scope="module")
def shards(fmnist_400_source, tmp_path_factory):
    url = str(tmp_path_factory.mktemp("cli") / "shards")
    write_shards(fmnist_400_source, url, shard_size=100, val_size=64, seed=0, resolution=32, channels=1,
                 num_classes=10)
    return url


def test_cli_chain_stage1_encode_stage2_sample_reconstruct_evaluate(shards, tmp_path, capsys):
    s1, store, s2 = tmp_path / "s1", str(tmp_path / "latents.zarr"), tmp_path / "s2"
    assert main(["stage1", "-e", "smoke", "--shards", shards, "--out", str(s1), *FAST]) == 0
    mtime = (s1 / "last.pt").stat().st_mtime_ns
    assert main(["stage1", "-e", "smoke", "--shards", shards, "--out", str(s1), *FAST]) == 0  # resumes: done
    assert (s1 / "last.pt").stat().st_mtime_ns == mtime
    assert main(["encode", "--checkpoint", str(s1 / "last.pt"), "--shards", shards, "--out", store]) == 0
    assert main(["stage2", "-e", "smoke", "--latents", store, "--out", str(s2), *FAST]) == 0
    assert main(["sample", "--stage1", str(s1 / "last.pt"), "--base", str(s2 / "last.pt"), "--num", "4",
                 "--steps", "4", "--decoder-steps", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["reconstruct", "--stage1", str(s1 / "last.pt"), "--shards", shards, "--num", "4",
                 "--decoder-steps", "4", "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 100 and (tmp_path / "r.png").stat().st_size > 100
    capsys.readouterr()
    assert main(["evaluate", "-e", "smoke", "--stage1", str(s1 / "last.pt"), "--base", str(s2 / "last.pt"),
                 "--shards", shards, "--out", str(tmp_path / "eval"), "--history", str(tmp_path / "h.parquet"),
                 "eval.num_samples=16", "sample.steps=4", "sample.decoder_steps=4"]) == 0
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("bits_per_pixel", "bits_per_image", "bits_per_latent_dim", "psnr"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["num_samples"] == 16 and result["steps"] == 4 and result["sampler"] == "ancestral"
    import polars as pl

    assert pl.read_parquet(tmp_path / "h.parquet")["bits_per_pixel"].len() == 1


def test_unknown_key_and_wrong_type_fail_before_compute(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["stage1", "-e", "smoke", "--shards", "nowhere", "--out", str(out), "stage1.c_fl=2"]) == 2
    assert "stage1.c_fl" in capsys.readouterr().err
    assert main(["print-config", "-e", "smoke", "stage2.train.lr=fast"]) == 2
    assert "stage2.train.lr" in capsys.readouterr().err
    assert main(["print-config", "-e", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not out.exists()


def test_print_config_as_a_module_shows_the_resolved_config():
    out = subprocess.run([sys.executable, "-m", "ul_pipeline", "print-config", "-e", "demo", "stage1.c_lf=1.7"],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent).stdout
    assert "c_lf: 1.7" in out and "name: demo" in out


def test_expected_failures_print_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "no_shards"
    assert main(["stage1", "-e", "smoke", "--shards", str(missing), "--out", str(tmp_path / "s1")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(missing) in err and "Traceback" not in err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["encode", "--checkpoint", str(tmp_path / "bad.pt"), "--shards", str(missing),
                 "--out", str(tmp_path / "z.zarr")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bad.pt" in err and "CheckpointError" in err
    assert main(["print-config", "-e", "smoke", "stage1.nope=1"]) == 2
    assert "stage1.nope" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):  # --debug: the exception and its traceback
        main(["stage1", "--debug", "-e", "smoke", "--shards", str(missing), "--out", str(tmp_path / "s1")])


def test_cli_process_exit_status_and_debug_traceback(tmp_path):
    cmd = [sys.executable, "-m", "ul_pipeline", "stage2", "-e", "smoke", "--latents", str(tmp_path / "none.zarr"),
           "--out", str(tmp_path / "s2")]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().count("\n") == 0 and "none.zarr" in plain.stderr
    debug = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, timeout=600)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "LatentStoreError" in debug.stderr


class _FakeBase:
    """Stands in for a loaded base model: records how it was asked to sample."""

    num_classes = 10

    def __init__(self, calls, context_latents=0):
        self.calls, self.context_latents = calls, context_latents

    def sample_z0(self, labels, steps, guidance, generator=None, progress=None, eta=1.0, guidance_interval=None):
        self.calls["base"] = (steps, guidance, eta) + (() if guidance_interval is None else (list(guidance_interval),))
        return torch.zeros(len(labels), 4, 2, 2)


class _FakeStage1:
    def __init__(self, calls):
        self.calls = calls

    def decode(self, z0, steps, generator=None, progress=None, eta=1.0, sampler=None):
        self.calls["decoder"] = (steps, eta)
        return torch.zeros(len(z0), 1, 8, 8)


@pytest.mark.parametrize("flags, want", [
    ([], {"base": (7, 2.5, 0.3), "decoder": (5, 0.7)}),  # the Stage-1 checkpoint's sample.* (was guidance 0, eta 1)
    (["--guidance", "0", "--eta", "1", "--decoder-eta", "0", "--steps", "3"],
     {"base": (3, 0.0, 1.0), "decoder": (5, 0.0)}),  # flags override single values
    (["-e", "smoke", "sample.guidance=1.5", "sample.eta=0.0", "sample.steps=9", "sample.decoder_steps=6",
      "sample.guidance_interval=[-3.0,2.0]"],
     {"base": (9, 1.5, 0.0, [-3.0, 2.0]), "decoder": (6, 1.0)}),  # -e and its overrides, as `evaluate`
])
def test_sample_takes_guidance_and_eta_from_the_config(flags, want, tmp_path, monkeypatch, capsys):
    from ul_pipeline.config import load_config
    from ul_pipeline.stage1 import training as stage1_training
    from ul_pipeline.stage2 import training as stage2_training

    calls = {}
    stage1_cfg = load_config("smoke", ["sample.guidance=2.5", "sample.eta=0.3", "sample.decoder_eta=0.7",
                                       "sample.steps=7", "sample.decoder_steps=5"])
    monkeypatch.setattr(stage1_training, "load_stage1", lambda path: (_FakeStage1(calls), stage1_cfg, {}))
    monkeypatch.setattr(stage2_training, "load_base_model", lambda path: (_FakeBase(calls), None, {}))
    assert main(["sample", "--stage1", "s1.pt", "--base", "s2.pt", "--num", "4", "--out", str(tmp_path / "s.png"),
                 *flags]) == 0
    assert calls == want
    assert f"guidance {want['base'][1]}" in capsys.readouterr().out and (tmp_path / "s.png").exists()


def test_sample_refuses_a_frame_conditioned_base_model_by_name(monkeypatch, capsys):
    from ul_pipeline.config import load_config
    from ul_pipeline.stage1 import training as stage1_training
    from ul_pipeline.stage2 import training as stage2_training

    monkeypatch.setattr(stage1_training, "load_stage1", lambda path: (_FakeStage1({}), load_config("smoke"), {}))
    monkeypatch.setattr(stage2_training, "load_base_model", lambda path: (_FakeBase({}, context_latents=1), None, {}))
    assert main(["sample", "--stage1", "s1.pt", "--base", "video_base.pt"]) == 1
    assert "base model video_base.pt continues clips" in capsys.readouterr().err
