"""Every example workflow (UI format) is built from registered nodes and runs on the real server
once its checkpoint and image folder are swapped for the test model's and sizes made tiny."""
import glob
import json
import os
import shutil

import pytest

from comfyui_server import REPO, ComfyServer
from workflow_format import FRONTEND_ONLY, ui_to_api

EXAMPLES = sorted(glob.glob(os.path.join(REPO, "example_workflows", "*.json")))
CKPT = "tinysd.safetensors"
TINY = {"ckpt_name": CKPT, "folder": "concept", "steps": 3, "resolution": 64, "width": 64, "height": 64,
        "save_every": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny):
    base = tmp_path_factory.mktemp("examples") / "base"
    (base / "models" / "checkpoints").mkdir(parents=True)
    tiny.save_checkpoint(str(base / "models" / "checkpoints" / CKPT), seed=0)
    (base / "input" / "concept").mkdir(parents=True)
    for name in sorted(os.listdir(os.path.join(REPO, "assets", "demo")))[:3]:
        shutil.copy(os.path.join(REPO, "assets", "demo", name), base / "input" / "concept" / name)
    srv = ComfyServer(str(base)).start()
    yield srv
    srv.stop()


def test_there_are_examples():
    assert EXAMPLES, "example_workflows/ has no workflows"


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_runs_with_the_test_model(server, path):
    with open(path, encoding="utf-8") as f:
        workflow = json.load(f)
    info = server.object_info()
    missing = {n["type"] for n in workflow["nodes"]} - set(info) - FRONTEND_ONLY
    assert not missing, f"nodes not registered: {missing}"
    assert any(n["type"] == "Note" for n in workflow["nodes"]), "each example explains its model files in a note"
    graph = ui_to_api(workflow, info)
    for node in graph.values():
        for key, value in TINY.items():
            if key in node["inputs"] and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = value
    entry = server.run(graph, timeout=240)
    saved = [o for o in entry["outputs"].values() if o.get("images")]
    assert saved, "the example produced no images"
