"""The torchrun-through-Pipes launcher: its job file names credentials, the ranks get them from the environment."""

import json
import re

import dagster as dg
import pytest

from assets import launch
from ul_pipeline.config import load_config
from ul_pipeline.data.storage import credentials_from_env

OPTIONS = {"key": "ul-key-id-1", "secret": "ul-secret-2", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}


def test_the_job_file_names_credentials_and_the_ranks_read_them_from_their_environment(tmp_path, monkeypatch):
    job = launch.write_job("stage1", load_config("smoke"), tmp_path, shards_url="s3://b/shards",
                           run_dir=str(tmp_path / "run"), storage_options=OPTIONS)
    text = job.read_text()
    assert "ul-key-id-1" not in text and "ul-secret-2" not in text
    stored = json.loads(text)["storage_options"]
    assert stored == {"key": {"env": "AWS_ACCESS_KEY_ID"}, "secret": {"env": "AWS_SECRET_ACCESS_KEY"},
                      "client_kwargs": OPTIONS["client_kwargs"]}
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ul-key-id-1")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(RuntimeError, match=re.escape(f"job file {job}: storage option 'secret' comes from "
                                                     "$AWS_SECRET_ACCESS_KEY, which is not set")):
        credentials_from_env(stored, f"job file {job}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ul-secret-2")
    assert credentials_from_env(stored, "job") == OPTIONS
    assert credentials_from_env(None, "job") is None


@pytest.mark.slow  # ~40 s: an S3 server and a 2-rank torchrun of Stage 1 through Pipes
def test_a_launch_on_s3_leaves_no_secret_under_its_run_folder(tmp_path, monkeypatch, s3_server, fmnist_400_source):
    from ul_pipeline.data.shards import write_shards
    from ul_pipeline.train.checkpoint import load_checkpoint

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the ranks can only get them from the launcher
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UL_TEST_SECRET", "ul-config-secret-3")
    shards, options = s3_server.url("shards"), s3_server.storage_options
    write_shards(fmnist_400_source, shards, shard_size=150, val_size=50, seed=0, resolution=32, channels=1,
                 num_classes=10, storage_options=options)
    cfg = load_config("smoke", ["stage1.train.total_samples=64", "compute.device=cpu", "compute.nproc_per_node=2",
                                "data.uri=${oc.env:UL_TEST_SECRET}"])
    folder = tmp_path / "stage1"
    during: dict[str, bytes] = {}

    class Watched(launch.PipesSubprocessClient):  # what a killed step would leave behind
        def run(self, **kwargs):
            during.update({str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()})
            return super().run(**kwargs)

    monkeypatch.setattr(launch, "PipesSubprocessClient", Watched)

    @dg.asset
    def stage1_through_pipes(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=launch.run_with_torchrun(
            context, "stage1", cfg, folder, shards_url=shards, run_dir=str(folder), storage_options=options))

    assert dg.materialize([stage1_through_pipes]).success
    assert load_checkpoint(folder / "last.pt", kind="stage1")["samples_seen"] == 64  # the ranks read S3
    assert any(name.endswith(".json") for name in during)  # the job file, while the step ran
    after = {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for secret in (s3_server.secret, s3_server.key, "ul-config-secret-3"):
        leaks = [name for name, data in {**during, **after}.items() if secret.encode() in data]
        assert not leaks, (secret, leaks)
