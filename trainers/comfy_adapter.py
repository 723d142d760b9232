"""The one place that touches ComfyUI model objects for training.

- `Diffusion`: a ModelPatcher as "noise, denoise, loss" in k-diffusion space (x = x0 + sigma*eps)
  through the model's own `model_sampling`, for eps, v-prediction and flow models alike.
- `TextEncoder`: a CLIP as "tokenize, splice trainable vectors, encode with autograd".
- `EncoderCopy`: a trainable float32 copy of a CLIP's text-encoder weights, swapped in for the
  CLIP's own weights only while it encodes (full fine-tuning without a second encoder module).
- `decode`: latents to images with autograd through the VAE's decoder.
- `trainable_session`: loads models on the compute device and fixes the two autograd traps
  (research/comfyui.md §12): loader-made inference tensors (T1) and CLIP's in-place residuals (T2).

Input objects keep their values: weights may be swapped for equal-valued normal tensors (T1), and
frozen flags and layer forwards are restored when the session ends.
"""
import contextlib
import types

import torch

import comfy.clip_model
import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.model_management as mm
import comfy.model_sampling


# ---------------------------------------------------------------------------------------------
# autograd traps
def deinference_(module: torch.nn.Module) -> int:
    """Replace inference-mode tensors with equal normal tensors so autograd can save them (T1)."""
    n = 0
    for m in module.modules():
        for k, p in list(m._parameters.items()):
            if p is not None and p.is_inference():
                m._parameters[k] = torch.nn.Parameter(p.clone(), requires_grad=p.requires_grad)
                n += 1
        for k, b in list(m._buffers.items()):
            if b is not None and b.is_inference():
                m._buffers[k] = b.clone()
                n += 1
    return n


def _clip_layer_forward(self, x, mask=None, optimized_attention=None):
    # comfy.clip_model.CLIPLayer.forward adds in place, which breaks backward (T2).
    x = x + self.self_attn(self.layer_norm1(x), mask, optimized_attention)
    return x + self.mlp(self.layer_norm2(x))


@contextlib.contextmanager
def trainable_session(diffusion_patchers=(), clips=(), memory_required=1e20):
    """Load models for training; inside, gradients flow to inputs and patches, not to frozen weights.
    By default every other model is unloaded first (as the core LoRA trainer does): training needs
    the room for activations."""
    patchers = list(diffusion_patchers) + [c.patcher for c in clips]
    flags, layers = [], []
    with torch.inference_mode(False), torch.enable_grad():
        mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)
        try:
            for p in patchers:
                module = p.model
                deinference_(module)
                for prm in module.parameters():
                    flags.append((prm, prm.requires_grad))
                    prm.requires_grad_(False)
            for c in clips:
                for m in c.cond_stage_model.modules():
                    if isinstance(m, comfy.clip_model.CLIPLayer):
                        m.forward = types.MethodType(_clip_layer_forward, m)
                        layers.append(m)
            yield
        finally:
            for m in layers:
                del m.forward
            for prm, flag in flags:
                prm.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
class Diffusion:
    """A ModelPatcher seen as a denoiser in k-diffusion space."""

    def __init__(self, patcher):
        self.patcher = patcher
        self.model = patcher.model
        self.sampling = patcher.get_model_object("model_sampling")
        self.context_dim = self.model.model_config.unet_config.get("context_dim")

    @property
    def device(self):
        return self.patcher.load_device

    def to_model_latents(self, vae_latents: torch.Tensor) -> torch.Tensor:
        return self.model.process_latent_in(vae_latents)

    def noised(self, x0, noise, sigma):
        return self.sampling.noise_scaling(sigma, noise, x0)

    def start(self, noise, sigma):
        """The latent a full denoise starts from at `sigma` (the schedule's largest), for noise ~ N(0, I),
        as ComfyUI's samplers make it (eps: noise * sqrt(1 + sigma^2), DDPM's z_T in k-diffusion space)."""
        return self.sampling.noise_scaling(sigma, noise, torch.zeros_like(noise), max_denoise=True)

    def denoise(self, x, sigma, cond, pooled=None):
        """x0 prediction for noisy `x` at `sigma` with cross-attention `cond` (gradients flow)."""
        kwargs = {}
        if getattr(self.model, "adm_channels", 0):
            h, w = x.shape[-2:]
            f = 8
            kwargs["y"] = self.model.encode_adm(pooled_output=pooled, width=w * f, height=h * f,
                                                target_width=w * f, target_height=h * f)
        return self.model.apply_model(x, sigma, c_crossattn=cond.to(x.device), **kwargs)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """Per-sample weight turning x0-space MSE into the model's own prediction-space MSE."""
        ms, s2 = self.sampling, sigma.float() ** 2
        if isinstance(ms, comfy.model_sampling.V_PREDICTION):     # v-prediction and EDM
            sd2 = float(ms.sigma_data) ** 2
            return (s2 + sd2) / (s2 * sd2)
        if isinstance(ms, comfy.model_sampling.X0):
            return torch.ones_like(s2)
        return 1.0 / s2                                              # eps and flow (CONST)

    def loss(self, x0, noise, sigma, cond, pooled=None, mask=None, sample_weight=None):
        """The diffusion loss: mean over the batch of the prediction-space squared error, each
        sample times `sample_weight` ([B]) when given."""
        x = self.noised(x0, noise, sigma)
        denoised = self.denoise(x, sigma, cond, pooled).float()
        err = (denoised - x0.float()) ** 2
        if mask is not None:
            err = err * mask
            per = err.sum(dim=(1, 2, 3)) / (mask.expand_as(err).sum(dim=(1, 2, 3)).clamp_min(1e-8))
        else:
            per = err.mean(dim=(1, 2, 3))
        per = per * self.loss_weight(sigma).to(per.device)
        if sample_weight is not None:
            per = per * sample_weight.to(per.device)
        return per.mean()


# ---------------------------------------------------------------------------------------------
class TextEncoder:
    """A CLIP (SD1, SD2 or SDXL) with trainable vectors spliced into its token rows."""

    def __init__(self, clip):
        self.clip = clip
        tokens = clip.tokenize("a")
        self.keys = list(tokens)                              # "l" (SD1), "h" (SD2), "l"+"g" (SDXL)
        self.tokenizers = {k: getattr(clip.tokenizer, f"clip_{k}") for k in self.keys}
        self.encoders = {k: getattr(clip.cond_stage_model, f"clip_{k}") for k in self.keys}
        self._marker_ids = {}
        self._tokens = {}

    def width(self, key) -> int:
        return self.encoders[key].transformer.get_input_embeddings().weight.shape[1]

    @property
    def output_width(self) -> int:
        return sum(self.width(k) for k in self.keys)

    def embedding_key(self, key) -> str:
        return self.tokenizers[key].embedding_key

    def word_ids(self, key, text: str) -> list[int]:
        """Token ids of `text` without start/end tokens."""
        tok = self.tokenizers[key]
        ids = tok.tokenizer(text)["input_ids"]
        return ids[tok.tokens_start:-1] if tok.end_token is not None else ids[tok.tokens_start:]

    def token_vectors(self, key, ids: list[int]) -> torch.Tensor:
        emb = self.encoders[key].transformer.get_input_embeddings().weight
        return emb[torch.tensor(ids, device=emb.device)].detach().float().cpu()

    def tokens_with_vectors(self, text: str, vectors: dict[str, dict]):
        """Tokenize `text` and put trainable vectors where marker words stand: `vectors` maps each
        marker word to {encoder key: [n, width] tensor}. Each marker is replaced where it first occurs."""
        tokens = self.tokenize(text)
        out = {}
        for key in self.keys:
            rows = [list(r) for r in tokens[key]]
            for marker, per_key in vectors.items():
                self._splice(rows, self._ids_of_marker(key, marker), per_key[key], text)
            out[key] = rows
        return out

    def tokenize(self, text: str) -> dict:
        """clip.tokenize(text), remembered: training draws the same captions again and again, and
        BPE in Python costs as much as a small encoder's forward. Callers copy rows before changing them."""
        tokens = self._tokens.get(text)
        if tokens is None:
            if len(self._tokens) >= 8192:
                self._tokens.clear()
            tokens = self._tokens[text] = self.clip.tokenize(text)
        return tokens

    def _ids_of_marker(self, key, marker: str) -> list[int]:
        if (key, marker) not in self._marker_ids:
            self._marker_ids[key, marker] = self.word_ids(key, marker)
        return self._marker_ids[key, marker]

    @staticmethod
    def _splice(rows: list, marker_ids: list[int], vec: torch.Tensor, text: str):
        for row in rows:
            ids = [t[0] if isinstance(t[0], int) else None for t in row]
            for i in range(len(ids) - len(marker_ids) + 1):
                if ids[i:i + len(marker_ids)] == marker_ids:
                    row[i:i + len(marker_ids)] = [(vec[j], 1.0) for j in range(vec.shape[0])]
                    grow = vec.shape[0] - len(marker_ids)
                    if grow > 0:   # keep the row length: drop trailing padding
                        pad = row[-1]
                        if not all(isinstance(t[0], int) and t[0] == pad[0] for t in row[-grow - 1:]):
                            raise ValueError(f"Prompt too long for the learned vectors: {text!r}")
                        del row[-grow:]
                    elif grow < 0:
                        row.extend([row[-1]] * (-grow))
                    return

    def encode(self, tokens) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(cond [1, T, D], pooled) of one prompt's tokens, differentiable, as CLIP.encode_from_tokens."""
        m = self.clip.cond_stage_model
        m.reset_clip_options()
        if self.clip.layer_idx is not None:
            m.set_clip_options({"layer": self.clip.layer_idx})
        out = m.encode_token_weights(tokens)
        return out[0], out[1]

    def with_embedding_dir(self, directory: str):
        """A clone of the CLIP whose tokenizers also search `directory` for `embedding:<name>` words
        (the input CLIP's tokenizers are left as they are)."""
        import copy
        out = self.clip.clone()
        out.tokenizer = copy.copy(self.clip.tokenizer)
        for key, sub in self.tokenizers.items():
            sub = copy.copy(sub)
            dirs = sub.embedding_directory
            dirs = [] if dirs is None else ([dirs] if isinstance(dirs, str) else list(dirs))
            if directory not in dirs:
                dirs.append(directory)
            sub.embedding_directory = dirs
            setattr(out.tokenizer, f"clip_{key}", sub)
        return out

    def encode_batch(self, token_list):
        """(cond [B, T, D], pooled) of many prompts' tokens, differentiable. Prompts of one 77-token
        section with unit weights (all training captions) go through the encoder as one batch, exactly as
        CLIP.encode_from_tokens computes each of them; anything else is encoded prompt by prompt."""
        batched = self._encode_batched(token_list)
        if batched is not None:
            return batched
        conds, pooled = zip(*(self.encode(t) for t in token_list))
        pooled = None if pooled[0] is None else torch.cat(pooled)
        return torch.cat(conds), pooled

    def _encode_batched(self, token_list):
        m = self.clip.cond_stage_model
        sdxl = isinstance(m, comfy.sdxl_clip.SDXLClipModel) and set(self.keys) == {"l", "g"}
        if not (sdxl or (isinstance(m, comfy.sd1_clip.SD1ClipModel) and len(self.keys) == 1)):
            return None
        for tokens in token_list:
            for key in self.keys:
                if len(tokens[key]) != 1 or any(t[1] != 1.0 for t in tokens[key][0]):
                    return None
        m.reset_clip_options()
        if self.clip.layer_idx is not None:
            m.set_clip_options({"layer": self.clip.layer_idx})
        out = {}
        for key in self.keys:
            o = self.encoders[key].encode([[t[0] for t in tokens[key][0]] for tokens in token_list])
            out[key] = (o[0], o[1])
        if sdxl:
            (lz, _), (gz, gp) = out["l"], out["g"]
            cut = min(lz.shape[1], gz.shape[1])
            return torch.cat([lz[:, :cut], gz[:, :cut]], dim=-1), gp
        return out[self.keys[0]]


# ---------------------------------------------------------------------------------------------
def encoder_prefixes(clip) -> list[str]:
    """State-dict prefixes of the CLIP text encoders in a CLIP ("clip_l.", or "clip_l." and "clip_g.")."""
    names = {n.split("transformer.text_model.", 1)[0] for n, _ in clip.cond_stage_model.named_parameters()
             if "transformer.text_model." in n}
    return sorted(names)


class EncoderCopy:
    """A trainable float32 copy of the `transformer.text_model.*` weights of one text encoder of a
    CLIP (`prefix`, e.g. "clip_l."), taken as the CLIP encodes (its patches applied).

    Inside `swapped()` these parameters stand in the CLIP's modules, so every encode there is the
    trainable encoder, with gradients; outside it the modules hold their own (frozen) weights again,
    the original encoder. No second module is built, and nothing ComfyUI moves or unloads ever holds
    the copy. Float32 also in fp16/bf16 models: updates of a 1e-6 learning rate vanish in fp16. The
    CLIP computes in float32 whatever its weights' dtype, so the copy needs no casts."""

    def __init__(self, clip, prefix: str, device=None):
        mm.load_models_gpu([clip.patcher], force_full_load=True, force_patch_weights=True)
        root = clip.cond_stage_model
        self.prefix = prefix + "transformer."
        modules = dict(root.named_modules())
        self.params: dict[str, torch.nn.Parameter] = {}
        self._owners = {}
        for name, p in root.named_parameters():
            if name.startswith(self.prefix + "text_model."):
                self.params[name] = torch.nn.Parameter(p.detach().to(device or p.device, torch.float32, copy=True))
                owner, attr = name.rsplit(".", 1)
                self._owners[name] = (modules[owner], attr)
        if not self.params:
            raise ValueError(f"The CLIP has no text encoder under '{prefix}'.")
        # the rest of the encoder (text_projection), kept for a complete file
        self.rest = {k: v.detach().to("cpu", copy=True) for k, v in root.state_dict().items()
                     if k.startswith(self.prefix) and k not in self.params}

    @contextlib.contextmanager
    def swapped(self):
        saved = []
        try:
            for name, p in self.params.items():
                module, attr = self._owners[name]
                saved.append((module, attr, module._parameters[attr]))
                module._parameters[attr] = p
            yield
        finally:
            for module, attr, old in reversed(saved):
                module._parameters[attr] = old

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole encoder in HF CLIPTextModel keys (as the core Save CLIP node writes them): the
        trained weights, float32, and the untrained rest as it was."""
        cut = len(self.prefix)
        return {**{k[cut:]: v for k, v in self.rest.items()},
                **{k[cut:]: p.detach().float() for k, p in self.params.items()}}


def decode(vae, diffusion: Diffusion, x: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, H, W] in 0..1 from model-space latents, with autograd through the decoder
    (VAE.decode cannot: its tiled out-of-memory fallback runs under inference mode, research T3)."""
    z = diffusion.model.process_latent_out(x)
    images = vae.first_stage_model.decode(z.to(vae.device, vae.vae_dtype)).float()
    return vae.process_output(images)
