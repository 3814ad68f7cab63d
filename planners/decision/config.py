"""Decision Transformer hyperparameters, read and written as Hugging Face's `config.json`."""

from dataclasses import dataclass
from typing import ClassVar

from seqrl import SeqrlError
from seqrl.agents.options import Spec
from seqrl.planners.checkpoint import PretrainedConfig

SIZE, LAYERS, FRACTION = Spec("", low=1, high=1 << 16), Spec("", low=1, high=256), Spec("", low=0, high=1)


@dataclass
class DecisionTransformerConfig(PretrainedConfig):
    """The fields and defaults of transformers' `DecisionTransformerConfig`."""

    model_type: ClassVar[str] = "decision_transformer"
    architecture: ClassVar[str] = "DecisionTransformerModel"
    limits: ClassVar[dict[str, Spec]] = {
        **dict.fromkeys(("state_dim", "act_dim", "hidden_size", "n_positions", "n_inner"), SIZE),
        **dict.fromkeys(("n_layer", "n_head"), LAYERS),
        **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), FRACTION),
        "max_ep_len": Spec("", low=1, high=1 << 24),
        "vocab_size": Spec("", low=1, high=1 << 20),
        "layer_norm_epsilon": Spec("", above=0, high=1),
        "initializer_range": Spec("", low=0, high=10),
    }

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

    def check(self) -> None:
        if self.hidden_size % self.n_head:
            raise SeqrlError(f"hidden_size {self.hidden_size} is not divisible by n_head {self.n_head}; fix the config")
