"""The version artifacts record: a checkout's commit, a wheel's build-time version, never a foreign repository's."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ul_pipeline import provenance
from ul_pipeline.versioning import STAGE_ROOTS, import_closure

REPO = Path(__file__).resolve().parents[1]
BUILT = "0.1.1.dev7+gabc1234de"
RECORD = ("import torch; from ul_pipeline.train.checkpoint import save_checkpoint, load_checkpoint; "
          "save_checkpoint('c.pt', {'model': {'w': torch.zeros(1)}}); print(load_checkpoint('c.pt')['code_version'])")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def recorded_version(site: Path, cwd: Path) -> str:
    """The code_version a checkpoint written by the ul_pipeline under `site` records."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", RECORD], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_a_checkout_records_its_commit_and_dirty_state():
    head = git("rev-parse", "--short=12", "HEAD", cwd=REPO)
    assert provenance.source_checkout() == REPO
    assert provenance.code_version().startswith(f"{provenance.RELEASE}+{head}")


def test_an_installed_copy_inside_another_repository_records_its_build_version(tmp_path):
    # a virtualenv's site-packages inside some other git repository (with commits of its own)
    other = tmp_path / "someone-elses-repo"
    site = other / ".venv" / "lib" / "site-packages"
    shutil.copytree(REPO / "ul_pipeline", site / "ul_pipeline", ignore=shutil.ignore_patterns("__pycache__", "_version.py"))
    (site / "ul_pipeline" / "_version.py").write_text(f"version = {BUILT!r}\n")
    git("init", "-q", cwd=other)
    (other / "README").write_text("not ul-pipeline\n")
    git("add", "README", cwd=other)
    git("commit", "-qm", "x", cwd=other)
    foreign = git("rev-parse", "--short=12", "HEAD", cwd=other)
    assert recorded_version(site, tmp_path) == BUILT  # the old code recorded 0.1.0+<foreign commit>
    assert foreign not in BUILT
    (site / "ul_pipeline" / "_version.py").unlink()  # copied sources, never built: says so
    assert recorded_version(site, tmp_path) == f"{provenance.RELEASE}+unknown"


def test_the_build_version_file_is_in_no_stage_code_version():
    (REPO / "ul_pipeline" / "_version.py").exists() or pytest.skip("no build has written ul_pipeline/_version.py here")
    for stage, roots in STAGE_ROOTS.items():
        closure = import_closure(roots)
        assert "ul_pipeline._version" not in closure and "ul_pipeline.api" not in closure, stage


@pytest.mark.slow
def test_a_built_wheel_records_the_commit_it_was_built_from(tmp_path):
    """Builds the wheel from this checkout (pip, setuptools-scm), unpacks it outside any repository and writes a
    checkpoint with it: the recorded version is the wheel's, and names HEAD."""
    head = git("rev-parse", "--short=7", "HEAD", cwd=REPO)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
                   check=True, capture_output=True, timeout=900)
    wheel = next((tmp_path / "dist").glob("ul_pipeline-*.whl"))
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    version = wheel.name.split("-")[1]
    assert f"+g{head}" in version
    assert recorded_version(site, tmp_path) == version
    assert (site / "ul_pipeline" / "configs" / "experiments" / "smoke.yaml").is_file()
