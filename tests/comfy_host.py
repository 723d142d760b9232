"""The ComfyUI host for tests, benchmarks and the demo: where it is, in-process set-up, and
redirection of every ComfyUI folder away from the install. The one home of these steps."""
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def comfyui_path() -> str:
    """$COMFYUI_PATH, else the host prepared by scripts/setup_host.sh."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        marker = os.path.join(REPO, ".host", "comfyui_path")
        if not os.path.exists(marker):
            raise RuntimeError("No ComfyUI host: run `make test` (it runs scripts/setup_host.sh first).")
        with open(marker, encoding="utf-8") as f:
            path = f.read().strip()
    if not os.path.isfile(os.path.join(path, "main.py")):
        raise RuntimeError(f"{path} has no main.py: point COMFYUI_PATH at a ComfyUI folder.")
    return path


def setup_in_process() -> str:
    """Make ComfyUI and the pack (as `texttune`) importable in this process, on the CPU when there is
    no GPU. Call before importing anything from ComfyUI or TextTune; returns the ComfyUI path."""
    comfy = comfyui_path()
    for p in (TESTS, os.path.join(comfy, "custom_nodes"), comfy):
        if p not in sys.path:
            sys.path.insert(0, p)
    import torch
    from comfy.cli_args import args
    args.cpu = not torch.cuda.is_available()
    import utils.extra_config  # noqa: F401  (must precede `import nodes`, see research/comfyui.md §10)
    return comfy


def redirect_folders(base: str) -> str:
    """Point output, temp, input and the model folders of this process at `base`."""
    import folder_paths
    folder_paths.set_output_directory(os.path.join(base, "output"))
    folder_paths.set_temp_directory(os.path.join(base, "temp"))
    folder_paths.set_input_directory(os.path.join(base, "input"))
    for kind in ("embeddings", "loras", "text_encoders", "checkpoints", "reward_models"):
        d = os.path.join(base, "models", kind)
        os.makedirs(d, exist_ok=True)
        # reward_models is the pack's; if the pack is not imported yet, it sets the extensions later
        exts = folder_paths.folder_names_and_paths.get(kind, ([], set()))[1]
        folder_paths.folder_names_and_paths[kind] = ([d], exts)
    return base
