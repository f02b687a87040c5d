"""ul_pipeline_dagster: a folder named assets/ (or resources/) in the working directory never shadows the layer."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -c code` in `cwd` (first on sys.path, as for `dagster -m` and `python -m`), this checkout importable."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def user_folder(tmp_path: Path) -> Path:
    """A user's project whose own assets/ and resources/ packages would win on sys.path."""
    for name in ("assets", "resources"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"USER = {name!r}\n")
    return tmp_path


def test_a_user_assets_folder_shadows_the_generic_module_name(tmp_path):
    # what the entry module exists for: the generic name resolves to the user's folder ("No module named
    # 'assets.definitions'" from a wheel; an editable install's finder may even mix the two folders)
    proc = python("import assets.definitions", user_folder(tmp_path))
    assert proc.returncode != 0 and ("No module named" in proc.stderr or str(tmp_path / "resources") in proc.stderr)


def test_the_entry_module_loads_the_layer_whatever_the_working_directory_holds(tmp_path):
    proc = python("import ul_pipeline_dagster as m, assets, resources\n"
                  "print(assets.__file__); print(resources.__file__); print(sorted(j.name for j in m.defs.resolve_all_job_defs()))",
                  user_folder(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assets_file, resources_file, jobs = proc.stdout.strip().splitlines()[-3:]
    assert Path(assets_file) == REPO / "assets" / "__init__.py"
    assert Path(resources_file) == REPO / "resources" / "__init__.py"
    assert "'smoke'" in jobs


def test_an_assets_module_imported_first_is_refused_with_what_happened(tmp_path):
    proc = python("import assets\nimport ul_pipeline_dagster", user_folder(tmp_path))
    assert proc.returncode != 0
    assert "ShadowedLayerError" in proc.stderr and str(tmp_path / "assets" / "__init__.py") in proc.stderr
    assert "Traceback" in proc.stderr and "assets/definitions.py" not in proc.stderr

