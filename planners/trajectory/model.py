"""Trajectory Transformer (Janner, Li, Levine 2021): a GPT over discretized transitions.

Parameter names and shapes are those of transformers' `TrajectoryTransformerModel`, so state dicts
load both ways. Unlike transformers, decoding with `past_key_values` is exact: new tokens sit at
absolute positions after the cached ones, for the position embedding, the per-dimension token
offset, the value mask and the output head alike.

Cache format (`past_key_values`): a tuple with one `(key, value)` pair per layer, each a plain
tensor of shape (batch, n_head, cached_length, n_embd // n_head). Select or repeat rows (beams)
with `select_cache`. Keys carry their absolute positions, so a cache cannot be cropped at the
front; the cached plus new length may not exceed `block_size`.

For planning, `decode` appends tokens to a `KVCache` instead: buffers allocated once for a
search's rows and window, written in place, with one fused query/key/value product per layer.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from seqrl import SeqrlError
from seqrl.planners.checkpoint import PretrainedModel
from seqrl.planners.trajectory.config import TrajectoryTransformerConfig
from seqrl.planners.trajectory.kernels import BitDropout, Linear, blocked_attention, mask_bias
from torch import nn

LayerCache = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrajectoryTransformerOutput:
    """What `TrajectoryTransformerModel.forward` returns, fields as in transformers."""

    loss: torch.Tensor | None = None  # scalar, when targets are given
    logits: torch.Tensor | None = None  # (batch, length, vocab_size + 1)
    past_key_values: tuple[LayerCache, ...] | None = None  # per layer (key, value), (batch, n_head, total, head_dim)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # n_layer + 1 of (batch, length, n_embd)
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (batch, n_head, length, total)


def select_cache(past_key_values: tuple[LayerCache, ...], index: torch.Tensor) -> tuple[LayerCache, ...]:
    """The cache rows `index` (a 1-D LongTensor over the batch; repeat a row to fork beams)."""
    return tuple((key.index_select(0, index), value.index_select(0, index)) for key, value in past_key_values)


class KVCache:
    """Preallocated keys and values of `rows` histories of up to `tokens` tokens, for `decode`.

    Row r's positions [0, length) hold the keys and values of history r. The fused query/key/value
    weights are taken from the model when the cache is made: make a new cache after changing weights.
    """

    def __init__(self, model: "TrajectoryTransformerModel", rows: int, tokens: int) -> None:
        config, weight = model.config, model.tok_emb.weight
        if tokens > config.block_size:
            raise SeqrlError(
                f"a cache of {tokens} tokens exceeds the model's block size {config.block_size}; shorten the context"
            )
        # per layer, keys [0] and values [1] side by side, so that one copy writes both
        shape = (2, rows, config.n_head, tokens, config.n_embd // config.n_head)
        self.layers = [weight.new_empty(shape) for _ in model.blocks]
        self.qkv = [block.attn.fused_qkv() for block in model.blocks]  # per layer (weight, bias)
        # (tokens, tokens), sliced by each decode: made once here instead of a negation, a copy and a fill per layer
        self.bias = mask_bias(model.allowed_keys(0, tokens), weight.dtype)
        self.rows, self.tokens, self.length = rows, tokens, 0

    def copy_rows(self, targets: torch.Tensor, sources: torch.Tensor) -> None:
        """Give rows `targets` the histories of rows `sources` (1-D LongTensors; all sources are read first)."""
        for buffer in self.layers:
            # whole rows, positions past `length` too (written before they are read): each row's (n_head, tokens,
            # head_dim) block is contiguous, while index_select on a view cut at `length` first copies every row
            buffer.index_copy_(1, targets, buffer.index_select(1, sources))


def attention_weights(query: torch.Tensor, key: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(query key^T / sqrt(head_dim) + bias) (rows, length, total) of query (rows, length, head_dim) and key
    (rows, total, head_dim); `bias` (length, total) is 0 or -inf (`mask_bias`)."""
    scores = torch.bmm(query, key.transpose(1, 2)).div_(math.sqrt(key.size(-1))).add_(bias)
    return F.softmax(scores, dim=-1)


class EinLinear(nn.Module):
    """A bias-free linear layer per position within a transition."""

    def __init__(self, n_models: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_models, out_features, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., n_models, in_features) -> (..., n_models, out_features)."""
        return torch.einsum("moi,...mi->...mo", self.weight, x)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention under a given mask of allowed (query, key) pairs."""

    def __init__(self, config: TrajectoryTransformerConfig) -> None:
        super().__init__()
        self.key = Linear(config.n_embd, config.n_embd)
        self.query = Linear(config.n_embd, config.n_embd)
        self.value = Linear(config.n_embd, config.n_embd)
        self.proj = Linear(config.n_embd, config.n_embd)
        self.attn_drop = BitDropout(config.attn_pdrop)
        self.resid_drop = BitDropout(config.resid_pdrop)
        self.n_head = config.n_head

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, layer_past: LayerCache | None, output_attentions: bool
    ) -> tuple[torch.Tensor, LayerCache, torch.Tensor | None]:
        """Attend from x (batch, length, n_embd) to the cached and new keys; `allowed` is (length, total)."""
        batch, length, width = x.shape

        def heads(projected: torch.Tensor) -> torch.Tensor:
            # (batch, length, width) -> (batch, n_head, length, head_dim)
            return projected.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2)

        key, query, value = heads(self.key(x)), heads(self.query(x)), heads(self.value(x))
        if layer_past is not None:
            key = torch.cat((layer_past[0], key), dim=2)
            value = torch.cat((layer_past[1], value), dim=2)
        p = self.attn_drop.p if self.training else 0.0
        if output_attentions or (length == 1 and p == 0.0):  # one query (decoding): plain products beat SDPA on CPU
            # (batch, n_head, tokens, head_dim) -> (batch * n_head, tokens, head_dim) for `attention_weights`
            flat = (batch * self.n_head, -1, width // self.n_head)
            weights = attention_weights(query.reshape(flat), key.reshape(flat), mask_bias(allowed, query.dtype))
            weights = self.attn_drop(weights.view(batch, self.n_head, length, -1))  # (batch, n_head, length, total)
            attended = weights @ value
            weights = weights if output_attentions else None
        elif 0 < p < 1 and x.device.type == "cpu":  # SDPA's CPU kernels cannot drop out: its math path is slow
            weights = None
            attended = blocked_attention(query, key, value, allowed, p)
        else:
            weights = None
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, dropout_p=p)
        attended = attended.transpose(1, 2).reshape(batch, length, width)  # heads side by side again
        return self.resid_drop(self.proj(attended)), (key, value), weights

    def fused_qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The query, key and value layers as one: weight (3 * n_embd, n_embd) and bias (3 * n_embd,)."""
        layers = (self.query, self.key, self.value)
        weight, bias = torch.cat([layer.weight for layer in layers]), torch.cat([layer.bias for layer in layers])
        return weight.detach(), bias.detach()

    def decode(self, x: torch.Tensor, cache: KVCache, layer: int, bias: torch.Tensor, last_only: bool) -> torch.Tensor:
        """Attention of x (rows, n, n_embd) at positions [cache.length, cache.length + n), its keys and values
        written into the cache's buffers of `layer`; `bias` (n, cache.length + n) is 0 or -inf. With `last_only`,
        only the last position's output is computed (rows, 1, n_embd)."""
        rows, length, width = x.shape
        buffer = cache.layers[layer]  # (2, capacity, n_head, tokens, head_dim): keys, values
        start, end = cache.length, cache.length + length
        # (rows, n, 3 * width) -> (3, rows, n_head, n, head_dim): queries, keys, values
        projected = F.linear(x, *cache.qkv[layer]).view(rows, length, 3, self.n_head, -1).permute(2, 0, 3, 1, 4)
        buffer[:, :rows, :, start:end] = projected[1:]
        query = projected[0]
        if last_only:
            query, bias, length = query[:, :, -1:], bias[-1:], 1
        # every row attends over its own cache row: one history's arithmetic never depends on the other rows, so a
        # slot of a batched search computes bit for bit what it computes alone. The products run by bmm on
        # (rows * n_head, ...) views: what `@` computes on 4-D operands, without its broadcasting ops.
        head_dim = width // self.n_head
        query = query.reshape(rows * self.n_head, length, head_dim)
        keys, values = buffer[:, :rows, :, :end].reshape(2, rows * self.n_head, end, head_dim)  # views
        attended = torch.bmm(attention_weights(query, keys, bias), values)  # (rows * n_head, n, head_dim)
        # (rows * n_head, n, head_dim) -> (rows, n, width): heads side by side again
        attended = attended.view(rows, self.n_head, length, head_dim).transpose(1, 2).reshape(rows, length, width)
        return F.linear(attended, self.proj.weight, self.proj.bias)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention then a 4x GELU MLP, each with a residual."""

    def __init__(self, config: TrajectoryTransformerConfig) -> None:
        super().__init__()
        # transformers builds these with LayerNorm's default eps (1e-5), not config.layer_norm_eps
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.l1 = Linear(config.n_embd, 4 * config.n_embd)
        self.act = nn.GELU()
        self.l2 = Linear(4 * config.n_embd, config.n_embd)
        self.drop = BitDropout(config.resid_pdrop)

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, layer_past: LayerCache | None, output_attentions: bool
    ) -> tuple[torch.Tensor, LayerCache, torch.Tensor | None]:
        """The block's output for x (batch, length, n_embd), its (key, value) cache and attention weights."""
        attended, present, weights = self.attn(self.ln1(x), allowed, layer_past, output_attentions)
        x = x + attended
        x = x + self.drop(self.l2(self.act(self.l1(self.ln2(x)))))
        return x, present, weights

    def decode(self, x: torch.Tensor, cache: KVCache, layer: int, bias: torch.Tensor, last_only: bool) -> torch.Tensor:
        """`forward` at inference, writing keys and values into the cache (see `CausalSelfAttention.decode`)."""
        width = x.shape[-1]
        normed = F.layer_norm(x, (width,), self.ln1.weight, self.ln1.bias, self.ln1.eps)
        attended = self.attn.decode(normed, cache, layer, bias, last_only)
        x = x[:, -1:] + attended if last_only else x + attended
        normed = F.layer_norm(x, (width,), self.ln2.weight, self.ln2.bias, self.ln2.eps)
        hidden = F.gelu(F.linear(normed, self.l1.weight, self.l1.bias))  # (rows, n, 4 * n_embd)
        return x + F.linear(hidden, self.l2.weight, self.l2.bias)


class TrajectoryTransformerModel(PretrainedModel):
    """GPT over transitions [observation, action, reward, value] of tokens in [0, vocab_size]; vocab_size = stop."""

    config_class = TrajectoryTransformerConfig
    ignored_keys = (r"^blocks\.\d+\.attn\.mask$",)  # transformers stores its causal mask as a buffer

    def __init__(self, config: TrajectoryTransformerConfig) -> None:
        super().__init__()
        self.config = config
        # one embedding row per (dimension, bin), plus the stop token at the end
        self.tok_emb = nn.Embedding(config.vocab_size * config.transition_dim + 1, config.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd))
        self.drop = BitDropout(config.embd_pdrop)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = EinLinear(config.transition_dim, config.n_embd, config.vocab_size + 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """transformers' initialisation: normal(0, initializer_range) matrices, kaiming-uniform heads, zero pos_emb."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, self.config.initializer_range)
                if isinstance(module, nn.Linear):
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, EinLinear):
                for weight in module.weight:
                    nn.init.kaiming_uniform_(weight, a=math.sqrt(5) / self.config.kaiming_initializer_range)
        self.pos_emb.zero_()

    def state_dict_to_save(self) -> dict[str, torch.Tensor]:
        """The weights plus transformers' per-layer `attn.mask` buffers, so transformers loads them without warnings."""
        size, transition_dim = self.config.block_size, self.config.transition_dim
        mask = torch.ones(size, size).tril()
        mask[:, transition_dim - 1 :: transition_dim] = 0  # no position attends to a value token
        masks = {f"blocks.{index}.attn.mask": mask.view(1, 1, size, size).clone() for index in range(len(self.blocks))}
        return {**self.state_dict(), **masks}

    def forward(
        self,
        trajectories: torch.Tensor,
        past_key_values: tuple[LayerCache, ...] | None = None,
        targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TrajectoryTransformerOutput | tuple[torch.Tensor, ...]:
        """Logits for the next token after each of `trajectories` (batch, length), which follow the cached tokens.

        `targets` (batch, length) gives the weighted cross-entropy loss, scaled per token by
        `attention_mask` (batch, length) and averaged over all tokens, as transformers does.
        """
        config = self.config
        use_cache = config.use_cache if use_cache is None else use_cache
        length = trajectories.shape[1]
        start = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if start + length > config.block_size:
            raise SeqrlError(
                f"cannot forward {start} cached + {length} new tokens: the model's block size is {config.block_size}; "
                "shorten the context"
            )
        positions = torch.arange(start, start + length, device=trajectories.device)
        x = self.drop(self.embed(trajectories, start))  # (batch, length, n_embd)
        allowed = self.allowed_keys(start, length)

        presents, hidden_states, attentions = (), (), ()
        for index, block in enumerate(self.blocks):
            hidden_states += (x,)
            layer_past = None if past_key_values is None else past_key_values[index]
            x, present, weights = block(x, allowed, layer_past, bool(output_attentions))
            presents += (present,)
            attentions += (weights,)
        hidden_states += (x,)  # transformers returns the last block's output before ln_f

        logits = self.next_token_logits(self.ln_f(x), start)
        loss = None if targets is None else self.weighted_loss(logits, targets, attention_mask, positions)
        output = TrajectoryTransformerOutput(
            loss=loss,
            logits=logits,
            past_key_values=presents if use_cache else None,
            hidden_states=hidden_states if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
        )
        if return_dict is False:
            fields = (output.loss, output.logits, output.past_key_values, output.hidden_states, output.attentions)
            return tuple(field for field in fields if field is not None)
        return output

    def embed(self, trajectories: torch.Tensor, start: int) -> torch.Tensor:
        """Token plus position embeddings (batch, length, n_embd) of trajectories (batch, length) from `start` on."""
        config = self.config
        length = trajectories.shape[1]
        dimensions = torch.arange(start, start + length, device=trajectories.device) % config.transition_dim
        stop_token = config.vocab_size * config.transition_dim
        tokens = torch.where(
            trajectories == config.vocab_size, stop_token, trajectories + dimensions * config.vocab_size
        )
        return self.tok_emb(tokens) + self.pos_emb[:, start : start + length]

    def allowed_keys(self, start: int, length: int) -> torch.Tensor:
        """Keys each query at [start, start + length) sees, causal and never a value token: (length, start + length)."""
        transition_dim, device = self.config.transition_dim, self.pos_emb.device
        positions = torch.arange(start, start + length, device=device)
        key_positions = torch.arange(start + length, device=device)
        return (key_positions <= positions[:, None]) & (key_positions % transition_dim != transition_dim - 1)

    @torch.inference_mode()
    def decode(self, trajectories: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (rows, vocab_size + 1) of the token after trajectories (rows, n), appended to cache rows [0, rows)."""
        rows, length = trajectories.shape
        start, end = cache.length, cache.length + length
        if end > cache.tokens or rows > cache.rows:
            raise SeqrlError(
                f"cannot decode {rows} rows of {length} tokens after {start} into a cache of {cache.rows} rows of "
                f"{cache.tokens} tokens; make a larger cache"
            )
        x = self.embed(trajectories, start)  # (rows, length, n_embd)
        bias = cache.bias[start:end, :end]
        for index, block in enumerate(self.blocks):
            # the last block needs every new token's keys and values, but only the last token's output
            x = block.decode(x, cache, index, bias, index == len(self.blocks) - 1)
        cache.length = end
        last = F.layer_norm(x[:, -1], (x.shape[-1],), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)  # (rows, n_embd)
        return F.linear(last, self.head.weight[(end - 1) % self.config.transition_dim])

    def next_token_logits(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Apply the head of each token's position within its transition to x (batch, length, n_embd)."""
        batch, length, width = x.shape
        transition_dim = self.config.transition_dim
        before = start % transition_dim
        after = -(before + length) % transition_dim
        # pad to whole transitions: (batch, transitions, transition_dim, n_embd)
        x = F.pad(x, (0, 0, before, after)).view(batch, -1, transition_dim, width)
        logits = self.head(x).flatten(1, 2)  # (batch, transitions * transition_dim, vocab_size + 1)
        return logits[:, before : before + length]

    def weighted_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy, weighted by the dimension of each target (the token after each position)."""
        config = self.config
        losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
        weights = logits.new_ones(config.transition_dim)
        weights[config.observation_dim : -2] = config.action_weight
        weights[-2] = config.reward_weight
        weights[-1] = config.value_weight
        losses = losses * weights[(positions + 1) % config.transition_dim]
        if attention_mask is not None:
            losses = losses * attention_mask
        return losses.mean()
