"""Shared set-up of TextTune benchmarks: the ComfyUI host of scripts/setup_host.sh in-process
(CPU when there is no GPU), every ComfyUI folder redirected into a temporary directory, machine
information and the result file.

Import this module before anything from ComfyUI or TextTune.
"""
import argparse
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


def use_attention(name: str) -> str:
    """Point ComfyUI's cross-attention at `name`: "host" (the function ComfyUI chose for this machine:
    sub-quadratic attention on a CPU) or "pytorch" (torch's scaled_dot_product_attention, ComfyUI's
    choice on NVIDIA GPUs with torch 2); returns the function's name."""
    import comfy.ldm.modules.attention as attention
    if not hasattr(use_attention, "host"):
        use_attention.host = attention.optimized_attention
    fn = {"host": use_attention.host, "pytorch": attention.attention_pytorch}[name]
    attention.optimized_attention = attention.optimized_attention_masked = fn
    return fn.__name__


def count_flops(fn, grad: bool = False) -> int:
    """FLOPs of fn() counted by torch's FlopCounterMode (meta tensors allowed), with torch's attention
    (counted, and safe on the meta device); without gradients unless `grad`."""
    from torch.utils.flop_counter import FlopCounterMode
    import comfy.ldm.modules.attention as attention
    saved = attention.optimized_attention
    attention.optimized_attention = attention.attention_pytorch
    try:
        with torch.set_grad_enabled(grad), FlopCounterMode(display=False) as counter:
            fn()
    finally:
        attention.optimized_attention = saved
    return counter.get_total_flops()


def add_fresh_process_option(ap) -> None:
    """The internal --one option through which `in_fresh_process` hands a script its payload."""
    ap.add_argument("--one", help=argparse.SUPPRESS)


def answer_fresh_process(a, fn) -> bool:
    """In a process started by `in_fresh_process` (--one given): print fn(*payload) as the JSON line it
    reads back, and return True; otherwise return False."""
    if not a.one:
        return False
    print(json.dumps(fn(*json.loads(a.one))))
    return True


def in_fresh_process(script: str, payload, threads: int) -> dict:
    """Run `script --one <payload as JSON> --threads N` in a new process and return the JSON object it
    prints last. glibc's mmap threshold is fixed at 64 KiB there, so big buffers go back to the
    system when freed and the process's RSS follows its live memory."""
    import subprocess
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072",
           "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, os.path.abspath(script), "--one", json.dumps(payload), "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{cmd} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
