"""The Decision Transformer: a GPT-2 over (return-to-go, state, action) tokens, weight-compatible with transformers."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from seqrl import SeqrlError
from seqrl.planners.checkpoint import PretrainedModel
from seqrl.planners.decision.config import DecisionTransformerConfig
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


class Conv1D(nn.Module):
    """GPT-2's linear layer, with its weight stored as (in_features, out_features)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out)."""
        y = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return y.view(*x.shape[:-1], -1)


class Attention(nn.Module):
    """Causal multi-head self-attention with GPT-2's scaling options."""

    def __init__(self, config: DecisionTransformerConfig, layer_idx: int):
        super().__init__()
        if config.hidden_size % config.n_head:
            raise SeqrlError(
                f"hidden_size {config.hidden_size} is not divisible by n_head {config.n_head}; fix config.json"
            )
        self.n_head = config.n_head
        self.c_attn = Conv1D(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = Conv1D(config.hidden_size, config.hidden_size)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        head_dim = config.hidden_size // config.n_head
        self.scale = (head_dim**-0.5 if config.scale_attn_weights else 1.0) / (
            layer_idx + 1 if config.scale_attn_by_inverse_layer_idx else 1
        )
        self.upcast = config.reorder_and_upcast_attn

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, output_attentions: bool, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C), additive bias (B, 1, T, T) -> output (B, T or 1, C) and maybe weights (B, nh, T or 1, T)."""
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        if last_only:  # only the last token's output is wanted: one query row
            q, bias = q[:, :, -1:], bias[:, :, -1:]
        weights = None
        if output_attentions or (self.upcast and x.dtype != torch.float32):
            if self.upcast:
                q, k = q.float(), k.float()
            scores = (q @ k.transpose(-1, -2)) * self.scale + bias.to(q.dtype)  # (B, nh, T, T)
            weights = self.attn_dropout(scores.softmax(dim=-1).to(v.dtype))
            y = weights @ v
        else:
            dropout = self.attn_dropout.p if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=self.scale)
        y = y.transpose(1, 2).reshape(B, -1, C)  # (B, nh, T, hd) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y)), weights


class MLP(nn.Module):
    """GPT-2's feed-forward layer."""

    def __init__(self, config: DecisionTransformerConfig):
        super().__init__()
        if config.activation_function not in ACTIVATIONS:
            raise SeqrlError(
                f"activation_function {config.activation_function!r} is not supported; use one of {sorted(ACTIVATIONS)}"
            )
        inner = config.n_inner or 4 * config.hidden_size
        self.c_fc = Conv1D(config.hidden_size, inner)
        self.act = ACTIVATIONS[config.activation_function]()
        self.c_proj = Conv1D(inner, config.hidden_size)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C)."""
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """A pre-norm transformer block."""

    def __init__(self, config: DecisionTransformerConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, output_attentions: bool, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) -> (B, T, C), or (B, 1, C) for the last token only, and the attention weights if asked."""
        attended, weights = self.attn(self.ln_1(x), bias, output_attentions, last_only)
        x = (x[:, -1:] if last_only else x) + attended
        return x + self.mlp(self.ln_2(x)), weights


class DecisionTransformerGPT2Model(nn.Module):
    """The GPT-2 trunk, fed embeddings; its token table `wte` is unused but kept so weight files line up."""

    def __init__(self, config: DecisionTransformerConfig):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.n_positions, config.hidden_size)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """Embeddings (B, T, C) and key mask (B, T) of 1/0 -> last hidden state, per-layer hidden states, attentions.

        With `last_only` the last block computes the last token alone, and the hidden state is (B, 1, C).
        """
        B, T, _ = inputs_embeds.shape
        lowest = torch.finfo(inputs_embeds.dtype).min
        causal = torch.ones(T, T, dtype=torch.bool, device=inputs_embeds.device).tril()
        bias = torch.zeros(T, T, dtype=inputs_embeds.dtype, device=inputs_embeds.device).masked_fill(~causal, lowest)
        if attention_mask is not None:  # padded keys get another `lowest`, as transformers adds
            bias = bias + (1.0 - attention_mask.to(inputs_embeds.dtype))[:, None, None, :] * lowest  # (B, 1, T, T)
        bias = bias.expand(B, 1, T, T)
        # transformers' DT passes all-zero position ids: row 0 of wpe is added to every token.
        x = self.drop(inputs_embeds + self.wpe.weight[0])
        hidden_states, attentions = [], []
        for i, block in enumerate(self.h):
            hidden_states.append(x)
            x, weights = block(x, bias, output_attentions, last_only and i == len(self.h) - 1)
            attentions.append(weights)
        x = self.ln_f(x)
        hidden_states.append(x)
        return (
            x,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )


@dataclass
class DecisionTransformerOutput:
    """What `DecisionTransformerModel.forward` returns, with transformers' field names."""

    last_hidden_state: torch.Tensor
    state_preds: torch.Tensor
    action_preds: torch.Tensor
    return_preds: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class DecisionTransformerModel(PretrainedModel):
    """Predicts actions (and next states, returns) from interleaved return-to-go, state and action tokens."""

    config_class = DecisionTransformerConfig
    ignored_keys = (r"\.attn\.bias$", r"\.attn\.masked_bias$")  # causal-mask buffers older transformers saved

    def __init__(self, config: DecisionTransformerConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.encoder = DecisionTransformerGPT2Model(config)
        self.embed_timestep = nn.Embedding(config.max_ep_len, hidden)
        self.embed_return = nn.Linear(1, hidden)
        self.embed_state = nn.Linear(config.state_dim, hidden)
        self.embed_action = nn.Linear(config.act_dim, hidden)
        self.embed_ln = nn.LayerNorm(hidden)  # transformers uses the default eps here, not layer_norm_epsilon
        self.predict_state = nn.Linear(hidden, config.state_dim)
        self.predict_action = nn.Sequential(
            nn.Linear(hidden, config.act_dim), *([nn.Tanh()] if config.action_tanh else [])
        )
        self.predict_return = nn.Linear(hidden, 1)
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2 scales the residual projections by depth
                nn.init.normal_(parameter, std=config.initializer_range / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, Conv1D)):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def embed(
        self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Interleaved, normalized token embeddings (B, 3T, C): R_1 s_1 a_1 R_2 s_2 a_2 ..."""
        B, T = states.shape[:2]
        time = self.embed_timestep(timesteps)  # (B, T, C)
        tokens = torch.stack(
            (
                self.embed_return(returns_to_go) + time,
                self.embed_state(states) + time,
                self.embed_action(actions) + time,
            ),
            dim=2,
        )  # (B, T, 3, C)
        return self.embed_ln(tokens.reshape(B, 3 * T, -1))

    def last_action(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """`forward(...).action_preds[:, -1]` (B, act_dim), computing only what the last state token needs."""
        tokens = self.embed(states, actions, returns_to_go, timesteps)[:, :-1]  # the last action token comes after
        token_mask = attention_mask.repeat_interleave(3, dim=1)[:, :-1]  # (B, 3T - 1)
        last, _, _ = self.encoder(tokens, token_mask, last_only=True)
        return self.predict_action(last[:, -1])

    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor | None,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        return_dict: bool = True,
    ) -> DecisionTransformerOutput | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """states (B, T, S), actions (B, T, A), returns_to_go (B, T, 1), timesteps, mask (B, T); rewards unused."""
        B, T = states.shape[:2]
        token_mask = None if attention_mask is None else attention_mask.repeat_interleave(3, dim=1)  # (B, 3T)
        last, hidden_states, attentions = self.encoder(
            self.embed(states, actions, returns_to_go, timesteps), token_mask, output_hidden_states, output_attentions
        )
        x = last.reshape(B, T, 3, -1)
        state_preds = self.predict_state(x[:, :, 2])  # from (state, action): the next state
        action_preds = self.predict_action(x[:, :, 1])  # from the state token: this step's action
        return_preds = self.predict_return(x[:, :, 2])
        if not return_dict:
            return state_preds, action_preds, return_preds
        return DecisionTransformerOutput(last, state_preds, action_preds, return_preds, hidden_states, attentions)
