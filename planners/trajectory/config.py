"""Trajectory Transformer hyper-parameters, read from and written to Hugging Face's `config.json`."""

from dataclasses import dataclass
from typing import ClassVar

from seqrl import SeqrlError
from seqrl.agents.options import Spec
from seqrl.planners.checkpoint import PretrainedConfig

SIZE, LAYERS, FRACTION = Spec("", low=1, high=1 << 16), Spec("", low=1, high=256), Spec("", low=0, high=1)


@dataclass
class TrajectoryTransformerConfig(PretrainedConfig):
    """The fields and defaults of transformers' `TrajectoryTransformerConfig` (model_type "trajectory_transformer").

    A transition is `observation_dim + action_dim + 2` tokens (observation, action, reward, value),
    each in `vocab_size` bins; token `vocab_size` is the stop token. `layer_norm_eps`,
    `learning_rate`, `max_position_embeddings` and the special token ids are kept for the
    `config.json` round trip only: like transformers, the model's LayerNorms use eps 1e-5.
    """

    model_type = "trajectory_transformer"
    architecture = "TrajectoryTransformerModel"
    limits: ClassVar[dict[str, Spec]] = {
        **dict.fromkeys(
            ("vocab_size", "action_dim", "observation_dim", "transition_dim", "n_embd", "max_position_embeddings"), SIZE
        ),
        **dict.fromkeys(("n_layer", "n_head"), LAYERS),
        **dict.fromkeys(("embd_pdrop", "attn_pdrop", "resid_pdrop"), FRACTION),
        "block_size": Spec("", low=1, high=1 << 14),  # the causal mask is block_size² per layer
        **dict.fromkeys(("action_weight", "reward_weight", "value_weight", "learning_rate"), Spec("", low=0, high=1e6)),
        **dict.fromkeys(
            ("initializer_range", "kaiming_initializer_range", "layer_norm_eps"), Spec("", low=0, high=100)
        ),
    }

    vocab_size: int = 100
    action_weight: float = 5
    reward_weight: float = 1
    value_weight: float = 1
    block_size: int = 249
    action_dim: int = 6
    observation_dim: int = 17
    transition_dim: int = 25
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    learning_rate: float = 6e-4
    max_position_embeddings: int = 512
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    kaiming_initializer_range: float = 1
    use_cache: bool = True
    pad_token_id: int = 1
    bos_token_id: int = 50256
    eos_token_id: int = 50256

    def check(self) -> None:
        if self.transition_dim != self.observation_dim + self.action_dim + 2:
            raise SeqrlError(
                f"transition_dim {self.transition_dim} must be observation_dim + action_dim + 2 = "
                f"{self.observation_dim + self.action_dim + 2} (observation, action, reward, value); fix the config"
            )
        if self.n_embd % self.n_head:
            raise SeqrlError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}; fix the config")
