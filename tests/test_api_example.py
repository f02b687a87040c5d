"""docs/guides/python-api.md runs as a script on a smoke-size trained run, and the top-level API loads lazily."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ul_pipeline.cli import main
from ul_pipeline.data import write_shards

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "guides" / "python-api.md"
FAST = ["stage1.train.total_samples=128", "stage2.train.total_samples=128"]


def python_blocks(page: Path) -> str:
    """The page's ```python blocks, in order, as one script."""
    return "\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))


@pytest.fixture(scope="module")
def smoke_run(fmnist_400_source, tmp_path_factory) -> Path:
    """runs/smoke/{shards,stage1,latents.zarr,stage2} as the page's commands make them (fewer samples)."""
    root = tmp_path_factory.mktemp("api")
    run = root / "runs" / "smoke"
    write_shards(fmnist_400_source, str(run / "shards"), shard_size=100, val_size=64, seed=0, resolution=32,
                 channels=1, num_classes=10)
    assert main(["stage1", "-e", "smoke", "--shards", str(run / "shards"), "--out", str(run / "stage1"), *FAST]) == 0
    assert main(["encode", "--checkpoint", str(run / "stage1" / "last.pt"), "--shards", str(run / "shards"),
                 "--out", str(run / "latents.zarr")]) == 0
    assert main(["stage2", "-e", "smoke", "--latents", str(run / "latents.zarr"), "--out", str(run / "stage2"),
                 *FAST]) == 0
    return root


def test_the_python_api_page_runs_as_a_script(smoke_run):
    script = smoke_run / "python_api.py"
    script.write_text(python_blocks(PAGE))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=smoke_run, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "wrote reconstructions.png and samples.png" in proc.stdout
    assert (smoke_run / "samples.png").stat().st_size > 100 and (smoke_run / "reconstructions.png").stat().st_size > 100


def test_the_page_commands_are_the_cli_chain():
    text = PAGE.read_text()
    for command in ("ul-pipeline shard  -e smoke", "ul-pipeline stage1 -e smoke", "ul-pipeline encode", "ul-pipeline stage2"):
        assert command in text


def test_the_top_level_api_imports_lazily():
    code = ("import sys, ul_pipeline as ul; assert 'torch' not in sys.modules; "
            "assert ul.load_stage1.__module__ == 'ul_pipeline.stage1.training'; assert 'torch' in sys.modules; "
            "assert set(ul.__all__) <= set(dir(ul))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_sample_refuses_conditioning_the_model_does_not_read():
    import torch

    import ul_pipeline as ul
    from ul_pipeline.stage2.model import BaseModel

    base = BaseModel(torch.nn.Linear(1, 1), (1, 2, 2), num_classes=10)
    with pytest.raises(ValueError, match="class-conditional"):
        ul.sample(None, base, prompts=["a cat"])
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\)"):
        ul.sample(None, base, labels=[10])


def test_sample_draws_from_an_unconditional_model_by_count():
    import torch

    import ul_pipeline as ul
    from ul_pipeline.stage2.unconditional import UnconditionalBaseModel

    base = UnconditionalBaseModel(torch.nn.Linear(1, 1), (1, 2, 2), num_classes=0)
    with pytest.raises(ValueError, match="unconditional: give num_samples"):
        ul.sample(None, base, labels=[0])
    drawn = []
    base.sample_z0 = lambda labels, *a, **k: drawn.append(labels) or torch.zeros(len(labels), 1, 2, 2)
    decoder = type("Decoder", (), {"decode": lambda self, z0, *a, **k: z0 + 5})()
    images = ul.sample(decoder, base, num_samples=3)
    assert images.shape == (3, 1, 2, 2) and images.max() == 1  # decoded, clamped to [-1, 1]
    assert drawn[0].tolist() == [0, 0, 0]
