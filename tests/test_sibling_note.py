"""A CLI run that cannot use the folder it was given (a complete run there differs) says where it goes and why."""

import pytest

from ul_pipeline.cli import main
from ul_pipeline.data import write_shards

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["data.limit=48", "data.val_size=16", "stage1.train.total_samples=16", "stage1.train.batch_size=16",
        "compute.tensorboard=false"]


def test_stage1_names_the_sibling_folder_and_the_key_that_differs(fmnist_400_source, tmp_path, capsys):
    from ul_pipeline.config import load_config
    from ul_pipeline.config.sweeps import data_sha256

    shards = str(tmp_path / "shards")
    write_shards(fmnist_400_source, shards, shard_size=32, val_size=16, seed=0, resolution=32, channels=1,
                 num_classes=10, limit=48, data_sha256=data_sha256(load_config("smoke", TINY)))
    out = tmp_path / "s1"
    assert main(["stage1", "-e", "smoke", *TINY, "--shards", shards, "--out", str(out)]) == 0
    assert "sibling" not in capsys.readouterr().err  # the folder asked for: nothing to say
    assert main(["stage1", "-e", "smoke", *TINY, "stage1.c_lf=2.0", "--shards", shards, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    siblings = [p for p in tmp_path.iterdir() if p.name.startswith("s1-")]
    assert len(siblings) == 1 and (siblings[0] / "last.pt").exists()
    assert f"{out} holds another run, so this one uses the sibling folder {siblings[0]}" in err
    assert "stage1.c_lf: checkpoint has 1.5, config has 2.0" in err
