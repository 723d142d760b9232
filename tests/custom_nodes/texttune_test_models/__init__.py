"""Test-only custom node: registers the TinySD model config so CheckpointLoaderSimple loads
TinySD checkpoints in a real server. Loaded by tests and the demo through an
extra_model_paths.yaml `custom_nodes:` entry; never installed for users."""
import os
import sys

_tests = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _tests not in sys.path:
    sys.path.insert(0, _tests)

import tinysd  # noqa: E402

tinysd.register()

NODE_CLASS_MAPPINGS = {}
