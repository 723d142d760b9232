"""Safe names and atomic writes: nothing half-written, nothing outside the intended folder."""
import json
import os
import re
import tempfile

import safetensors.torch
import torch

NAME_RULE = ("1-64 characters from letters, digits, '_', '-' and '.', starting with a letter or digit "
             "(no spaces, slashes or '..')")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_name(value: str, what: str) -> str:
    """Return `value` if it is a safe file/token name, else raise naming the rule."""
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        shown = repr(value) if isinstance(value, str) and len(value) <= 80 else repr(str(value)[:80]) + "…"
        raise ValueError(f"{what} {shown} is not allowed: use {NAME_RULE}.")
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


PARTIAL_PREFIX, PARTIAL_SUFFIX = ".texttune-", ".partial"


def remove_partials(folder: str, prefix: str = PARTIAL_PREFIX):
    """Delete the temporary files of writes that never finished (a process killed mid-write) in `folder`."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(prefix) and name.endswith(PARTIAL_SUFFIX):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass


def atomic_write(path: str, write) -> str:
    """Write through `write(tmp_path)` into a temporary file beside `path`, then rename: readers see
    the old file or the whole new one, never a part. A temporary file of an earlier write of `path`
    that was killed before its rename is removed first (writes of one file do not overlap here)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prefix = f"{PARTIAL_PREFIX}{os.path.basename(path)}-"
    remove_partials(folder, prefix)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=PARTIAL_SUFFIX, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())           # mkstemp makes 0600; give files the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_safetensors(tensors: dict, path: str, metadata: dict | None = None) -> str:
    """Atomically write tensors (moved to CPU, contiguous) as safetensors with string metadata."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda tmp: safetensors.torch.save_file(cpu, tmp, metadata=meta))


def write_json(obj, path: str) -> str:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
    return atomic_write(path, write)


def unreadable_safetensors(path: str, error: Exception) -> ValueError:
    return ValueError(f"{os.path.basename(path)} is not a readable safetensors file ({error}): it is damaged or not "
                      f"safetensors at all, e.g. a download or copy that was cut short. Replace it with a complete "
                      f"copy.")


def load_safetensors(path: str, device="cpu"):
    """(tensors, metadata) of a safetensors file; a ValueError naming the file if it cannot be read."""
    try:
        with safetensors.safe_open(path, framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors' own error: a bad header, or data cut short
        raise unreadable_safetensors(path, e) from e
    return tensors, meta


def load_torch_weights(path: str):
    """Read a pickle-based weights file without executing code in it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything beyond plain tensors and containers
        raise ValueError(f"{os.path.basename(path)} was refused: it is not a plain weights file "
                         f"(only safetensors, or pickles holding tensors alone, are read; nothing in it was run). "
                         f"Use a .safetensors version of it, or a file that holds only tensors. Details: {e}") from e


SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")


def load_weights(path: str, device=None) -> dict[str, torch.Tensor]:
    """The tensors of a weights file by its extension: safetensors, or any other (.pth, .pt, .bin, .ckpt)
    through `load_torch_weights`. A pickle must hold a flat {name: tensor} dict (or one under
    "state_dict", as training checkpoints keep it). `device`: where the tensors go (default: where
    the reader puts them)."""
    name = os.path.basename(path)
    if path.lower().endswith(SAFETENSORS_EXTENSIONS):
        tensors, _ = load_safetensors(path, device) if device is not None else load_safetensors(path)
        return tensors
    obj = load_torch_weights(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{name} holds a {type(obj).__name__}, not a dict of weights.")
    odd = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise ValueError(f"{name} holds entries that are not weights (e.g. {odd[0]!r}); expected a state dict of "
                         f"tensors.")
    if device is not None:
        obj = {k: v.to(device) for k, v in obj.items()}
    return obj


def read_json(path: str):
    """A JSON file's content; a ValueError naming the file if it is not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{os.path.basename(path)} is not valid JSON: {e}") from e
