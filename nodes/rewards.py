"""TextTuneLoadRewardModel, TextTuneCombineRewards and TextTuneScoreImages: reward models from
models/reward_models/, TextCraftor's weighted sum of them, and per-image scores."""
import os

import numpy as np
import torch
from comfy_api.latest import io, ui

import folder_paths

from ..trainers import data, plot, rewards
from . import common

FOLDER = "reward_models"
EXTENSIONS = {".safetensors", ".pth", ".pt", ".bin"}
NONE = "none"
RewardType = io.Custom("TEXTTUNE_REWARD")


common.register_model_folder(FOLDER, EXTENSIONS)        # models/reward_models/


def where() -> str:
    return common.model_folders(FOLDER)


def _model_folder(name: str) -> str | None:
    """'<folder>/' if the listed file `name` lies in a transformers model folder (one with config.json)."""
    head = os.path.dirname(name)
    if head:
        for root in folder_paths.get_folder_paths(FOLDER):
            path = common.inside(root, head)
            if path and os.path.isfile(os.path.join(path, "config.json")):
                return head.replace(os.sep, "/") + "/"
    return None


def model_choices() -> list[str]:
    """Files in models/reward_models/, and model folders in it as '<folder>/' (not their files)."""
    return sorted({_model_folder(n) or n for n in folder_paths.get_filename_list(FOLDER)})


def resolve(name: str) -> str:
    """Path of a file or folder named as `model_choices` names it."""
    for root in folder_paths.get_folder_paths(FOLDER):
        path = common.inside(root, name.rstrip("/"))
        if path and (os.path.isdir(path) if name.endswith("/") else os.path.isfile(path)):
            return path
    raise FileNotFoundError(f"'{name}' is not in {where()}: put it there, then refresh the node list (press R).")


def _missing(what: str, kind_title: str, expects: str) -> FileNotFoundError:
    return FileNotFoundError(f"{kind_title} needs {what}: {expects}. Put it in {where()} (a model folder as a "
                             f"sub-folder), then refresh the node list (press R) and choose it.")


class LoadRewardModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        kinds = list(rewards.KINDS)
        choices = model_choices()
        folders = [c for c in choices if c.endswith("/")]
        return io.Schema(
            node_id="TextTuneLoadRewardModel",
            display_name="Load Reward Model (TextTune)",
            category="TextTune/rewards",
            description="Loads a reward model from models/reward_models/ (nothing is downloaded): LAION aesthetic "
                        "v2, PickScore, HPS v2/v2.1 or CLIP score. Scores images differentiably, for reward "
                        "fine-tuning and for Score Images.",
            inputs=[
                io.Combo.Input("kind", options=kinds, default="pickscore" if "pickscore" in kinds else kinds[0],
                               tooltip="aesthetic: LAION aesthetic predictor v2 (an MLP file + clip_model). "
                                       "pickscore: the PickScore_v1 folder. hps: HPS_v2_compressed.pt or "
                                       "HPS_v2.1_compressed.pt. clip_score: any CLIP model folder."),
                io.Combo.Input("model", options=[NONE] + choices,
                               tooltip="The file or model folder ('<name>/') in models/reward_models/: the MLP "
                                       "(aesthetic), the .pt (hps) or the folder (pickscore, clip_score). 'none' "
                                       "for kinds that need no file."),
                io.Combo.Input("clip_model", options=[NONE] + folders, default=NONE,
                               tooltip="Only for aesthetic: the CLIP ViT-L/14 folder (openai/clip-vit-large-patch14, "
                                       "config.json + model.safetensors) in models/reward_models/."),
                io.Combo.Input("precision", options=["auto"] + list(rewards.PRECISIONS), default="auto",
                               tooltip="Weights and compute precision. auto: ComfyUI's choice for the device "
                                       "(fp16 on most GPUs, fp32 on the CPU)."),
            ],
            outputs=[RewardType.Output(display_name="REWARD", tooltip="The reward, for Combine Rewards, Score "
                                                                      "Images and reward fine-tuning.")],
        )

    @classmethod
    def execute(cls, kind, model, clip_model=NONE, precision="auto") -> io.NodeOutput:
        k = rewards.get_kind(kind)
        rewards.compute_dtype(precision)                  # refuses an unknown precision before any loading
        path = clip_path = None
        if k.needs != "nothing":
            if model == NONE:
                raise _missing(f"a {k.needs}", k.title, k.expects)
            path = resolve(model)
        if k.needs_clip:
            if clip_model == NONE:
                raise _missing("a CLIP ViT-L/14 folder as clip_model", k.title, k.expects)
            clip_path = resolve(clip_model)
        return io.NodeOutput(rewards.load(kind, path, clip_path, precision))


WEIGHT_HELP = ("γ of this reward. The sum is Σ γ·s·R with TextCraftor's fixed scales s (CLIP score and HPS: "
               "100·cos, aesthetic: 3·score, PickScore: 1·score); TextCraftor trained with γ = 0.5 CLIP score, "
               "1 aesthetic, 1 PickScore, 1 HPS.")


class CombineRewards(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        def weight(n, optional=False):
            return io.Float.Input(f"weight_{n}", default=1.0, min=-100.0, max=100.0, step=0.05, optional=optional,
                                  tooltip=WEIGHT_HELP + ("" if n in "ab" else f" Used when reward_{n} is connected."))
        return io.Schema(
            node_id="TextTuneCombineRewards",
            display_name="Combine Rewards (TextTune)",
            category="TextTune/rewards",
            description="TextCraftor's reward: Σ γ·s·R over 2-4 rewards, with its loss scales s (100 for CLIP "
                        "score and HPS cosines, 3 for aesthetic, 1 for PickScore). Training maximises it.",
            inputs=[
                RewardType.Input("reward_a", tooltip="First reward (Load Reward Model)."),
                weight("a"),
                RewardType.Input("reward_b", tooltip="Second reward."),
                weight("b"),
                RewardType.Input("reward_c", optional=True, tooltip="Optional third reward."),
                weight("c", optional=True),
                RewardType.Input("reward_d", optional=True, tooltip="Optional fourth reward (needs reward_c)."),
                weight("d", optional=True),
            ],
            outputs=[RewardType.Output(display_name="REWARD",
                                       tooltip="The weighted sum, usable wherever a reward is.")],
        )

    @classmethod
    def execute(cls, reward_a, weight_a, reward_b, weight_b, reward_c=None, weight_c=1.0, reward_d=None,
                weight_d=1.0) -> io.NodeOutput:
        if reward_d is not None and reward_c is None:
            raise ValueError("reward_d is connected but reward_c is not: connect the rewards in order (a, b, c, d).")
        pairs = [(reward_a, weight_a), (reward_b, weight_b), (reward_c, weight_c), (reward_d, weight_d)]
        pairs = [(r, w) for r, w in pairs if r is not None]
        return io.NodeOutput(rewards.Combined([r for r, _ in pairs], [w for _, w in pairs]))


def parse_prompts(text: str, batch: int) -> list[str]:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()] or [""]
    if len(lines) not in (1, batch):
        raise ValueError(f"{len(lines)} prompt lines for {batch} images: write one line per image, or one line "
                         f"for all of them.")
    return lines


def score_table(parts: dict) -> str:
    names = list(parts)
    rows = [["image"] + names]
    n = len(next(iter(parts.values())))
    rows += [[str(i + 1)] + [f"{float(parts[k][i]):.4f}" for k in names] for i in range(n)]
    rows.append(["mean"] + [f"{float(parts[k].float().mean()):.4f}" for k in names])
    widths = [max(len(r[c]) for r in rows) for c in range(len(names) + 1)]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows)


class ScoreImages(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneScoreImages",
            display_name="Score Images (TextTune)",
            category="TextTune/rewards",
            description="Scores each image with a reward and its prompt: a table of the scores (every part of a "
                        "combined reward, and its total) and a bar plot.",
            inputs=[
                io.Image.Input("images", tooltip="The images to score (a batch)."),
                RewardType.Input("reward", tooltip="From Load Reward Model or Combine Rewards."),
                io.String.Input("prompts", multiline=True, default="",
                                tooltip="The prompt of each image, one line per image, or one line for all. "
                                        "Aesthetic and ShapeWorld rewards ignore it."),
            ],
            outputs=[
                io.String.Output(display_name="scores", tooltip="A text table: one row per image, one column "
                                                                "per reward (and the total), then the means."),
                io.Image.Output(display_name="plot", tooltip="Bar plot of each image's score (the total for a "
                                                             "combined reward)."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, reward, prompts="") -> io.NodeOutput:
        frames = data.as_image_list(images)
        if not frames:
            raise ValueError(data.EMPTY_IMAGES + " to score.")
        pixels = torch.stack([data.rgb(f) for f in frames]).movedim(-1, 1)
        lines = parse_prompts(prompts, len(pixels))
        with torch.no_grad():
            parts = reward.parts(pixels, lines)
        parts = {k: v.detach().float().cpu() for k, v in parts.items()}
        text = score_table(parts)
        main = list(parts)[-1]
        chart = plot.bar_chart(parts[main].tolist(), [str(i + 1) for i in range(len(pixels))], main)
        image = torch.from_numpy(np.asarray(chart, dtype=np.float32) / 255.0)[None]
        shown = {**ui.PreviewImage(image, cls=cls).as_dict(), **ui.PreviewText(text).as_dict()}
        return io.NodeOutput(text, image, ui=shown)
