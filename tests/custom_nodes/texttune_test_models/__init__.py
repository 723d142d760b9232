"""Test-only custom node: registers the TinySD and ShapeWorld model configs so
CheckpointLoaderSimple loads their checkpoints in a real server, and the ShapeWorld reward kind
("shapeworld", shapeworld/reward.py) so TextTuneLoadRewardModel offers it. Loaded by tests and
the demo through an extra_model_paths.yaml `custom_nodes:` entry; never installed for users."""
import os
import sys

import folder_paths

_tests = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tinysd lives in tests/; ShapeWorld in the pack, importable as `texttune` from ComfyUI's own
# custom_nodes folder, where scripts/setup_host.sh links it.
for _p in (_tests, os.path.join(folder_paths.base_path, "custom_nodes")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import tinysd  # noqa: E402
from texttune.shapeworld import model as shapeworld_model  # noqa: E402
from texttune.shapeworld import reward as shapeworld_reward  # noqa: E402
from texttune.trainers import rewards  # noqa: E402

tinysd.register()
shapeworld_model.register()
rewards.register_kind(shapeworld_reward.KIND)

NODE_CLASS_MAPPINGS = {}
