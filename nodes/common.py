"""Helpers shared by TextTune nodes: list inputs, destinations, training runs, result UI."""
import os

from comfy.model_management import InterruptProcessingException

import folder_paths

from ..trainers import engine


def single(value, name: str):
    """The one value of an input of a list-input node (is_input_list=True)."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"Input '{name}' got {len(value)} values; connect a single value.")
        return value[0]
    return value


def runs_root() -> str:
    return os.path.join(folder_paths.get_output_directory(), "texttune")


def models_dir(kind: str) -> str:
    """First registered folder of a model kind (embeddings, loras, text_encoders)."""
    return folder_paths.get_folder_paths(kind)[0]


def inside(root: str, rel: str, follow_links: bool = False) -> str | None:
    """root/rel as an absolute path if it stays inside root, else None. `follow_links`: judged where
    symbolic links lead, so a link inside root to a file elsewhere does not count as inside."""
    norm = os.path.realpath if follow_links else os.path.abspath
    root = norm(root)
    path = norm(os.path.join(root, rel))
    return path if os.path.commonpath([root, path]) == root else None


def output_image_ui(path: str) -> dict:
    """UI entry showing a PNG written under the output folder."""
    out = os.path.abspath(folder_paths.get_output_directory())
    rel = os.path.relpath(os.path.abspath(path), out)
    sub, name = os.path.split(rel)
    return {"images": [{"filename": name, "subfolder": sub, "type": "output"}]}


def check_model_clip_match(diffusion, text):
    if diffusion.context_dim is not None and diffusion.context_dim != text.output_width:
        raise ValueError(
            f"The MODEL expects text features of width {diffusion.context_dim} but the CLIP gives "
            f"{text.output_width} (SD1: 768, SD2: 1024, SDXL: 2048). Connect the MODEL and CLIP of the same "
            f"checkpoint.")


def train_and_save(method, run, save, **train_args) -> engine.Result:
    """engine.train, then save(steps done) of the finished run. Cancel saves the last checkpoint's state
    first (queueing the run again resumes it), so what is learnt so far is usable."""
    try:
        result = engine.train(method, run, **train_args)
    except InterruptProcessingException:
        if run.latest_step():
            save(run.latest_step())
        raise
    save(result.steps_done)
    return result


ENGINE_METRICS = ("step", "loss", "lr", "time")        # what engine.train logs for every method


def loss_map(run, result: engine.Result) -> dict:
    """LOSS_MAP of a run: the loss and each metric the method logged, per step (core Plot Loss Graph)."""
    rows = run.read_metrics()
    keys = list(dict.fromkeys(k for r in rows for k in r if k not in ENGINE_METRICS))
    return {"loss": result.losses, **{k: [r[k] for r in rows if k in r] for k in keys}}
