"""TextTuneTrainTextBoost and TextTuneLoadTextBoost: one-shot personalisation through the text encoder."""
import hashlib
import logging
import os

import torch
from comfy_api.latest import io

import folder_paths

from ..trainers import augment, engine, files, formats, plot, templates
from ..trainers.comfy_adapter import Diffusion, TextEncoder
from ..trainers.data import digest, prepare_pixels
from ..trainers.files import check_name
from ..trainers.lora import ALL_TARGETS, TextLora, parse_targets
from ..trainers.runs import RunFolder
from ..trainers.textboost import TextBoost, check_kp_weight, load_prior_captions
from . import common

log = logging.getLogger("texttune")

# Augmented variants encoded once before training, per training image (steps draw from them):
# the VAE then costs nothing per step, which keeps a TextBoost step close to a textual-inversion step.
POOL_PER_IMAGE = 128


def apply_textboost(clip, lora_sd: dict, strength: float, embedding_dir: str):
    """The CLIP with a TextBoost LoRA applied through ComfyUI's own LoRA loading (what the core
    LoraLoader does with strength_model 0) and the embedding folder searched for its token."""
    import comfy.sd
    _, patched = comfy.sd.load_lora_for_models(None, clip, lora_sd, 0.0, strength)
    return TextEncoder(patched).with_embedding_dir(embedding_dir)


def prompt_words(name: str, class_word: str) -> str:
    return f"embedding:{name} {class_word}".strip()


class TrainTextBoost(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneTrainTextBoost",
            display_name="Train TextBoost (TextTune)",
            category="TextTune/train",
            description="One-shot personalisation (TextBoost): from one image, learns a new word plus a small LoRA on "
                        "the text encoder, with augmentation tokens and a loss that keeps the encoder's other "
                        "knowledge. Saves models/loras/<name>.safetensors (kohya keys; core Load LoRA with "
                        "strength_model 0 applies it) and models/embeddings/<name>.safetensors. Prompt with "
                        "'a photo of embedding:<name> <class word>'.",
            is_input_list=True,
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (frozen)."),
                io.Clip.Input("clip", tooltip="The text encoder of the same checkpoint; the LoRA is trained on it "
                                              "(the input CLIP itself is not changed)."),
                io.Vae.Input("vae", tooltip="VAE used before training to encode the (augmented) image."),
                io.Image.Input("images", tooltip="One image of the subject (the main case). More are allowed if "
                                                 "they show the same subject."),
                io.String.Input("token_name", default="my-subject",
                                tooltip="Name of the new word and of the saved files. Letters, digits, _ - . only."),
                io.String.Input("class_word", default="object",
                                tooltip="What the subject is, e.g. dog, backpack, toy. Captions read "
                                        "'<token> <class word>'."),
                io.Int.Input("lora_rank", default=4, min=1, max=128, tooltip="LoRA rank (TextBoost: 4)."),
                io.String.Input("lora_targets", default=ALL_TARGETS,
                                tooltip="Layers of each text-encoder block that get a LoRA: any of q, k, v, out, fc1, "
                                        "fc2. The paper's first version used all six; its later code q, k, v."),
                io.Boolean.Input("augmentation_tokens", default=True,
                                 tooltip="Each augmentation (zoom, crop, shift, flip, collage, grayscale) adds its own "
                                         "learnable token to the caption, so the subject's word does not absorb it."),
                io.Float.Input("kp_weight", default=0.1, min=0.0, max=10.0, step=0.01,
                               tooltip="Weight λ of the knowledge-preservation loss (1 - cosine to the original "
                                       "encoder on everyday captions). 0 turns it off."),
                io.Boolean.Input("snr_timesteps", default=True,
                                 tooltip="Draw timesteps with p(t) ∝ max log SNR - log SNR(t) (TextBoost's "
                                         "SNR-weighted sampling; off: uniform)."),
                io.Int.Input("steps", default=250, min=1, max=100000, tooltip="Total optimisation steps."),
                io.Int.Input("batch_size", default=8, min=1, max=64,
                             tooltip="Augmented copies of the image per step."),
                io.Float.Input("lora_learning_rate", default=1e-4, min=1e-7, max=1.0, step=1e-5, round=1e-7,
                               tooltip="AdamW learning rate of the LoRA (TextBoost: 5e-5 to 1e-4)."),
                io.Float.Input("token_learning_rate", default=1e-3, min=1e-7, max=1.0, step=1e-4, round=1e-7,
                               tooltip="AdamW learning rate of the new tokens' vectors (TextBoost: 1e-3)."),
                io.Combo.Input("template_set", options=["object", "textboost", "style", "custom"], default="object",
                               tooltip="Captions of the image: object (ImageNet templates, as TextBoost's runs), "
                                       "textboost (short ones), style, or your own lines below."),
                io.Int.Input("resolution", default=512, min=64, max=2048, step=64,
                             tooltip="Training size in pixels (512 for SD1.5, 768 for SD2, 1024 for SDXL)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of every random choice; the same seed repeats the run exactly."),
                io.Int.Input("save_every", default=50, min=0, max=100000,
                             tooltip="Save a resumable checkpoint every N steps (0: only at the end or on cancel)."),
                io.String.Input("run_name", default="", tooltip="Run folder under output/texttune/ (default "
                                "textboost-<token_name>). Queueing the same run again resumes it."),
                io.String.Input("init_words", optional=True, default="",
                                tooltip="Word(s) the new token starts from (one vector per word piece); empty: the "
                                        "class word."),
                io.String.Input("custom_templates", optional=True, multiline=True, default="",
                                tooltip="For template_set=custom: one caption per line with {} for '<token> <class>'."),
                io.String.Input("prior_captions", optional=True, multiline=True, default="",
                                tooltip="Captions for the knowledge-preservation loss, one per line; empty: "
                                        "TextTune's set of 1,500 everyday captions."),
                common.preview_every_input(),
            ],
            outputs=[
                io.Clip.Output(display_name="CLIP", tooltip="A copy of the CLIP with the LoRA applied and the new "
                                                            "word usable."),
                io.String.Output(display_name="name", tooltip="Name of the LoRA and embedding files."),
                io.String.Output(display_name="prompt_words", tooltip="'embedding:<name> <class word>': put it "
                                                                      "in prompts for the subject."),
                io.LossMap.Output(display_name="loss", tooltip="Loss per step (total, diffusion, knowledge "
                                                               "preservation), for the core Plot Loss Graph node."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, clip, vae, images, token_name, class_word, lora_rank, lora_targets,
                augmentation_tokens, kp_weight, snr_timesteps, steps, batch_size, lora_learning_rate,
                token_learning_rate, template_set, resolution, seed, save_every, run_name,
                init_words=None, custom_templates=None, prior_captions=None, preview_every=None) -> io.NodeOutput:
        s = common.single
        model, clip, vae = s(model, "model"), s(clip, "clip"), s(vae, "vae")
        name = check_name(s(token_name, "token_name").strip(), "Token name")
        run_name = check_name(s(run_name, "run_name").strip() or f"textboost-{name}", "Run name")
        class_word = " ".join(s(class_word, "class_word").split())
        if not class_word:
            raise ValueError("The class word is empty: say what the subject is, e.g. 'dog' or 'backpack'.")
        init = " ".join(s(init_words or [""], "init_words").split()) or class_word
        rank, steps = s(lora_rank, "lora_rank"), s(steps, "steps")
        kp = check_kp_weight(s(kp_weight, "kp_weight"))
        targets = parse_targets(s(lora_targets, "lora_targets"))
        tpl = templates.resolve(s(template_set, "template_set"), s(custom_templates or [""], "custom_templates"))
        prior = load_prior_captions(s(prior_captions or [""], "prior_captions"))
        batch_size, resolution, seed = s(batch_size, "batch_size"), s(resolution, "resolution"), s(seed, "seed")
        config = {"method": "textboost", "token_name": name, "class_word": class_word, "init_words": init,
                  "lora_rank": rank, "lora_targets": targets, "augmentation_tokens": s(augmentation_tokens, "aug"),
                  "kp_weight": kp, "timesteps": "snr" if s(snr_timesteps, "snr_timesteps") else "uniform",
                  "steps": steps, "batch_size": batch_size, "lora_learning_rate": s(lora_learning_rate, "lora_lr"),
                  "token_learning_rate": s(token_learning_rate, "token_lr"), "templates": tpl,
                  "prior_captions": len(prior),
                  "prior_captions_digest": hashlib.sha256("\n".join(prior).encode()).hexdigest()[:16],
                  "resolution": resolution, "seed": seed,
                  "save_every": s(save_every, "save_every"), "base_model": type(model.model.model_config).__name__}

        node_id = cls.hidden.unique_id if cls.hidden else None
        diffusion, text = Diffusion(model), TextEncoder(clip)
        common.check_model_clip_match(diffusion, text)
        pieces = text.tokenizers[text.keys[0]].tokenizer.tokenize(class_word)
        if len(pieces) != 1:
            log.warning("TextBoost: the class word %r is not one known word; it is tokenised as %s.", class_word, pieces)
        lora_path = os.path.join(common.models_dir("loras"), name + ".safetensors")
        emb_dir = common.models_dir("embeddings")
        emb_path = os.path.join(emb_dir, name + ".safetensors")
        formats.check_overwrite(emb_path, name, "An embedding")      # before training, not after it
        formats.check_overwrite(lora_path, name, "A LoRA")
        with torch.inference_mode(False):
            lora = TextLora(clip, targets, rank, seed=seed, device=diffusion.device)     # checks rank and targets
            pixels = prepare_pixels(images, resolution)
            if len(pixels) > 1:
                log.warning("TextBoost is made for one image; %d were given. They should all show the same "
                            "subject, or the new word learns a mixture.", len(pixels))
            pool, edits = augment.augmented_pool(pixels, POOL_PER_IMAGE * len(pixels), seed)
            with torch.no_grad():
                latents = torch.cat([diffusion.to_model_latents(vae.encode(pool[i:i + 16]).float())
                                     for i in range(0, len(pool), 16)]).clone()
            config["images"], config["images_digest"] = len(pixels), digest(pixels)
            method = TextBoost(diffusion, text, latents, edits, tpl, class_word, init, prior, lora, batch_size,
                               aug_tokens=config["augmentation_tokens"], kp_weight=kp, timesteps=config["timesteps"],
                               lora_lr=config["lora_learning_rate"], token_lr=config["token_learning_rate"])
            run = RunFolder(common.runs_root(), run_name, config)
            meta = {"token": name, "class_word": class_word, "base_model": config["base_model"], "run": run_name,
                    "method": "textboost", "lora_rank": rank, "lora_targets": ",".join(targets)}

            def save(steps_done: int):
                m = {**meta, "steps": steps_done}
                formats.save_embedding(emb_path, method.instance_vectors(), m)
                lora_sd = lora.kohya_state_dict()
                formats.save_lora(lora_path, lora_sd, m)
                files.save_safetensors({**{f"lora.{k}": v for k, v in lora_sd.items()},
                                        **{f"token.{k}": v for k, v in method.augmentation_vectors().items()},
                                        **{f"instance.{k}": v for k, v in method.instance_vectors().items()}},
                                       os.path.join(run.path, "textboost.safetensors"), m)
            result = common.train_and_save(method, run, save, steps=steps, seed=seed,
                                           save_every=config["save_every"],
                                           schedule=engine.Schedule(config["lora_learning_rate"], steps),
                                           weight_decay=1e-2, max_grad_norm=1.0,
                                           oom_advice=engine.lower({"batch_size": batch_size,
                                                                    "resolution": resolution}),
                                           node_id=node_id, on_step=common.reporter(node_id, run, method, vae,
                                                                                    resolution, seed, preview_every))
        losses = common.loss_map(run, result)
        png = plot.loss_plot(losses, run.plot_path)
        out_clip = apply_textboost(clip, lora.kohya_state_dict(), 1.0, emb_dir)
        return io.NodeOutput(out_clip, name, prompt_words(name, class_word), losses, ui=common.output_image_ui(png))


class LoadTextBoost(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneLoadTextBoost",
            display_name="Load TextBoost (TextTune)",
            category="TextTune/load",
            description="Applies a TextBoost result in one node: its LoRA (models/loras/<name>.safetensors) on the "
                        "text encoder and its word (models/embeddings/<name>.safetensors).",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP of the checkpoint the TextBoost run was trained on."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="The TextBoost LoRA in models/loras/."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.05,
                               tooltip="LoRA strength on the text encoder (1: as trained)."),
            ],
            outputs=[
                io.Clip.Output(display_name="CLIP"),
                io.String.Output(display_name="prompt_words", tooltip="'embedding:<name> <class word>' for prompts."),
            ],
        )

    @classmethod
    def execute(cls, clip, lora_name, strength) -> io.NodeOutput:
        path = folder_paths.get_full_path("loras", lora_name)
        if not path:
            raise ValueError(f"LoRA {lora_name!r} is not in {', '.join(folder_paths.get_folder_paths('loras'))}: put "
                             f"the TextBoost file there, then refresh the node list (press R) and choose it.")
        if not path.lower().endswith(files.SAFETENSORS_EXTENSIONS):
            raise ValueError(f"{lora_name} is not a .safetensors file (it was not opened): TextBoost saves "
                             f"models/loras/<name>.safetensors. Pick that file.")
        sd, meta = files.load_safetensors(path)
        if not any(k.startswith("lora_te") for k in sd):
            raise ValueError(f"{lora_name} has no text-encoder LoRA keys (lora_te…): it is not a TextBoost file. "
                             f"Pick the file a TextBoost run saved.")
        name = os.path.splitext(os.path.basename(path))[0]
        emb_dir = common.models_dir("embeddings")
        found = [d for d in folder_paths.get_folder_paths("embeddings") if os.path.exists(os.path.join(d, name + ".safetensors"))]
        if not found:
            raise ValueError(f"The word of {lora_name} is missing: expected {name}.safetensors in "
                             f"{emb_dir} (TextBoost saves both files; copy it there).")
        out = apply_textboost(clip, sd, strength, found[0])
        return io.NodeOutput(out, prompt_words(name, meta.get("class_word", "")))
