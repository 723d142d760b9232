"""Shared set-up of TextTune benchmarks: the ComfyUI host of scripts/setup_host.sh in-process
(CPU when there is no GPU), every ComfyUI folder redirected into a temporary directory, machine
information and the result file.

Import this module before anything from ComfyUI or TextTune.
"""
import atexit
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
TESTS = os.path.join(REPO, "tests")
RESULTS = os.path.join(BENCH, "results")


sys.path.insert(0, TESTS)
from comfy_host import redirect_folders as _redirect, setup_in_process  # noqa: E402

COMFY = setup_in_process()
import folder_paths  # noqa: E402,F401
import torch  # noqa: E402


def redirect_folders() -> str:
    """Point output/temp/input and the model folders at a fresh temporary directory, removed when the
    process exits (training runs leave checkpoints there: GBs over a quality run); return it."""
    base = tempfile.mkdtemp(prefix="texttune-bench-")
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    return _redirect(base)


def machine() -> dict:
    import comfy.model_management as mm
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(mm.get_torch_device()),
        "comfyui": _comfy_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _comfy_version():
    try:
        import comfyui_version
        return comfyui_version.__version__
    except Exception:
        return None


def command() -> str:
    """The command line that ran this benchmark, relative to the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    exe = os.path.abspath(sys.executable)
    if exe.startswith(REPO + os.sep):
        exe = os.path.relpath(exe, REPO)
    return " ".join([shlex.quote(exe), shlex.quote(script), *map(shlex.quote, sys.argv[1:])])


def write_result(name: str, data: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return path
