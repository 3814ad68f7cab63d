"""CPU kernels for training: cheap dropout masks, causal attention that skips masked blocks, oneDNN linears.

The same arithmetic as `nn.Dropout`, `scaled_dot_product_attention` and `nn.Linear`; see benchmarks/tt_train.py.
- Dropout: the keep-mask compares 32 random bits per entry with a threshold, about four times
  cheaper than the `bernoulli_` draw behind `F.dropout` on CPU.
- Attention: on CPU, `scaled_dot_product_attention` has no fused kernel with dropout; it falls back
  to its math path over the whole (batch, n_head, length, total) matrix. `BlockedAttention` takes
  the queries in blocks, each multiplying (and drawing dropout for) only the keys up to its last
  query, about 5/8 of the matrix at 4 blocks, with a hand-written backward.
- Linear layers in fp32: oneDNN's GEMM (through the private `torch.ops.mkldnn._linear_pointwise`,
  which torch.compile uses) runs these shapes 10-25% faster than MKL's on the AMD EPYC measured here.
  Being private, it is checked once, at first use, against `F.linear` on the running torch; `linear`
  falls back to `F.linear` where it is missing or differs.
"""

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

QUERY_BLOCK = 40  # queries per block: fewer blocks compute more masked entries, more blocks make small matmuls


def mask_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where `allowed`, -inf elsewhere: added to scores, it gives the bits of `masked_fill(~allowed, -inf)`."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def keep_mask(shape: tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """A uint8 tensor of `shape`, each entry 0 with probability p (to within 2**-32) and 1 otherwise."""
    count = math.prod(shape)
    bits = torch.empty((count + 1) // 2, dtype=torch.int64, device=device).random_(-(2**63), None)  # all 64 bits random
    threshold = round(p * 2**32) - 2**31  # an int32 lane is >= threshold with probability 1 - p
    # uint8 rather than bool: multiplying a float tensor by uint8 is vectorized, by bool several times slower
    return (bits.view(torch.int32)[:count].view(shape) >= threshold).view(torch.uint8)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with the keep-mask of `keep_mask` on CPU."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, training)
    return x * keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1 / (1 - p))


class BitDropout(nn.Dropout):
    """`nn.Dropout` whose keep-mask comes from `keep_mask` on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x with each entry zeroed with probability p and the rest scaled by 1 / (1 - p), in training."""
        return dropout(x, self.p, self.training)


class BlockedAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(head_dim) over allowed keys), dropout p, times v, by blocks of queries."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor, p: float):
        """query (rows, length, head_dim), key and value (rows, total, head_dim); allowed (length, total) is causal."""
        rows, length, head_dim = query.shape
        total = allowed.shape[1]
        start = total - length  # cached keys before the first query
        bias = mask_bias(allowed, query.dtype)
        scaled = query * (1 / math.sqrt(head_dim))
        blocks, outputs = [], []
        for first in range(0, length, QUERY_BLOCK):
            last = min(first + QUERY_BLOCK, length)
            keys = start + last  # this block's queries attend to keys [0, keys) at most
            scores = torch.bmm(scaled[:, first:last], key[:, :keys].transpose(1, 2))  # (rows, queries, keys)
            weights = torch.softmax(scores.add_(bias[first:last, :keys]), dim=-1)
            keep = keep_mask(weights.shape, p, weights.device)  # drawn for the computed block only
            kept = weights * keep  # 1 / (1 - p) is applied to the smaller output instead
            outputs.append(torch.bmm(kept, value[:, :keys]))
            blocks.append((first, last, keys, weights, keep, kept))
        attended = torch.cat(outputs, dim=1).mul_(1 / (1 - p))  # (rows, length, head_dim)
        ctx.blocks, ctx.p = blocks, p  # intermediate tensors, neither inputs nor outputs
        ctx.save_for_backward(scaled, key, value, attended)
        return attended

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """Gradients for query, key and value (flash attention's formulas, with dropout)."""
        scaled, key, value, attended = ctx.saved_tensors
        # softmax backward: weights * (d_weights - rowsum(d_weights * weights)); that row sum is rowsum(grad * attended)
        row_sums = (grad * attended).sum(dim=-1, keepdim=True)  # (rows, length, 1)
        grad = grad * (1 / (1 - ctx.p))
        grad_query, grad_key, grad_value = [], torch.zeros_like(key), torch.zeros_like(value)
        for first, last, keys, weights, keep, kept in ctx.blocks:
            grad_value[:, :keys] += torch.bmm(kept.transpose(1, 2), grad[:, first:last])
            grad_scores = torch.bmm(grad[:, first:last], value[:, :keys].transpose(1, 2))  # (rows, queries, keys)
            grad_scores.mul_(keep).sub_(row_sums[:, first:last]).mul_(weights)
            grad_query.append(torch.bmm(grad_scores, key[:, :keys]))
            grad_key[:, :keys] += torch.bmm(grad_scores.transpose(1, 2), scaled[:, first:last])
        ctx.blocks = None
        grad_query = torch.cat(grad_query, dim=1).mul_(1 / math.sqrt(scaled.shape[-1]))
        return grad_query, grad_key, grad_value, None, None


def blocked_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor, p: float
) -> torch.Tensor:
    """SDPA with `attn_mask=allowed, dropout_p=p` on (batch, n_head, tokens, head_dim), by `BlockedAttention`."""
    batch, n_head, length, head_dim = query.shape

    def rows(tensor: torch.Tensor) -> torch.Tensor:
        # (batch, n_head, tokens, head_dim) -> (batch * n_head, tokens, head_dim), contiguous for bmm
        return tensor.reshape(batch * n_head, -1, head_dim)

    return BlockedAttention.apply(rows(query), rows(key), rows(value), allowed, p).view(batch, n_head, length, head_dim)


class OneDnnLinear(torch.autograd.Function):
    """x @ weight^T + bias with oneDNN's GEMM for the output and the input's gradient, MKL's for the weight's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) -> (..., out_features)."""
        flat = x.reshape(-1, x.shape[-1])  # (tokens, in_features)
        ctx.save_for_backward(flat, weight)
        return torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "none", [], "").view(*x.shape[:-1], -1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Gradients for x, weight and bias."""
        flat, weight = ctx.saved_tensors
        flat_grad = grad.reshape(-1, grad.shape[-1])  # (tokens, out_features)
        grad_x = torch.ops.mkldnn._linear_pointwise(flat_grad, weight.t(), None, "none", [], "")  # flat_grad @ weight
        return grad_x.view(*grad.shape[:-1], -1), flat_grad.t() @ flat, flat_grad.sum(dim=0)


@functools.cache
def onednn_linear_works() -> bool:
    """Whether this torch has the private oneDNN linear and it computes what `OneDnnLinear` relies on."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    generator = torch.Generator().manual_seed(0)
    x, weight, bias, grad = (torch.randn(shape, generator=generator) for shape in ((5, 7), (3, 7), (3,), (5, 3)))
    try:
        output = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        grad_x = torch.ops.mkldnn._linear_pointwise(grad, weight.t(), None, "none", [], "")
    except (RuntimeError, TypeError):  # a changed signature or an unsupported build
        return False
    close = functools.partial(torch.allclose, rtol=1e-4, atol=1e-5)
    return close(output, F.linear(x, weight, bias)) and close(grad_x, grad @ weight)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through `OneDnnLinear` when computing gradients in fp32 on CPU."""
    fp32_cpu = x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    if fp32_cpu and torch.is_grad_enabled() and onednn_linear_works():
        return OneDnnLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) -> (..., out_features)."""
        return linear(x, self.weight, self.bias)
