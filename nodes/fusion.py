"""TextTuneConceptPrompt, TextTuneFusionGuider and TextTuneKSamplerFusion: ProFusion's fusion sampling
(research/methods.md §3.2) with a concept word, e.g. one learned by textual inversion or TextBoost.

The guider runs the whole fusion loop in place of the SAMPLER (trainers/fusion.FusionGuider explains
why), so it plugs into the core SamplerCustomAdvanced; the KSampler node is the one-node form.
"""
import comfy.samplers
from comfy_api.latest import io

from ..trainers import fusion
from .promptnet import sampling_inputs, sampling_promptnet


def settings_inputs() -> list:
    """Inputs named as the fields of trainers.fusion.FusionSettings."""
    d = fusion.FusionSettings()
    return [
        io.Float.Input("omega_1", default=d.omega_1, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="ω1: guidance of the positive prompt (with the concept) in every step's DDIM "
                               "refinement, like cfg. Higher keeps more of the concept's detail (ProFusion: 7)."),
        io.Float.Input("omega_2", default=d.omega_2, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="ω2: guidance of the reference prompt (the prompt with the class word in place of "
                               "the concept). Higher follows the rest of the prompt more (ProFusion: 5). Unused "
                               "without a reference; 0 skips evaluating it."),
        io.Float.Input("omega_f", default=d.omega_f, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="ω_f: guidance of the fusion passes, with the concept scaled by gamma "
                               "(ProFusion: 7)."),
        io.Float.Input("gamma", default=d.gamma, min=0.0, max=2.0, step=0.05,
                       tooltip="γ: the concept tokens' output embeddings are multiplied by this in the fusion "
                               "passes. Lower lets the rest of the prompt through more (ProFusion: 0.6; 0.4-0.9 "
                               "work). Needs the positive from Concept Prompt (TextTune) unless it is 1 (or no fusion "
                               "passes run)."),
        io.Int.Input("fusion_passes", default=d.fusion_passes, min=0, max=10,
                     tooltip="Fusion passes per step: a stochastic step to the next noise level with the fused "
                             "prediction and back (ProFusion's refine_step: 1). 0: no fusion stage, only the "
                             "two-prompt guided DDIM steps."),
        io.Float.Input("eta", default=d.eta, min=0.0, max=1.0, step=0.05,
                       tooltip="η of the fusion passes (0 to 1): scales their DDIM variance. 1 (ProFusion) is a "
                               "full stochastic DDPM step; 0 makes the passes do nothing."),
        io.Float.Input("fusion_start_percent", default=d.fusion_start_percent, min=0.0, max=1.0, step=0.01,
                       tooltip="The fusion passes run on the steps whose position in the schedule (step / steps) "
                               "is from here ..."),
        io.Float.Input("fusion_end_percent", default=d.fusion_end_percent, min=0.0, max=1.0, step=0.01,
                       tooltip="... to below here. 0.5 runs them on the first half of the steps only (cheaper; "
                               "the early steps set the layout). Other steps only refine."),
    ]


def conditioning_inputs() -> list:
    return [
        io.Conditioning.Input("positive", tooltip="The prompt with the concept, from Concept Prompt (TextTune) "
                                                  "(or any CONDITIONING if gamma is 1 or fusion_passes 0)."),
        io.Conditioning.Input("negative", tooltip="The unconditional prompt ∅ (usually empty text, or your negative "
                                                  "prompt), as for KSampler."),
    ]


def reference_input():
    return io.Conditioning.Input(
        "reference", optional=True,
        tooltip="Optional: the same prompt with the concept replaced by its class word (e.g. 'a photo of a dog on "
                "a beach'), weighted by omega_2. Any token length: it is padded as ComfyUI pads positive and "
                "negative.")


class ConceptPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneConceptPrompt",
            display_name="Concept Prompt (TextTune)",
            category="TextTune/sampling",
            description="Encodes a prompt as CLIP Text Encode does and marks where the concept word stands, so "
                        "fusion sampling can scale the concept's output embeddings by gamma (ProFusion's S*·γ).",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP that knows the concept: e.g. the CLIP output of Train "
                                              "Textual Inversion or Load TextBoost, or any CLIP for embedding: "
                                              "files in models/embeddings/."),
                io.String.Input("text", multiline=True, dynamic_prompts=True,
                                default="a photo of embedding:my-concept on a beach",
                                tooltip="The prompt with the concept in it. (word:1.2) weights and embedding:<name> "
                                        "work as in CLIP Text Encode."),
                io.String.Input("concept", default="embedding:my-concept",
                                tooltip="The word(s) of the prompt that name the concept, e.g. embedding:my-concept "
                                        "(one position per vector of the embedding) or 'sks dog'. Every occurrence "
                                        "is marked; the node fails if the prompt does not contain it."),
            ],
            outputs=[io.Conditioning.Output(display_name="CONDITIONING",
                                            tooltip="The prompt's conditioning with the concept's positions; use "
                                                    "it as the positive of the fusion nodes (other nodes ignore "
                                                    "the mark).")],
        )

    @classmethod
    def execute(cls, clip, text, concept) -> io.NodeOutput:
        if clip is None:
            raise ValueError("The clip input is empty: connect the CLIP of your checkpoint (or of the node that "
                             "made the concept).")
        return io.NodeOutput(fusion.encode_concept(clip, text, concept))


class FusionGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneFusionGuider",
            display_name="Fusion Guider (TextTune)",
            category="TextTune/sampling",
            description="ProFusion's fusion sampling as a GUIDER for SamplerCustomAdvanced: at every step, "
                        "fusion passes with the concept scaled by gamma, then a DDIM step guided by the prompt "
                        "(omega_1) and the reference prompt (omega_2). It makes the steps itself over the given "
                        "SIGMAS (any scheduler), so connect KSamplerSelect 'ddim' (or 'euler') as the SAMPLER.",
            inputs=[io.Model.Input("model", tooltip="The diffusion model (eps or v-prediction: SD1, SD2, SDXL).")]
                   + conditioning_inputs() + settings_inputs() + [reference_input()] + sampling_inputs(),
            outputs=[io.Guider.Output(tooltip="For SamplerCustomAdvanced's guider input.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, reference=None, promptnet=None, promptnet_image=None, vae=None,
                placeholder="holder", **settings) -> io.NodeOutput:
        settings = fusion.check_settings(fusion.FusionSettings(**settings))
        with_promptnet = sampling_promptnet(promptnet, promptnet_image, vae, placeholder)
        return io.NodeOutput(fusion.make_guider(model, positive, negative, reference, settings, with_promptnet))


class KSamplerFusion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TextTuneKSamplerFusion",
            display_name="KSampler Fusion (TextTune)",
            category="TextTune/sampling",
            description="KSampler with ProFusion's fusion sampling (DDIM steps): keeps a concept's detail while "
                        "following the rest of the prompt. With omega_2 0, fusion_passes 0 and omega_1 = cfg it "
                        "gives exactly what KSampler gives with the ddim sampler.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (eps or v-prediction: SD1, SD2, SDXL)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the starting noise; the fusion passes' noise is drawn from seed + 1."),
                io.Int.Input("steps", default=50, min=1, max=10000,
                             tooltip="DDIM steps (ProFusion: 50). Each step costs 5 model evaluations with a "
                                     "reference and one fusion pass (4 without), plain CFG costs 2."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="ddim_uniform",
                               tooltip="The noise schedule. ddim_uniform gives the DDIM timesteps of the official "
                                       "pipeline; any other works."),
                *conditioning_inputs(),
                io.Latent.Input("latent_image", tooltip="The latent to denoise (Empty Latent Image, or an encoded "
                                                        "image with denoise below 1)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much to denoise, as in KSampler: below 1 keeps the structure of "
                                       "latent_image."),
                *settings_inputs(),
                reference_input(),
                *sampling_inputs(),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised latent.")],
        )

    @classmethod
    def execute(cls, model, seed, steps, scheduler, positive, negative, latent_image, denoise, reference=None,
                promptnet=None, promptnet_image=None, vae=None, placeholder="holder", **settings) -> io.NodeOutput:
        settings = fusion.check_settings(fusion.FusionSettings(**settings))
        with_promptnet = sampling_promptnet(promptnet, promptnet_image, vae, placeholder)
        return io.NodeOutput(fusion.ksampler(model, seed, steps, scheduler, positive, negative, latent_image,
                                             denoise, settings, reference, with_promptnet))
