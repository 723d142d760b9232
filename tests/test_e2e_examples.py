"""Every example workflow (UI format) is built from registered nodes and runs on the real server
once its checkpoint, image folder and reward model are swapped for the test model's, the test
reward and tiny sizes (tests/example_inputs.py)."""
import json
import os

import pytest

from comfyui_server import ComfyServer
from example_inputs import EXAMPLES, prepare_base, swap
from workflow_format import FRONTEND_ONLY, ui_to_api


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny):
    base = prepare_base(str(tmp_path_factory.mktemp("examples") / "base"), tiny)
    srv = ComfyServer(base).start()
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
    graph = swap(ui_to_api(workflow, info))
    entry = server.run(graph, timeout=240)
    saved = [o for o in entry["outputs"].values() if o.get("images")]
    assert saved, "the example produced no images"


def test_trainer_seeds_stay_fixed_between_runs(server):
    """A trainer's seed is part of its run: queueing the same settings again resumes the run. The
    frontend adds 'control after generate' (randomize by default) to INT inputs named seed unless the
    node says no, which would change the seed after every run and refuse the resume."""
    from workflow_format import _has_control
    info = server.object_info()
    trainers = {k: v for k, v in info.items() if v.get("category") == "TextTune/train"}
    assert {"TextTuneTrainTextualInversion", "TextTuneTrainTextBoost", "TextTuneTrainRewardTextEncoder",
            "TextTuneTrainRewardLoRA", "TextTuneTrainPromptNet"} <= set(trainers)
    for name, spec in trainers.items():
        typ, opts = spec["input"]["required"]["seed"]
        assert opts.get("control_after_generate") is False and not _has_control("seed", typ, opts), name
