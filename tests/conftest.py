"""Test set-up: the ComfyUI host prepared by scripts/setup_host.sh, on CPU when there is no GPU,
with every ComfyUI folder redirected into a temporary directory."""
import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def comfyui_path() -> str:
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        marker = os.path.join(REPO, ".host", "comfyui_path")
        if not os.path.exists(marker):
            raise RuntimeError("No ComfyUI host: run `make test` (it runs scripts/setup_host.sh first).")
        path = open(marker).read().strip()
    return path


COMFY = comfyui_path()
for p in (TESTS, os.path.join(COMFY, "custom_nodes"), COMFY):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402
from comfy.cli_args import args  # noqa: E402

args.cpu = not torch.cuda.is_available()
# Tiny models on a small shared CPU: one thread avoids stalls from oversubscription (measured: a
# full suite took 548 s with default threads on a loaded 2-core machine, 21 s with one).
torch.set_num_threads(1)
import utils.extra_config  # noqa: E402,F401  (must precede `import nodes`, see research/comfyui.md §10)
import folder_paths  # noqa: E402

_BASE = None


@pytest.fixture(scope="session", autouse=True)
def comfy_dirs(tmp_path_factory):
    """Output, temp, input and model folders of this test session, away from the real install."""
    global _BASE
    base = tmp_path_factory.mktemp("comfy")
    _BASE = base
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    folder_paths.set_input_directory(str(base / "input"))
    for kind in ("embeddings", "loras", "text_encoders", "checkpoints"):
        d = base / "models" / kind
        d.mkdir(parents=True)
        folder_paths.folder_names_and_paths[kind] = ([str(d)], folder_paths.folder_names_and_paths[kind][1])
    yield base


@pytest.fixture(scope="session")
def texttune():
    import texttune as pack
    return pack


@pytest.fixture(scope="session")
def tiny():
    import tinysd
    tinysd.register()
    return tinysd
