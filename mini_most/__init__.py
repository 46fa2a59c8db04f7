"""mini-MoST: an educational reimplementation of MoST, a speech-text LLM with modality-aware MoE."""

from .model import AUDIO, PRESETS, TEXT, KVCache, MoST, MoSTConfig, MoSTOutput, Routing
from .utils import DATA_SAMPLES, by_scale, scale, set_seed

__all__ = ["AUDIO", "PRESETS", "TEXT", "KVCache", "MoST", "MoSTConfig", "MoSTOutput", "Routing",
           "by_scale", "scale", "set_seed", "DATA_SAMPLES"]
__version__ = "0.4.2"
