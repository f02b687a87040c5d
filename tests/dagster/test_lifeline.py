"""A step process ends with its parent: `kill -9` of the process that spawned it (as `dagster job execute` spawns
its steps) ends the child within seconds instead of leaving it running with parent 1."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PARENT = textwrap.dedent("""
    import multiprocessing, sys, time

    def step(pid_file, lifeline):
        if lifeline:
            from resources.lifeline import stop_with_parent
            assert stop_with_parent() in ("prctl", "thread")
        open(pid_file, "w").write(str(__import__("os").getpid()))
        time.sleep(120)  # "training"

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("spawn")  # Dagster's multiprocess executor's default
        ctx.Process(target=step, args=(sys.argv[1], sys.argv[2] == "1")).start()
        time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has ended; only its exit status is left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("lifeline", [True, False])
def test_step_process_ends_when_its_parent_is_killed(tmp_path, lifeline):
    script, pid_file = tmp_path / "parent.py", tmp_path / "child.pid"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), "1" if lifeline else "0"], env=env)
    child = None
    try:
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline and parent.poll() is None, "the step never started"
            time.sleep(0.2)
        child = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(child) is (not lifeline)  # without the lifeline it trains on, orphaned (the old behaviour)
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
