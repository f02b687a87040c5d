"""docs/guides/your-own-data.md runs as written: its `yaml` blocks headed `# file: NAME` are written to NAME, its
`bash` blocks run line by line from a folder holding small folders of the shapes the guide shows (`sh` blocks are
shown only: Dagster, a real data path). `.venv/bin/python -m ul_pipeline ARGS` lines run in this process
(`ul_pipeline.cli.main(ARGS)`, the same code without a new interpreter per line); any other line runs in bash."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ul_pipeline.cli import main

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "your-own-data.md"
CLI = ".venv/bin/python -m ul_pipeline "

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def make_folders(root: Path, fmnist_400) -> None:
    images = fmnist_400[0]
    (root / "my_flat").mkdir()
    for i in range(40):
        Image.fromarray(images[i]).save(root / "my_flat" / f"img{i:03d}.png")
    for c, name in enumerate(["cat", "dog"]):
        for i in range(4):
            (root / "my_labelled" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[8 * c + i]).convert("RGB").save(root / "my_labelled" / name / f"{i}.png")
    (root / "my_captioned").mkdir()
    for i, colour in enumerate(["red", "green", "blue", "white", "black", "yellow"]):
        Image.new("RGB", (20, 20), colour).save(root / "my_captioned" / f"{colour}.png")
        (root / "my_captioned" / f"{colour}.txt").write_text(f"a {colour} square")
    for c, name in enumerate(["waves", "clouds"]):
        for i in range(2):
            (root / "my_videos" / name).mkdir(parents=True, exist_ok=True)
            out = cv2.VideoWriter(str(root / "my_videos" / name / f"{i}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 8,
                                  (24, 24))
            for t in range(8):
                out.write(np.full((24, 24, 3), 20 * t + 60 * c + 10 * i, np.uint8))
            out.release()
    venv = Path(os.environ.get("VIRTUAL_ENV") or Path(os.sys.executable).parents[1])
    (root / ".venv").symlink_to(venv)


def test_the_guide_runs_as_written(tmp_path, fmnist_400, monkeypatch, capsys):
    text = GUIDE.read_text()
    make_folders(tmp_path, fmnist_400)
    monkeypatch.chdir(tmp_path)
    for block in blocks(text, "yaml"):
        first, _, body = block.partition("\n")
        if first.startswith("# file: "):
            (tmp_path / first[len("# file: "):]).write_text(body)
    commands = [line for b in blocks(text, "bash") for line in b.splitlines() if line.strip()]
    assert sum(c.startswith(CLI) for c in commands) >= 9  # the flat chain and one shard per other kind
    for line in commands:
        if line.startswith(CLI):
            assert main(shlex.split(line[len(CLI):])) == 0, line
        else:
            subprocess.run(["bash", "-c", line], check=True, cwd=tmp_path)
    out = capsys.readouterr().out
    assert "labels: 0=cat, 1=dog" in out  # what the guide says `shard` prints
    samples = tmp_path / "runs" / "my_flat" / "samples"
    assert {"grid.png", "sample_0000.png", "sample_0003.png", "samples.npz"} <= {p.name for p in samples.iterdir()}
    assert (tmp_path / "runs" / "my_flat" / "evaluation" / "metrics.json").exists()
    for kind in ("my_labelled", "my_captioned", "my_videos"):
        assert (tmp_path / "runs" / kind / "shards" / "manifest.parquet").exists(), kind
