"""Helpers shared by TextTune nodes: list inputs, destinations, training runs, result UI."""
import os

from comfy.model_management import InterruptProcessingException
from comfy_api.latest import io

import folder_paths

from ..trainers import engine
from ..trainers.preview import PREVIEW_CFG, Preview
from .progress import Reporter


def single(value, name: str):
    """The one value of an input of a list-input node (is_input_list=True)."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"Input '{name}' got {len(value)} values; connect a single value.")
        return value[0]
    return value


def register_model_folder(name: str, extensions: set[str]):
    """models/<name>/ in ComfyUI's folder_paths, listing files with `extensions` (and keeping folders a
    user named in extra_model_paths.yaml, which sets no extension filter)."""
    known = folder_paths.folder_names_and_paths.get(name)
    if known is None:
        folder_paths.folder_names_and_paths[name] = ([os.path.join(folder_paths.models_dir, name)], set(extensions))
    elif not known[1]:
        folder_paths.folder_names_and_paths[name] = (known[0], set(extensions))


def model_folders(name: str) -> str:
    """The folders of a model kind, for messages."""
    return ", ".join(folder_paths.get_folder_paths(name))


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
    first (queueing the run again resumes it), so what is learnt so far is usable. A live `on_step`
    (a progress.Reporter) is closed however the run ends."""
    try:
        result = engine.train(method, run, **train_args)
    except InterruptProcessingException:
        if run.latest_step():
            save(run.latest_step())
        raise
    finally:
        close = getattr(train_args.get("on_step"), "close", None)
        if close is not None:
            close()
    save(result.steps_done)
    return result


def preview_every_input() -> io.Int.Input:
    """The trainers' `preview_every` input (optional and last, so saved workflows keep their widgets)."""
    return io.Int.Input("preview_every", default=0, min=0, max=100000, optional=True,
                        tooltip="Every N steps, draw one small picture with the weights as trained so far (a "
                                "fixed prompt and seed, a few sampling steps at the training resolution) and show "
                                "it on the node; saved in the run folder's samples/. 0: off. Each costs about "
                                "one short generation; training itself is unchanged.")


def reporter(node_id, run, method, vae, resolution: int, seed: int, preview_every=0,
             cfg: float = PREVIEW_CFG) -> Reporter:
    """The live progress of a run for the browser (nodes/progress.py), with a preview picture every
    `preview_every` steps (0: none) drawn by trainers/preview.py into <run>/samples/."""
    every = int(single(preview_every, "preview_every") or 0)
    if every < 0:
        raise ValueError(f"preview_every {every}: use 0 (off) or a number of steps.")
    preview = None
    if every:
        preview = Preview(method.diffusion, vae, method.preview_context, resolution, seed,
                          os.path.join(run.path, "samples"), cfg=cfg)
    return Reporter(node_id, run, preview=preview, preview_every=every)


ENGINE_METRICS = ("step", "loss", "lr", "time")        # what engine.train logs for every method


def loss_map(run, result: engine.Result) -> dict:
    """LOSS_MAP of a run: the loss and each metric the method logged, per step (core Plot Loss Graph)."""
    rows = run.read_metrics()
    keys = list(dict.fromkeys(k for r in rows for k in r if k not in ENGINE_METRICS))
    return {"loss": result.losses, **{k: [r[k] for r in rows if k in r] for k in keys}}
