"""Reward fine-tuning through an unrolled sampler: TextCraftor (the text encoder, stage 1) and a
UNet LoRA (stage 2, AlignProp-style)."""
import hashlib
import os

import torch
from comfy_api.latest import io

import folder_paths

from ..trainers import engine, formats, plot, text_encoders
from ..trainers.comfy_adapter import Diffusion, TextEncoder
from ..trainers.files import check_name
from ..trainers.runs import RunFolder
from ..trainers.lora import ALL_UNET_TARGETS, UNET_TARGETS, UnetLora, parse_targets
from ..trainers.textcraftor import RewardLora, TextCraftor, parse_prompts
from . import common
from .rewards import RewardType

def read_prompt_file(rel: str) -> list[str]:
    """The prompts of a text file (one per line) inside ComfyUI's input folder; nothing outside it is read."""
    rel = (rel or "").strip()
    if not rel:
        return []
    root = folder_paths.get_input_directory()
    if any(ord(c) < 32 for c in rel):
        raise ValueError(f"Prompt file {rel!r} has control characters (such as NUL) in its name: give the file's "
                         f"path inside ComfyUI's input folder ({root}), e.g. prompts.txt.")
    path = common.inside(root, rel, follow_links=True)
    if path is None:
        raise ValueError(f"Prompt file {rel!r} is outside ComfyUI's input folder ({root}): only files inside it are "
                         f"read. Put the file there and give its path inside it, e.g. prompts.txt.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Prompt file {rel!r} was not found in ComfyUI's input folder ({root}): put a text "
                                f"file there with one prompt per line.")
    try:
        with open(path, encoding="utf-8") as f:
            prompts = parse_prompts(f.read())
    except UnicodeDecodeError as e:
        raise ValueError(f"Prompt file {rel!r} is not UTF-8 text ({e}): save it as UTF-8 text with one prompt per "
                         f"line.") from e
    if not prompts:
        raise ValueError(f"Prompt file {rel!r} holds no prompts: write one prompt per line.")
    return prompts


def unroll_inputs(what: str) -> list:
    """The inputs both reward trainers share, after their own first ones."""
    return [
        io.Model.Input("model", tooltip="The diffusion model (SD1.x or SD2.x)." + (
            " Frozen." if what == "encoder" else " Frozen; a LoRA on its attention layers trains.")),
        io.Clip.Input("clip", tooltip=(
            "Its text encoder: the starting point. A trainable copy of its weights is trained; the input CLIP "
            "itself is not changed." if what == "encoder" else
            "Its text encoder, frozen. Connect the CLIP from Train Text Encoder on Rewards to tune the UNet on "
            "top of a TextCraftor encoder (TextCraftor + UNet).")),
        io.Vae.Input("vae", tooltip="Decodes the sampled latents with gradients for the reward. A TAESD "
                                    "(core Load VAE: taesd) decodes far cheaper, at the cost of judging "
                                    "TAESD's pictures."),
        RewardType.Input("reward", tooltip="What to raise: from Load Reward Model or Combine Rewards "
                                           "(TextCraftor: 0.5 CLIP score + 1 aesthetic + 1 PickScore + 1 HPS)."),
        io.String.Input("prompts", multiline=True, default="",
                        tooltip="Training prompts, one per line (and/or a prompt file below). Each must fit "
                                "one 77-token pass of the text encoder."),
        io.String.Input("prompt_file", default="",
                        tooltip="Optional text file with one prompt per line, as a path inside ComfyUI's "
                                "input folder (e.g. prompts.txt). Files outside that folder are refused."),
    ]


def unroll_settings(steps: int, lr: float, lr_tip: str, batch_tip: str) -> list:
    return [
        io.Int.Input("steps", default=steps, min=1, max=1000000,
                     tooltip="Optimisation steps (iterations). TextCraftor saw gains within 500-1000 "
                             "iterations of 32 prompts."),
        io.Float.Input("learning_rate", default=lr, min=1e-9, max=1e-1, step=1e-7, round=1e-9, tooltip=lr_tip),
        io.Int.Input("batch_size", default=1, min=1, max=64, tooltip=batch_tip),
        io.Int.Input("sampling_steps", default=25, min=1, max=200,
                     tooltip="DDIM steps of each training image (TextCraftor: 25)."),
        io.Int.Input("grad_steps", default=5, min=1, max=200,
                     tooltip="K: the last K sampling steps keep their gradient, the earlier ones run without "
                             "(TextCraftor: 5 of 25). Memory and time grow with K."),
        io.Float.Input("cfg", default=7.5, min=0.0, max=30.0, step=0.1,
                       tooltip="Classifier-free guidance scale of the training images (TextCraftor: 7.5). "
                               "The negative is the empty prompt."),
        io.Int.Input("resolution", default=512, min=64, max=2048, step=64,
                     tooltip="Size of the training images in pixels (512 for SD1.5, 768 for SD2)."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                     tooltip="Seed of the prompt order and the noise; the same seed repeats the run exactly."),
        io.Int.Input("save_every", default=100, min=0, max=1000000,
                     tooltip="Save a resumable checkpoint (trained weights and AdamW's state) every N steps "
                             "(0: only at the end or on cancel)."),
    ]


def oom_advice(unroll: dict) -> str:
    """What to lower when an unrolled step runs out of memory: each of the grad_steps keeps a UNet
    call's inputs and replays the call in the backward pass."""
    return engine.lower({k: unroll[k] for k in ("grad_steps", "batch_size", "resolution")},
                        also="connect a TAESD as vae (core Load VAE: taesd), which decodes far cheaper")


def run_config(method: str, name: str, model, reward, lines: list[str], **settings) -> dict:
    return {"method": method, "name": name, "reward": reward.label, "prompts": len(lines),
            "prompts_digest": hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16], **settings,
            "base_model": type(model.model.model_config).__name__}


def prompt_lines(prompts: str, prompt_file: str) -> list[str]:
    lines = parse_prompts(prompts) + read_prompt_file(prompt_file)
    if not lines:
        raise ValueError("No prompts: write one prompt per line in 'prompts', or give a prompt file in "
                         f"ComfyUI's input folder ({folder_paths.get_input_directory()}).")
    return lines


class TrainRewardTextEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneTrainRewardTextEncoder",
            display_name="Train Text Encoder on Rewards (TextCraftor, TextTune)",
            category="TextTune/train",
            description="TextCraftor: fine-tunes the whole text encoder so that images drawn from your prompts score "
                        "higher on a reward model (aesthetic, PickScore, HPS, CLIP score or a combination). Saves "
                        "models/text_encoders/<name>.safetensors (HF CLIPTextModel keys: the core Load CLIP node and "
                        "Load Fine-Tuned Text Encoder load it). The model, VAE, reward and input CLIP are not changed.",
            inputs=[
                *unroll_inputs("encoder"),
                io.String.Input("encoder_name", default="textcraftor",
                                tooltip="Name of the saved file models/text_encoders/<name>.safetensors. Letters, "
                                        "digits, _ - . only."),
                *unroll_settings(1000, 1e-6, "AdamW learning rate of the text encoder (TextCraftor: 1e-6), "
                                             "constant; weight decay 0.01, no gradient clipping, as the official "
                                             "code.",
                                 "Prompts per step. TextCraftor: 4 per GPU on eight 80 GB GPUs; every prompt "
                                 "costs a full sampling run and a decode with gradients."),
                io.String.Input("run_name", default="", tooltip="Run folder under output/texttune/ (default "
                                "textcraftor-<encoder_name>). Queueing the same run again resumes it. A checkpoint "
                                "holds the encoder and AdamW's state: about 1.5 GB for CLIP-L."),
                common.preview_every_input(),
            ],
            outputs=[
                io.Clip.Output(display_name="CLIP", tooltip="A copy of the CLIP with the trained encoder (the "
                                                            "input CLIP is unchanged)."),
                io.String.Output(display_name="name", tooltip="Name of the saved text-encoder file."),
                io.LossMap.Output(display_name="loss", tooltip="Per step: the loss (−Σγ·s·reward) and each "
                                                               "reward's score, for the core Plot Loss Graph node."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, clip, vae, reward, prompts, prompt_file, encoder_name, steps, learning_rate, batch_size,
                sampling_steps, grad_steps, cfg, resolution, seed, save_every, run_name,
                preview_every=0) -> io.NodeOutput:
        name = check_name((encoder_name or "").strip(), "Encoder name")
        run_name = check_name((run_name or "").strip() or f"textcraftor-{name}", "Run name")
        lines = prompt_lines(prompts, prompt_file)
        path = os.path.join(common.models_dir("text_encoders"), name + ".safetensors")
        formats.check_overwrite(path, name, "A text-encoder", key="name")
        diffusion, text = Diffusion(model), TextEncoder(clip)
        common.check_model_clip_match(diffusion, text)
        unroll = dict(batch_size=batch_size, sampling_steps=sampling_steps, grad_steps=grad_steps, cfg=cfg,
                      resolution=resolution, seed=seed)
        config = run_config("textcraftor", name, model, reward, lines, steps=steps, learning_rate=learning_rate,
                            save_every=save_every, **unroll)
        node_id = cls.hidden.unique_id if cls.hidden else None
        with torch.inference_mode(False):
            method = TextCraftor(diffusion, text, vae, reward, lines, **unroll)
            run = RunFolder(common.runs_root(), run_name, config)
            meta = {"name": name, "method": "textcraftor", "base_model": config["base_model"], "run": run_name,
                    "reward": reward.label, "grad_steps": grad_steps, "sampling_steps": sampling_steps}

            def save(steps_done: int):
                formats.save_text_encoder(path, method.encoder_state_dict(), {**meta, "steps": steps_done})
            # AdamW as the official code: torch's defaults but for weight decay 0.01, no gradient clipping
            result = common.train_and_save(method, run, save, steps=steps, seed=seed, save_every=save_every,
                                           schedule=engine.Schedule(learning_rate, steps), weight_decay=1e-2,
                                           oom_advice=oom_advice(unroll), node_id=node_id, on_step=common.reporter(
                                               node_id, run, method, vae, resolution, seed, preview_every, cfg))
            tensors = method.encoder_state_dict()
        losses = common.loss_map(run, result)               # the loss, then each reward's score
        png = plot.loss_plot({"loss": result.losses}, run.plot_path)
        tensors = {k: v.to(clip.patcher.offload_device) for k, v in tensors.items()}   # patches live off the GPU
        out_clip = text_encoders.apply(clip, text_encoders.full_weights(tensors, name), 1.0)
        return io.NodeOutput(out_clip, name, losses, ui=common.output_image_ui(png))


# AlignProp's aesthetic and HPS settings: AdamW at 1e-3 with weight decay 0.1, the gradient of 0.01 x the
# loss clipped to norm 5 (here: the gradient of the loss clipped to 5 / 0.01).
LORA_WEIGHT_DECAY, LORA_MAX_GRAD_NORM = 0.1, 500.0


class TrainRewardLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneTrainRewardLoRA",
            display_name="Train UNet LoRA on Rewards (TextCraftor + UNet, TextTune)",
            category="TextTune/train",
            description="Trains a LoRA on the UNet's attention layers so that images drawn from your prompts score "
                        "higher on a reward model, by backpropagating the reward through the last sampling steps "
                        "(AlignProp; TextCraftor's second stage). Saves models/loras/<name>.safetensors with kohya "
                        "lora_unet_ keys: the core Load LoRA node applies it (as do A1111, Forge and kohya). The "
                        "model, CLIP, VAE and reward are not changed.",
            inputs=[
                *unroll_inputs("lora"),
                io.String.Input("lora_name", default="reward-lora",
                                tooltip="Name of the saved file models/loras/<name>.safetensors. Letters, digits, "
                                        "_ - . only."),
                io.Int.Input("lora_rank", default=4, min=1, max=128, tooltip="LoRA rank (AlignProp: 4)."),
                io.String.Input("lora_targets", default=ALL_UNET_TARGETS,
                                tooltip=f"Which projections of every attention block (self and cross) get a LoRA: "
                                        f"any of {', '.join(UNET_TARGETS)}, comma-separated."),
                *unroll_settings(500, 1e-3, "AdamW learning rate of the LoRA (AlignProp: 1e-3), constant; weight "
                                            "decay 0.1 and gradient-norm clipping, as AlignProp.",
                                 "Prompts per step. TextCraftor trained the UNet with 1 per GPU."),
                io.String.Input("run_name", default="", tooltip="Run folder under output/texttune/ (default "
                                "reward-lora-<lora_name>). Queueing the same run again resumes it."),
                common.preview_every_input(),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="A copy of the model with the LoRA applied (the "
                                                              "input MODEL is unchanged)."),
                io.String.Output(display_name="name", tooltip="Name of the saved LoRA file."),
                io.LossMap.Output(display_name="loss", tooltip="Per step: the loss (−Σγ·s·reward) and each "
                                                               "reward's score, for the core Plot Loss Graph node."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, clip, vae, reward, prompts, prompt_file, lora_name, lora_rank, lora_targets, steps,
                learning_rate, batch_size, sampling_steps, grad_steps, cfg, resolution, seed, save_every,
                run_name, preview_every=0) -> io.NodeOutput:
        import comfy.sd
        name = check_name((lora_name or "").strip(), "LoRA name")
        run_name = check_name((run_name or "").strip() or f"reward-lora-{name}", "Run name")
        targets = parse_targets(lora_targets, UNET_TARGETS)
        lines = prompt_lines(prompts, prompt_file)
        path = os.path.join(common.models_dir("loras"), name + ".safetensors")
        formats.check_overwrite(path, name, "A LoRA", key="name")
        diffusion, text = Diffusion(model), TextEncoder(clip)
        common.check_model_clip_match(diffusion, text)
        unroll = dict(batch_size=batch_size, sampling_steps=sampling_steps, grad_steps=grad_steps, cfg=cfg,
                      resolution=resolution, seed=seed)
        config = run_config("reward-lora", name, model, reward, lines, steps=steps, learning_rate=learning_rate,
                            lora_rank=lora_rank, lora_targets=targets, save_every=save_every, **unroll)
        node_id = cls.hidden.unique_id if cls.hidden else None
        with torch.inference_mode(False):
            lora = UnetLora(model, targets, lora_rank, seed=seed, device=diffusion.device)
            method = RewardLora(diffusion, text, vae, reward, lines, lora, **unroll)
            run = RunFolder(common.runs_root(), run_name, config)
            meta = {"name": name, "method": "reward-lora", "base_model": config["base_model"], "run": run_name,
                    "reward": reward.label, "grad_steps": grad_steps, "sampling_steps": sampling_steps,
                    "lora_targets": ",".join(targets)}

            def save(steps_done: int):
                formats.save_lora(path, lora.kohya_state_dict(), {**meta, "steps": steps_done}, key="name")
            result = common.train_and_save(method, run, save, steps=steps, seed=seed, save_every=save_every,
                                           schedule=engine.Schedule(learning_rate, steps),
                                           weight_decay=LORA_WEIGHT_DECAY, max_grad_norm=LORA_MAX_GRAD_NORM,
                                           oom_advice=oom_advice(unroll), node_id=node_id, on_step=common.reporter(
                                               node_id, run, method, vae, resolution, seed, preview_every, cfg))
            lora_sd = lora.kohya_state_dict()
        losses = common.loss_map(run, result)
        png = plot.loss_plot({"loss": result.losses}, run.plot_path)
        out_model, _ = comfy.sd.load_lora_for_models(model, None, lora_sd, 1.0, 0.0)   # what the core LoraLoader does
        return io.NodeOutput(out_model, name, losses, ui=common.output_image_ui(png))
