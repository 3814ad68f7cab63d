"""Decision Transformer hyperparameters, read and written as Hugging Face's `config.json`."""

from dataclasses import dataclass
from typing import ClassVar

from seqrl.planners.checkpoint import PretrainedConfig


@dataclass
class DecisionTransformerConfig(PretrainedConfig):
    """The fields and defaults of transformers' `DecisionTransformerConfig`."""

    model_type: ClassVar[str] = "decision_transformer"
    architecture: ClassVar[str] = "DecisionTransformerModel"

    state_dim: int = 17
    act_dim: int = 4
    hidden_size: int = 128
    max_ep_len: int = 4096
    action_tanh: bool = True
    vocab_size: int = 1
    n_positions: int = 1024
    n_layer: int = 3
    n_head: int = 1
    n_inner: int | None = None
    activation_function: str = "relu"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    use_cache: bool = True
    bos_token_id: int = 50256
    eos_token_id: int = 50256
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
