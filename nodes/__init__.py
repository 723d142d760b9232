"""The ComfyUI face of TextTune: V3 node schemas with short `execute` methods."""
from .fusion import ConceptPrompt, FusionGuider, KSamplerFusion
from .promptnet import LoadPromptNet, TrainPromptNet
from .reward_training import TrainRewardLoRA, TrainRewardTextEncoder
from .rewards import CombineRewards, LoadRewardModel, ScoreImages
from .text_encoders import BlendTextEncoders, LoadTextEncoder
from .textboost import LoadTextBoost, TrainTextBoost
from .textual_inversion import TrainTextualInversion

NODES = [TrainTextualInversion, TrainTextBoost, LoadTextBoost, LoadTextEncoder, BlendTextEncoders,
         ConceptPrompt, FusionGuider, KSamplerFusion, LoadRewardModel, CombineRewards, ScoreImages,
         TrainRewardTextEncoder, TrainRewardLoRA, LoadPromptNet, TrainPromptNet]
