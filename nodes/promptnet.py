"""TextTuneLoadPromptNet and TextTuneTrainPromptNet: ProFusion's PromptNet (research/methods.md §3.1)
from models/promptnet/, and its per-image fine-tuning. Sampling with it is an input of the fusion
nodes (nodes/fusion.py)."""
import os

import torch
from comfy_api.latest import io

import folder_paths

from ..trainers import engine, formats, plot
from ..trainers import promptnet as pn
from ..trainers.comfy_adapter import Diffusion, TextEncoder
from ..trainers.data import digest, prepare_pixels
from ..trainers.files import check_name
from ..trainers.lora import UnetLora
from ..trainers.runs import RunFolder
from . import common
from .progress import Reporter

FOLDER = "promptnet"
EXTENSIONS = {".safetensors", ".sft", ".bin"}
PromptNetType = io.Custom("TEXTTUNE_PROMPTNET")
RELEASE_PARTS = ("promptnet", "openclip")


common.register_model_folder(FOLDER, EXTENSIONS)        # models/promptnet/


def where() -> str:
    return common.model_folders(FOLDER)


def model_choices() -> list[str]:
    """Release folders as '<folder>/' (any folder holding promptnet/), and our files outside them."""
    releases, singles = set(), set()
    for name in folder_paths.get_filename_list(FOLDER):
        parts = name.replace(os.sep, "/").split("/")
        cut = next((i for i, p in enumerate(parts[:-1]) if p in RELEASE_PARTS), None)
        if cut is not None:
            if cut:
                releases.add("/".join(parts[:cut]) + "/")
        elif parts[-1].endswith((".safetensors", ".sft")):
            singles.add("/".join(parts))
    return sorted(releases) + sorted(s for s in singles if not any(s.startswith(r) for r in releases))


def resolve(name: str) -> str:
    """Path of a release folder ('<name>/') or a file, as model_choices names them."""
    folder = name.endswith("/")
    for root in folder_paths.get_folder_paths(FOLDER):
        path = common.inside(root, name.rstrip("/"))
        if path and (os.path.isdir(path) if folder else os.path.isfile(path)):
            return path
    if folder:
        raise FileNotFoundError(f"The PromptNet folder '{name}' is not in {where()}: put ProFusion's released folder "
                                f"there ({pn.RELEASE_LAYOUT}), then refresh the node list (press R).")
    raise FileNotFoundError(f"The PromptNet file '{name}' is not in {where()}: put it there (Train PromptNet saves "
                            f"there), then refresh the node list (press R).")


def load(name: str) -> pn.PromptNet:
    if not name or name == "none":
        raise FileNotFoundError(f"No PromptNet chosen: put ProFusion's released folder ({pn.RELEASE_LAYOUT}) or a "
                                f"file from Train PromptNet in {where()}, refresh (press R) and choose it.")
    path = resolve(name)
    if name.endswith("/"):
        return pn.load_release(path, name)
    vision = pn.file_metadata(path)["vision"]
    return pn.load_file(path, name, resolve(vision if vision.endswith("/") else vision + "/"))


class LoadPromptNet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        choices = model_choices()
        return io.Schema(
            node_id="TextTuneLoadPromptNet",
            display_name="Load PromptNet (TextTune)",
            category="TextTune/loaders",
            description="Loads ProFusion's PromptNet (an image encoder that makes a word S* of the reference image "
                        "at every denoising step) with its vision tower, from models/promptnet/: the released "
                        "folder (promptnet/ + openclip/) or a file saved by Train PromptNet. Nothing is downloaded.",
            inputs=[
                io.Combo.Input("promptnet", options=choices or ["none"],
                               tooltip="A released ProFusion folder ('<name>/', holding promptnet/config.json + "
                                       "diffusion_pytorch_model.safetensors or .bin and openclip/) or a "
                                       "<name>.safetensors from Train PromptNet, in models/promptnet/."),
            ],
            outputs=[PromptNetType.Output(display_name="PROMPTNET",
                                          tooltip="For the fusion samplers' promptnet input and Train PromptNet.")],
        )

    @classmethod
    def execute(cls, promptnet) -> io.NodeOutput:
        return io.NodeOutput(load(promptnet))


def sampling_inputs() -> list:
    """The optional PromptNet inputs of the fusion sampler nodes."""
    return [
        PromptNetType.Input("promptnet", optional=True,
                            tooltip="Optional: a PromptNet (Load PromptNet). S* of the reference image is recomputed "
                                    "at every step from the current latent and put where the placeholder word stands "
                                    "in the positive (which must come from Concept Prompt). Needs promptnet_image "
                                    "and vae."),
        io.Image.Input("promptnet_image", optional=True,
                       tooltip="The reference image PromptNet reads (one image, or one per latent in the batch); it "
                               "is VAE-encoded at the latent's size."),
        io.Vae.Input("vae", optional=True, tooltip="The VAE that encodes promptnet_image (the checkpoint's VAE)."),
        io.String.Input("placeholder", optional=True, default="holder",
                        tooltip="The word of the positive prompt that S* replaces (ProFusion: holder, e.g. 'a holder "
                                "in Ghibli style'). Set the Concept Prompt's concept to the same word so gamma "
                                "applies to it."),
    ]


def sampling_promptnet(promptnet, promptnet_image, vae, placeholder):
    """The fusion nodes' `promptnet` argument: None, or what trainers.fusion.make_guider takes."""
    if promptnet is None:
        given = [n for n, v in (("promptnet_image", promptnet_image), ("vae", vae)) if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} only used with a PromptNet: "
                             f"connect Load PromptNet to promptnet, or disconnect {' and '.join(given)}.")
        return None
    return promptnet, promptnet_image, vae, placeholder or "holder"


class TrainPromptNet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneTrainPromptNet",
            display_name="Train PromptNet (ProFusion, TextTune)",
            category="TextTune/train",
            description="Fine-tunes a PromptNet on one subject (ProFusion's per-image customisation): the image is "
                        "both reference and target of the diffusion loss of 'a photo of S*'. Optionally trains a "
                        "LoRA on the UNet's attention q/k/v too. Saves models/promptnet/<name>.safetensors (Load "
                        "PromptNet reads it) and models/loras/<name>.safetensors (kohya keys: the core Load LoRA "
                        "node applies it). The input PromptNet, MODEL and CLIP are not changed.",
            inputs=[
                PromptNetType.Input("promptnet", tooltip="The PromptNet to start from (Load PromptNet)."),
                io.Model.Input("model", tooltip="The diffusion model S* is made for (ProFusion: SD2-base). Frozen; a "
                                                "LoRA on its attention trains if train_lora is on."),
                io.Clip.Input("clip", tooltip="The text encoder of the same checkpoint (frozen)."),
                io.Vae.Input("vae", tooltip="Encodes the training images (once)."),
                io.Image.Input("images", tooltip="The subject: usually one image (a batch of a few works). Scaled and "
                                                 "centre-cropped to the resolution."),
                io.String.Input("name", default="my-promptnet",
                                tooltip="Name of the saved files models/promptnet/<name>.safetensors and (with "
                                        "train_lora) models/loras/<name>.safetensors. Letters, digits, _ - . only."),
                io.String.Input("prompt", default="a photo of holder",
                                tooltip="The training prompt, with the placeholder word where S* goes (ProFusion: "
                                        "'a photo of ' + S*)."),
                io.String.Input("placeholder", default="holder",
                                tooltip="The word of the prompt that S* replaces."),
                io.Int.Input("steps", default=50, min=1, max=100000,
                             tooltip="Optimisation steps (ProFusion: about 50-100 for one image)."),
                io.Float.Input("learning_rate", default=2e-5, min=1e-8, max=1e-1, step=1e-6, round=1e-8,
                               tooltip="AdamW learning rate of PromptNet (ProFusion: 2e-5), constant; weight decay "
                                       "0.01."),
                io.Boolean.Input("train_lora", default=True,
                                 tooltip="Also train a LoRA on the UNet's attention to_q/to_k/to_v (ProFusion tunes "
                                         "those projections with PromptNet)."),
                io.Int.Input("lora_rank", default=4, min=1, max=128, tooltip="Rank of the UNet LoRA."),
                io.Float.Input("lora_learning_rate", default=1e-4, min=1e-8, max=1e-1, step=1e-6, round=1e-8,
                               tooltip="AdamW learning rate of the LoRA. Higher than PromptNet's: a LoRA starts "
                                       "from zero, where ProFusion moves the full q/k/v weights at 2e-5."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Images per step."),
                io.Int.Input("resolution", default=512, min=64, max=2048, step=64,
                             tooltip="Training size in pixels (SD2-base: 512)."),
                io.Boolean.Input("flip", default=True, tooltip="Random horizontal flips (of target and reference "
                                                              "together)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of every random choice; the same seed repeats the run exactly."),
                io.Int.Input("save_every", default=0, min=0, max=100000,
                             tooltip="Save a resumable checkpoint every N steps (0: only at the end or on cancel)."),
                io.String.Input("run_name", default="", tooltip="Run folder under output/texttune/ (default "
                                "promptnet-<name>). Queueing the same run again resumes it."),
            ],
            outputs=[
                PromptNetType.Output(display_name="PROMPTNET", tooltip="The fine-tuned PromptNet (the input one is "
                                                                      "unchanged)."),
                io.Model.Output(display_name="MODEL", tooltip="The model with the trained LoRA applied (the input "
                                                              "MODEL itself without train_lora)."),
                io.String.Output(display_name="name", tooltip="Name of the saved files."),
                io.LossMap.Output(display_name="loss", tooltip="Loss per step, for the core Plot Loss Graph node."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, promptnet, model, clip, vae, images, name, prompt, placeholder, steps, learning_rate,
                train_lora, lora_rank, lora_learning_rate, batch_size, resolution, flip, seed, save_every,
                run_name) -> io.NodeOutput:
        import comfy.sd
        name = check_name((name or "").strip(), "PromptNet name")
        run_name = check_name((run_name or "").strip() or f"promptnet-{name}", "Run name")
        path = os.path.join(common.models_dir(FOLDER), name + ".safetensors")
        lora_path = os.path.join(common.models_dir("loras"), name + ".safetensors")
        formats.check_overwrite(path, name, "A PromptNet", key="name")
        if train_lora:
            formats.check_overwrite(lora_path, name, "A LoRA", key="name")
        diffusion, text = Diffusion(model), TextEncoder(clip)
        common.check_model_clip_match(diffusion, text)
        pn.check_model(model, promptnet)
        config = {"method": "promptnet", "name": name, "promptnet": promptnet.source, "prompt": prompt,
                  "placeholder": placeholder, "steps": steps, "learning_rate": learning_rate,
                  "train_lora": bool(train_lora), "lora_rank": lora_rank if train_lora else None,
                  "lora_learning_rate": lora_learning_rate if train_lora else None, "batch_size": batch_size,
                  "resolution": resolution, "flip": bool(flip), "seed": seed, "save_every": save_every,
                  "base_model": type(model.model.model_config).__name__}
        node_id = cls.hidden.unique_id if cls.hidden else None
        with torch.inference_mode(False):
            placeholder_prompt = pn.PlaceholderPrompt(clip, prompt, placeholder)
            pixels = prepare_pixels(images, resolution)
            with torch.no_grad():
                latents = diffusion.to_model_latents(vae.encode(pixels).float()).clone()
                flipped = diffusion.to_model_latents(vae.encode(pixels.flip(2)).float()).clone()
            tokens, tokens_flipped = promptnet.image_tokens(pixels), promptnet.image_tokens(pixels.flip(2))
            config["images"], config["images_digest"] = len(pixels), digest(pixels)
            lora = UnetLora(model, pn.LORA_TARGETS, lora_rank, seed=seed, device=diffusion.device) \
                if train_lora else None
            method = pn.PromptNetTraining(diffusion, placeholder_prompt, promptnet, latents, flipped, tokens,
                                          tokens_flipped, batch_size, bool(flip), lora, lora_learning_rate)
            run = RunFolder(common.runs_root(), run_name, config)
            meta = {"name": name, "method": "promptnet", "base_model": config["base_model"], "run": run_name,
                    "vision": promptnet.vision_source, "started_from": promptnet.source, "prompt": prompt,
                    "placeholder": placeholder, "lora": name if train_lora else ""}

            def save(steps_done: int):
                pn.save_file(path, method.state_dict(), promptnet.config, {**meta, "steps": steps_done})
                if lora is not None:
                    formats.save_lora(lora_path, lora.kohya_state_dict(),
                                      {**meta, "steps": steps_done, "lora_targets": ",".join(pn.LORA_TARGETS)},
                                      key="name")
            result = common.train_and_save(method, run, save, steps=steps, seed=seed, save_every=save_every,
                                           schedule=engine.Schedule(learning_rate, steps), weight_decay=1e-2,
                                           oom_advice=engine.lower({"batch_size": batch_size, "resolution": resolution},
                                                                   also="set train_lora to false" if train_lora else ""),
                                           node_id=node_id, on_step=Reporter(node_id, run))   # live curve, and its history on reload
            trained = method.result(name + ".safetensors")
            lora_sd = lora.kohya_state_dict() if lora is not None else None
        png = plot.loss_plot({"loss": result.losses}, run.plot_path)
        out_model = model if lora_sd is None else comfy.sd.load_lora_for_models(model, None, lora_sd, 1.0, 0.0)[0]
        return io.NodeOutput(trained, out_model, name, {"loss": result.losses}, ui=common.output_image_ui(png))
