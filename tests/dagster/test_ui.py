"""The UI: dagster-webserver on loopback loads workspace.yaml and serves the asset graph over GraphQL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QUERY = """{ assetNodes { assetKey { path } groupName isPartitioned
             assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_webserver_serves_the_asset_graph(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "UL_STORAGE_ROOT": str(tmp_path / "artifacts")}
    port, log = free_port(), open(tmp_path / "webserver.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml",
                             "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, nodes = time.monotonic() + 180, []
        while len(nodes) < 6:  # the server answers before the code location has loaded
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp_path / "webserver.log").read_text()[-4000:]
            try:
                nodes = graphql(port, QUERY).get("data", {}).get("assetNodes") or []
            except OSError:
                pass
            time.sleep(0.5)
        graph = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert {k: n["groupName"] for k, n in graph.items()} == {
            "dataset_shards": "data", "ul_autoencoder": "stage1", "latent_store": "latents",
            "base_model": "stage2", "evaluation": "evaluation", "study": "study"}
        assert all(n["isPartitioned"] for n in nodes)
        checks = {c["name"]: c["blocking"] for c in graph["latent_store"]["assetChecksOrError"]["checks"]}
        assert checks == {"complete": True, "count_matches_shards": True, "z_clean_finite": True}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
