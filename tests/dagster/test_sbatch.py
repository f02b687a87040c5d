"""The sbatch launcher without a cluster: its script, and how it waits on a controller that hiccups."""

import pytest

from assets import sbatch
from ul_pipeline.config import load_config


def test_the_job_script_runs_one_torchrun_per_node_and_holds_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ul-secret-9")
    cfg = load_config("smoke", ["compute.nnodes=4", "compute.nproc_per_node=8", "compute.max_restarts=2"])
    settings = sbatch.SlurmSettings(partition="gpu", time="2-00:00:00", gpus_per_node=8, sbatch_args=["--account=lab"])
    text = sbatch.job_script(settings, cfg.compute, tmp_path / "job.json", tmp_path, "ul-stage1-x")
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --partition=gpu",
                 "#SBATCH --gpus-per-node=8", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                 "#SBATCH --account=lab", "#SBATCH --time=2-00:00:00"):
        assert line in text, line
    assert "--nproc-per-node 8 --max-restarts 2" in text and '--rdzv-id "$SLURM_JOB_ID"' in text
    assert "srun --nodes=\"$SLURM_NNODES\" --ntasks-per-node=1 --kill-on-bad-exit=1" in text
    assert "ul-secret-9" not in text
    assert "--no-requeue" in sbatch.job_script(sbatch.SlurmSettings(requeue=False), cfg.compute,
                                               tmp_path / "job.json", tmp_path, "x")


def test_waiting_rides_out_a_controller_that_does_not_answer_for_a_while(monkeypatch):
    answers = iter([sbatch.SlurmError("scontrol show failed (1): Unable to contact slurm controller")] * 2
                   + [{"JobState": "RUNNING"}, {"JobState": "NODE_FAIL"}, {"JobState": "PENDING"},
                      {"JobState": "COMPLETED", "NodeList": "n[1-2]"}])

    def info(job_id, env=None):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(sbatch, "job_info", info)
    monkeypatch.setattr(sbatch.time, "sleep", lambda s: None)
    log = []
    final = sbatch.wait_for(7, {}, poll_s=0.0, requeue=True, log=log.append)
    assert final["JobState"] == "COMPLETED"  # NODE_FAIL with requeue: followed back into the queue
    assert sum("no answer from the controller" in m for m in log) == 2

    monkeypatch.setattr(sbatch, "job_info", lambda job_id, env=None: (_ for _ in ()).throw(sbatch.SlurmError("down")))
    with pytest.raises(sbatch.SlurmError, match="down"):
        sbatch.wait_for(7, {}, poll_s=0.0, requeue=True, log=log.append, unreachable_s=-1.0)


def test_the_failure_message_reads_only_the_end_of_a_huge_log(tmp_path):
    """A failed job's message quotes its log's last lines; a log of gigabytes (days of training output)
    was read whole into the Dagster process (about 8x its size in memory)."""
    import tracemalloc

    line = b"step 1 loss 0.5 \xff\xfe not utf-8 " + b"x" * 60 + b"\n"
    with open(tmp_path / "slurm-9.out", "wb") as f:
        f.write(line * (40_000_000 // len(line)) + b"Traceback: the real error\n")
    tracemalloc.start()
    try:
        tail = sbatch.log_tail(tmp_path, 9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tail.splitlines()[-1] == "Traceback: the real error" and len(tail.splitlines()) == 30
    assert "\ufffd" in tail  # undecodable bytes replaced, not an error
    assert peak < 2_000_000, peak
    assert sbatch.log_tail(tmp_path, 10) == f"(no {tmp_path / 'slurm-10.out'})"


def test_a_hung_scontrol_is_retried_like_a_controller_that_does_not_answer(monkeypatch):
    """_slurm runs scontrol with timeout=60: subprocess's TimeoutExpired is no SlurmError, so it escaped the
    wait's retry and reached run()'s except-BaseException, which scancels the (healthy) job."""
    import subprocess

    calls = []

    def run(args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise subprocess.TimeoutExpired(args, 60)
        return subprocess.CompletedProcess(args, 0, "JobId=7 JobState=COMPLETED Reason=None NodeList=n1\n", "")

    monkeypatch.setattr(sbatch.subprocess, "run", run)
    monkeypatch.setattr(sbatch.time, "sleep", lambda s: None)
    log = []
    assert sbatch.wait_for(7, {}, poll_s=0.0, requeue=True, log=log.append)["JobState"] == "COMPLETED"
    assert any("did not answer within 60 s" in m for m in log)
