"""TextTuneTrainTextualInversion: learn a new word from a few images."""
import os

import torch
from comfy_api.latest import io

from ..trainers import engine, formats, plot, templates
from ..trainers.comfy_adapter import Diffusion, TextEncoder
from ..trainers.data import digest, prepare_masks, prepare_pixels
from ..trainers.files import check_name
from ..trainers.runs import RunFolder
from ..trainers.textual_inversion import TextualInversion
from . import common


class TrainTextualInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneTrainTextualInversion",
            display_name="Train Textual Inversion (TextTune)",
            category="TextTune/train",
            description="Learns a new word from a few images of a concept and saves it as an embedding that "
                        "works as embedding:<name> in any prompt (ComfyUI, A1111, Forge).",
            is_input_list=True,
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model the word is learned for (frozen)."),
                io.Clip.Input("clip", tooltip="The text encoder of the same checkpoint (frozen)."),
                io.Vae.Input("vae", tooltip="VAE used once to encode the training images."),
                io.Image.Input("images", tooltip="3-5 images of the concept. Any sizes: each is scaled and "
                                                 "centre-cropped to the resolution. A list of images works too."),
                io.String.Input("token_name", default="my-concept",
                                tooltip="The new word: use it as embedding:<name>. Letters, digits, _ - . only."),
                io.String.Input("init_words", default="object",
                                tooltip="Ordinary word(s) close to the concept; the vectors start from them."),
                io.Int.Input("vectors", default=4, min=1, max=16,
                             tooltip="Vectors per token: more capture more detail but follow prompts less."),
                io.Combo.Input("template_set", options=["object", "style", "custom"], default="object",
                               tooltip="Captions used in training: object (a thing), style (an art style), or "
                                       "your own lines below."),
                io.Int.Input("steps", default=500, min=1, max=100000, tooltip="Total optimisation steps."),
                io.Float.Input("learning_rate", default=5e-3, min=1e-6, max=1.0, step=1e-4, round=1e-6,
                               tooltip="AdamW learning rate of the word's vectors."),
                io.Combo.Input("lr_schedule", options=["constant", "cosine", "linear"], default="constant",
                               tooltip="Learning-rate schedule over the steps."),
                io.Int.Input("batch_size", default=4, min=1, max=64, tooltip="Images per step."),
                io.Int.Input("resolution", default=512, min=64, max=2048, step=64,
                             tooltip="Training size in pixels (512 for SD1.5, 768 for SD2, 1024 for SDXL)."),
                io.Boolean.Input("flip", default=True, tooltip="Random horizontal flips (off for text or "
                                                                 "asymmetric subjects)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of every random choice; the same seed repeats the run exactly."),
                io.Int.Input("save_every", default=100, min=0, max=100000,
                             tooltip="Save a resumable checkpoint every N steps (0: only at the end or on cancel)."),
                io.String.Input("run_name", default="", tooltip="Run folder under output/texttune/ (default "
                                "ti-<token_name>). Queueing the same run again resumes it from its checkpoint."),
                io.Mask.Input("mask", optional=True, tooltip="Optional: white where the concept is; the loss "
                                                             "ignores the rest. One mask, or one per image."),
                io.String.Input("custom_templates", optional=True, multiline=True, default="",
                                tooltip="For template_set=custom: one caption per line with {} for the word."),
                common.preview_every_input(),
            ],
            outputs=[
                io.Clip.Output(display_name="CLIP", tooltip="The input CLIP, with the new embedding usable."),
                io.String.Output(display_name="embedding_name", tooltip="Write embedding:<this> in prompts."),
                io.LossMap.Output(display_name="loss", tooltip="Loss per step, for the core Plot Loss Graph node."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, clip, vae, images, token_name, init_words, vectors, template_set, steps,
                learning_rate, lr_schedule, batch_size, resolution, flip, seed, save_every, run_name,
                mask=None, custom_templates=None, preview_every=None) -> io.NodeOutput:
        s = common.single
        model, clip, vae = s(model, "model"), s(clip, "clip"), s(vae, "vae")
        token_name = check_name(s(token_name, "token_name").strip(), "Token name")
        run_name = check_name(s(run_name, "run_name").strip() or f"ti-{token_name}", "Run name")
        init_words, vectors, steps = s(init_words, "init_words"), s(vectors, "vectors"), s(steps, "steps")
        resolution, batch_size, seed = s(resolution, "resolution"), s(batch_size, "batch_size"), s(seed, "seed")
        tpl = templates.resolve(s(template_set, "template_set"), s(custom_templates or [""], "custom_templates"))
        config = {"method": "textual_inversion", "token_name": token_name, "init_words": init_words,
                  "vectors": vectors, "templates": tpl, "steps": steps, "learning_rate": s(learning_rate, "lr"),
                  "lr_schedule": s(lr_schedule, "lr_schedule"), "batch_size": batch_size,
                  "resolution": resolution, "flip": s(flip, "flip"), "seed": seed,
                  "save_every": s(save_every, "save_every"), "masked": mask is not None,
                  "base_model": type(model.model.model_config).__name__}

        schedule = engine.Schedule(config["learning_rate"], steps, config["lr_schedule"])
        node_id = cls.hidden.unique_id if cls.hidden else None
        diffusion, text = Diffusion(model), TextEncoder(clip)
        common.check_model_clip_match(diffusion, text)
        emb_path = os.path.join(common.models_dir("embeddings"), token_name + ".safetensors")
        formats.check_overwrite(emb_path, token_name, "An embedding")   # before training, not after it
        with torch.inference_mode(False):
            pixels = prepare_pixels(images, resolution)
            with torch.no_grad():
                latents = diffusion.to_model_latents(vae.encode(pixels).float()).clone()
                flipped = diffusion.to_model_latents(vae.encode(pixels.flip(2)).float()).clone()
            masks = prepare_masks(mask, len(pixels), resolution, latents.shape[-1])
            config["images"], config["images_digest"] = len(pixels), digest(pixels)
            method = TextualInversion(diffusion, text, latents, flipped, masks, tpl, init_words, vectors,
                                      batch_size, flip=config["flip"])
            run = RunFolder(common.runs_root(), run_name, config)
            meta = {"token": token_name, "base_model": config["base_model"], "vectors": vectors,
                    "init_words": init_words, "run": run_name}
            result = common.train_and_save(
                method, run, lambda done: formats.save_embedding(emb_path, method.vectors(), {**meta, "steps": done}),
                steps=steps, seed=seed, save_every=config["save_every"],
                schedule=schedule, oom_advice=engine.lower({"batch_size": batch_size, "resolution": resolution}),
                node_id=node_id, on_step=common.reporter(node_id, run, method, vae, resolution, seed, preview_every))
        png = plot.loss_plot({"loss": result.losses}, run.plot_path)
        out_clip = text.with_embedding_dir(os.path.dirname(emb_path))
        return io.NodeOutput(out_clip, token_name, {"loss": result.losses}, ui=common.output_image_ui(png))
