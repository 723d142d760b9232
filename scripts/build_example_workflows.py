"""Build example_workflows/*.json (ComfyUI UI format, shown in the template browser) from the
readable API graphs below, using the node definitions of a real server (widget order, outputs).

    $(cat .host/python) scripts/build_example_workflows.py [name ...]     # all, or only these
"""
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from comfyui_server import ComfyServer  # noqa: E402
from workflow_format import api_to_ui  # noqa: E402

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"

EXAMPLES = {
    "textual_inversion": {
        "notes": [
            "Textual inversion: learn a new word from 3-5 images, then draw with it.\n\n"
            "1. Put your checkpoint in models/checkpoints/ and pick it in Load Checkpoint (SD1.5 here; "
            "for SDXL set resolution 1024).\n"
            "2. Put 3-5 images of your subject in a folder input/my-concept/ (any sizes) and pick it in the "
            "dataset loader.\n"
            "3. Set token_name, and init_words to a word close to your subject. Queue.\n\n"
            "The word is saved as models/embeddings/<token_name>.safetensors: write embedding:<token_name> "
            "in any prompt. While it trains, the panel on the trainer shows the loss curve, the speed and the "
            "time left, and every preview_every steps (50 here; 0 is off) a picture drawn with the word as "
            "learnt so far. The run folder output/texttune/<run_name>/ holds the loss curve, those pictures "
            "(samples/) and checkpoints; cancel saves, and queueing the same run again resumes it.",
        ],
        "graph": {
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
            "data": {"class_type": "LoadImageDataSetFromFolder", "inputs": {"folder": "my-concept"}},
            "train": {"class_type": "TextTuneTrainTextualInversion", "inputs": {
                "model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "images": ["data", 0],
                "token_name": "my-concept", "init_words": "toy", "vectors": 4, "template_set": "object",
                "steps": 500, "learning_rate": 0.005, "lr_schedule": "constant", "batch_size": 4,
                "resolution": 512, "flip": True, "seed": 0, "save_every": 100, "run_name": "",
                "custom_templates": "", "preview_every": 50}},
            "pos": {"class_type": "CLIPTextEncode",
                    "inputs": {"text": "a photo of embedding:my-concept on a beach", "clip": ["train", 0]}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["train", 0]}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
            "sample": {"class_type": "KSampler", "inputs": {
                "model": ["ckpt", 0], "seed": 0, "steps": 25, "cfg": 7.0, "sampler_name": "euler",
                "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0],
                "latent_image": ["latent", 0], "denoise": 1.0}},
            "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "texttune"}},
            "plot": {"class_type": "LossGraphNode", "inputs": {"loss": ["train", 2], "filename_prefix": "loss"}},
        },
    },
}


REWARD_FILES = (
    "Reward models are never downloaded: put the files in models/reward_models/ (then press R).\n"
    "- pickscore: the folder PickScore_v1/ (Hugging Face yuvalkirstain/PickScore_v1: config.json, "
    "model.safetensors) -> models/reward_models/PickScore_v1/\n"
    "- aesthetic: the MLP sac+logos+ava1-l14-linearMSE.pth (LAION improved-aesthetic-predictor) AND the folder "
    "clip-vit-large-patch14/ (openai/clip-vit-large-patch14: config.json, model.safetensors), both in "
    "models/reward_models/\n"
    "- hps: HPS_v2.1_compressed.pt (xswu/HPSv2) in models/reward_models/\n"
    "- clip_score: any CLIP model folder, e.g. clip-vit-large-patch14/\n"
    "Load Reward Model's help page lists the exact files of each kind.")

TRAINING_PROMPTS = ("a photo of a cat sitting on a sofa\n"
                    "a lighthouse on a cliff at sunset\n"
                    "a bowl of fruit on a wooden table\n"
                    "a portrait of an old fisherman")


def reward_graph(trainer: str, reward: dict, settings: dict, out: str) -> dict:
    """Checkpoint + reward -> a reward trainer -> generation with what it trained (`out`: its first
    output is a "clip" or a "model"), plus the loss plot."""
    trained_clip = ["train", 0] if out == "clip" else ["ckpt", 1]
    trained_model = ["train", 0] if out == "model" else ["ckpt", 0]
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "reward": {"class_type": "TextTuneLoadRewardModel", "inputs": reward},
        "train": {"class_type": trainer, "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "reward": ["reward", 0],
            "prompts": TRAINING_PROMPTS, "prompt_file": "", **settings}},
        "pos": {"class_type": "CLIPTextEncode",
                "inputs": {"text": "a lighthouse on a cliff at sunset, detailed", "clip": trained_clip}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": trained_clip}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": trained_model, "seed": 0, "steps": 25, "cfg": 7.5, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0],
            "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "texttune"}},
        "plot": {"class_type": "LossGraphNode", "inputs": {"loss": ["train", 2], "filename_prefix": "loss"}},
    }


EXAMPLES.update({
    "reward_text_encoder": {
        "notes": [
            "TextCraftor: fine-tune the text encoder so that pictures of your prompts score higher on a reward "
            "model, then draw with the tuned encoder.\n\n"
            "1. Put your checkpoint in models/checkpoints/ and pick it in Load Checkpoint (SD1.5 or SD2.x).\n"
            "2. Put the PickScore folder in models/reward_models/PickScore_v1/ (see the other note) and pick it in "
            "Load Reward Model, or choose another kind.\n"
            "3. Write your training prompts, one per line (or a prompt file in input/). Queue.\n\n"
            "Saved: models/text_encoders/<encoder_name>.safetensors (the core Load CLIP node and Load Fine-Tuned "
            "Text Encoder load it; Blend Text Encoders dials between it and the original). The panel on the "
            "trainer shows each reward's score per step. Every step draws a whole image (25 steps) and "
            "backpropagates through the last grad_steps of them and the VAE: slow, and memory grows with "
            "grad_steps and the resolution. Cancel saves; queueing the same run again resumes it.",
            REWARD_FILES,
        ],
        "graph": reward_graph(
            "TextTuneTrainRewardTextEncoder",
            {"kind": "pickscore", "model": "PickScore_v1/", "clip_model": "none", "precision": "auto"},
            {"encoder_name": "textcraftor-pickscore", "steps": 1000, "learning_rate": 1e-6, "batch_size": 1,
             "sampling_steps": 25, "grad_steps": 5, "cfg": 7.5, "resolution": 512, "seed": 0, "save_every": 100,
             "run_name": ""},
            "clip"),
    },
    "reward_lora": {
        "notes": [
            "Reward LoRA (AlignProp, TextCraftor's second stage): train a LoRA on the UNet so that pictures of "
            "your prompts score higher on a reward model, then draw with it.\n\n"
            "1. Put your checkpoint in models/checkpoints/ and pick it in Load Checkpoint (SD1.5 or SD2.x).\n"
            "2. Put the aesthetic predictor's two files in models/reward_models/ (see the other note) and pick "
            "them in Load Reward Model, or choose another kind.\n"
            "3. Write your training prompts, one per line. Queue.\n\n"
            "Saved: models/loras/<lora_name>.safetensors with kohya lora_unet_ keys (the core Load LoRA node, "
            "A1111 and Forge load it). To tune the UNet on top of a TextCraftor encoder, connect the CLIP output "
            "of Train Text Encoder on Rewards to this trainer's clip. Cancel saves; queueing the same run "
            "again resumes it.",
            REWARD_FILES,
        ],
        "graph": reward_graph(
            "TextTuneTrainRewardLoRA",
            {"kind": "aesthetic", "model": "sac+logos+ava1-l14-linearMSE.pth", "clip_model": "clip-vit-large-patch14/",
             "precision": "auto"},
            {"lora_name": "reward-lora-aesthetic", "lora_rank": 4, "steps": 500, "learning_rate": 1e-3,
             "batch_size": 1, "sampling_steps": 25, "grad_steps": 5, "cfg": 7.5, "resolution": 512, "seed": 0,
             "save_every": 100, "run_name": ""},
            "model"),
    },
    "blend_encoders": {
        "notes": [
            "Blend text encoders: a style dial between your checkpoint's text encoder and a fine-tuned one "
            "(TextCraftor's inference-time interpolation).\n\n"
            "1. Put your checkpoint in models/checkpoints/ and pick it in Load Checkpoint.\n"
            "2. Put a fine-tuned text encoder of the same model family in models/text_encoders/ and pick it in "
            "Load Fine-Tuned Text Encoder: e.g. the textcraftor-pickscore.safetensors that the reward text "
            "encoder example saves, or a released TextCraftor encoder (.safetensors or .pth).\n"
            "3. Turn the dial with weights: '1, 0' is the original, '0, 1' the tuned encoder, '0.5, 0.5' half "
            "way, '-0.5, 1.5' goes past the tuned one. start/end_percent blend only on part of the steps.",
        ],
        "graph": {
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
            "tuned": {"class_type": "TextTuneLoadTextEncoder", "inputs": {
                "clip": ["ckpt", 1], "file": "textcraftor-pickscore.safetensors", "strength": 1.0,
                "encoder": "auto"}},
            "blend": {"class_type": "TextTuneBlendTextEncoders", "inputs": {
                "text": "a lighthouse on a cliff at sunset, detailed", "clip_a": ["ckpt", 1],
                "clip_b": ["tuned", 0], "weights": "0.5, 0.5", "start_percent": 0.0, "end_percent": 1.0}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
            "sample": {"class_type": "KSampler", "inputs": {
                "model": ["ckpt", 0], "seed": 0, "steps": 25, "cfg": 7.5, "sampler_name": "euler",
                "scheduler": "normal", "positive": ["blend", 0], "negative": ["neg", 0],
                "latent_image": ["latent", 0], "denoise": 1.0}},
            "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "blend"}},
        },
    },
    "score_images": {
        "notes": [
            "Score images with reward models: four pictures of one prompt, each scored by the aesthetic "
            "predictor and PickScore and by TextCraftor's weighted sum of both (Combine Rewards).\n\n"
            "1. Put your checkpoint in models/checkpoints/ and pick it in Load Checkpoint.\n"
            "2. Put the reward files in models/reward_models/ (see the other note) and pick them in the two Load "
            "Reward Model nodes. Queue.\n\n"
            "Score Images shows a table (each reward, and the sum) and a bar chart of the last column. Any "
            "IMAGE works: connect Load Image, or the output of another workflow.",
            REWARD_FILES,
        ],
        "graph": {
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
            "pos": {"class_type": "CLIPTextEncode",
                    "inputs": {"text": "a lighthouse on a cliff at sunset", "clip": ["ckpt", 1]}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 4}},
            "sample": {"class_type": "KSampler", "inputs": {
                "model": ["ckpt", 0], "seed": 0, "steps": 25, "cfg": 7.5, "sampler_name": "euler",
                "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0],
                "latent_image": ["latent", 0], "denoise": 1.0}},
            "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
            "aesthetic": {"class_type": "TextTuneLoadRewardModel", "inputs": {
                "kind": "aesthetic", "model": "sac+logos+ava1-l14-linearMSE.pth",
                "clip_model": "clip-vit-large-patch14/", "precision": "auto"}},
            "pickscore": {"class_type": "TextTuneLoadRewardModel", "inputs": {
                "kind": "pickscore", "model": "PickScore_v1/", "clip_model": "none", "precision": "auto"}},
            "combine": {"class_type": "TextTuneCombineRewards", "inputs": {
                "reward_a": ["aesthetic", 0], "weight_a": 1.0, "reward_b": ["pickscore", 0], "weight_b": 1.0}},
            "score": {"class_type": "TextTuneScoreImages", "inputs": {
                "images": ["decode", 0], "reward": ["combine", 0], "prompts": "a lighthouse on a cliff at sunset"}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "scored"}},
        },
    },
    "promptnet": {
        "notes": [
            "PromptNet (ProFusion): one picture of a subject becomes the word S*, then fusion sampling draws it "
            "in a new scene.\n\n"
            "1. Put Stable Diffusion 2 base (512-base-ema.safetensors) in models/checkpoints/ and pick it in Load "
            "Checkpoint: ProFusion's PromptNet makes words for SD2's text encoder (SD1 and SDXL do not fit).\n"
            "2. Put ProFusion's released pipeline folder (the one holding promptnet/ and openclip/; its other "
            "sub-folders are not read) in models/promptnet/profusion-ffhq/, press R, and pick 'profusion-ffhq/' "
            "in Load PromptNet. Nothing is downloaded.\n"
            "3. Pick your subject's picture in Load Image (the released PromptNet was trained on faces). Queue.\n\n"
            "Train PromptNet fine-tunes it on the picture (50 steps, with a LoRA on the UNet's attention) and "
            "saves models/promptnet/my-promptnet.safetensors and models/loras/my-promptnet.safetensors; then "
            "KSampler Fusion recomputes S* from the picture at every step and puts it where 'holder' stands in "
            "the prompt.",
            "Without fine-tuning (faster; ProFusion fine-tunes for a closer likeness): connect Load PromptNet's "
            "PROMPTNET to KSampler Fusion's promptnet and Load Checkpoint's MODEL to its model, and delete Train "
            "PromptNet and Plot Loss Graph. Next time, pick my-promptnet.safetensors in Load PromptNet and apply "
            "the LoRA with the core Load LoRA node.\n\n"
            "Prompts: the positive (Concept Prompt) has the placeholder word 'holder' where the subject goes, "
            "and its concept is 'holder' too; the reference is the same text with the class word ('a person'). "
            "omega_1 (7) keeps the subject's likeness, omega_2 (5) follows the rest of the prompt, gamma (0.6) "
            "weakens S* in the fusion pass.",
        ],
        "graph": {
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "512-base-ema.safetensors"}},
            "image": {"class_type": "LoadImage", "inputs": {"image": "my-subject.png"}},
            "promptnet": {"class_type": "TextTuneLoadPromptNet", "inputs": {"promptnet": "profusion-ffhq/"}},
            "train": {"class_type": "TextTuneTrainPromptNet", "inputs": {
                "promptnet": ["promptnet", 0], "model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2],
                "images": ["image", 0], "name": "my-promptnet", "prompt": "a photo of holder",
                "placeholder": "holder", "steps": 50, "learning_rate": 2e-5, "train_lora": True, "lora_rank": 4,
                "lora_learning_rate": 1e-4, "batch_size": 1, "resolution": 512, "flip": True, "seed": 0,
                "save_every": 0, "run_name": ""}},
            "pos": {"class_type": "TextTuneConceptPrompt", "inputs": {
                "clip": ["ckpt", 1], "text": "a holder in Ghibli style", "concept": "holder"}},
            "ref": {"class_type": "CLIPTextEncode",
                    "inputs": {"text": "a person in Ghibli style", "clip": ["ckpt", 1]}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
            "sample": {"class_type": "TextTuneKSamplerFusion", "inputs": {
                "model": ["train", 1], "seed": 0, "steps": 50, "scheduler": "ddim_uniform",
                "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0], "denoise": 1.0,
                "omega_1": 7.0, "omega_2": 5.0, "omega_f": 7.0, "gamma": 0.6, "fusion_passes": 1, "eta": 1.0,
                "fusion_start_percent": 0.0, "fusion_end_percent": 1.0, "reference": ["ref", 0],
                "promptnet": ["train", 0], "promptnet_image": ["image", 0], "vae": ["ckpt", 2],
                "placeholder": "holder"}},
            "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
            "save": {"class_type": "SaveImage",
                     "inputs": {"images": ["decode", 0], "filename_prefix": "texttune/promptnet"}},
            "plot": {"class_type": "LossGraphNode", "inputs": {"loss": ["train", 3], "filename_prefix": "loss"}},
        },
    },
})


def main(names=()):
    unknown = set(names) - set(EXAMPLES)
    if unknown:
        sys.exit(f"unknown examples {sorted(unknown)}; known: {', '.join(EXAMPLES)}")
    with tempfile.TemporaryDirectory() as base, ComfyServer(base) as srv:
        info = srv.object_info()
    out_dir = os.path.join(REPO, "example_workflows")
    os.makedirs(out_dir, exist_ok=True)
    for name, ex in EXAMPLES.items():
        if names and name not in names:
            continue
        graph = {k: v for k, v in ex["graph"].items()}
        path = os.path.join(out_dir, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(api_to_ui(graph, info, ex["notes"]), f, indent=1)
        print("wrote", path)


if __name__ == "__main__":
    main(sys.argv[1:])
