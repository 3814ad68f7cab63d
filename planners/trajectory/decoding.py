"""Next-token logits for beam search, which sees only the last window of whole transitions.

Both decoders answer `logits(sequences)`: the model's distribution over the token after each row of
`sequences` (rows, length), computed on the window the original planner feeds its model, i.e. the
last `max_tokens` tokens or fewer, cropped at the front in whole transitions. `FullWindowDecoder`
re-encodes that window for every token, as the original does. `CachedDecoder` gives the same
logits from a preallocated `KVCache`: it encodes only the tokens appended since its last call,
keeps one cache row per distinct token history (beams forked from one parent share it until their
tokens differ) and, when the window slides (every position then changes), re-encodes the new
window, again sharing the common parts of the beams' histories. Cache rows stay where they are;
only a history that forks is copied, once, into a free row.
"""

import torch
from seqrl.planners.trajectory.model import KVCache, TrajectoryTransformerModel


def window_start(length: int, max_tokens: int, transition_dim: int) -> int:
    """Tokens the original crops from the front of a `length`-token sequence: whole transitions, to `max_tokens`."""
    excess = max(0, length - max_tokens)
    return -(-excess // transition_dim) * transition_dim


class FullWindowDecoder:
    """The original planner's forward pass: the whole cropped window of every row, every time (no cache)."""

    def __init__(self, model: TrajectoryTransformerModel, max_tokens: int) -> None:
        self.model = model
        self.max_tokens = max_tokens

    def logits(self, sequences: torch.Tensor) -> torch.Tensor:
        """Logits (rows, vocab_size + 1) of the token after each row of sequences (rows, length)."""
        start = window_start(sequences.shape[1], self.max_tokens, self.model.config.transition_dim)
        return self.model(sequences[:, start:], use_cache=False).logits[:, -1]

    def select(self, rows: torch.Tensor) -> None:
        """Beams were re-indexed with `rows`; nothing is kept between calls, so nothing to do."""


class CachedDecoder:
    """Exact incremental decoding over the cropped window, one shared cache row per distinct token history."""

    def __init__(self, model: TrajectoryTransformerModel, max_tokens: int, rows: int) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.cache = KVCache(model, rows, max_tokens)  # rows: the most beams the search holds at once
        self.cache_row: torch.Tensor | None = None  # (rows,): the cache row holding each row's history
        self.shared = True  # whether rows may share a cache row: then new tokens are deduplicated
        self.settled = False  # whether every row has its own cache row and those are rows [0, rows)
        self.start = 0  # sequence position of the window's first token

    def logits(self, sequences: torch.Tensor) -> torch.Tensor:
        """Logits (rows, vocab_size + 1) of the token after each row of sequences (rows, length)."""
        start = window_start(sequences.shape[1], self.max_tokens, self.model.config.transition_dim)
        if self.cache_row is None or start != self.start:
            return self.encode_window(sequences[:, start:], start)
        return self.extend(sequences[:, start + self.cache.length :])

    def select(self, rows: torch.Tensor) -> None:
        """Beams were re-indexed with `rows` (1-D LongTensor): row i now continues old row rows[i]."""
        if self.cache_row is not None:  # before the first call there is nothing to re-index
            self.cache_row = self.cache_row[rows]
            self.shared = len(self.cache_row.unique()) < len(rows)
            self.settled = False

    def encode_window(self, window: torch.Tensor, start: int) -> torch.Tensor:
        """Encode window (rows, n) from scratch, piece by piece so that rows share their common history."""
        self.cache.length, self.start = 0, start
        self.cache_row = torch.zeros(len(window), dtype=torch.long, device=window.device)  # all share the empty history
        self.shared, self.settled = True, False
        begin = 0
        for end in self.branch_points(window):
            logits = self.extend(window[:, begin:end])
            begin = end
        return logits

    def branch_points(self, window: torch.Tensor) -> list[int]:
        """Ends of the pieces to encode: where an observation or action starts and the histories split further."""
        config = self.model.config
        size = window.shape[1]
        cuts = [cut for cut in range(1, size) if cut % config.transition_dim in (0, config.observation_dim)] + [size]
        history = torch.zeros(
            len(window), dtype=torch.long, device=window.device
        )  # (rows,) id of each distinct history
        counts, begin = [], 0
        for cut in cuts:
            pieces = torch.cat((history[:, None], window[:, begin:cut]), dim=1)
            history = torch.unique(pieces, dim=0, return_inverse=True)[1]
            counts.append(int(history.max()) + 1)
            begin = cut
        # a cut after which no further split happens only adds a model call
        return [cut for cut, count, later in zip(cuts, counts, counts[1:] + [0]) if count != later]

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append tokens (rows, n) to every row's history; logits (rows, vocab_size + 1) after the last one."""
        if self.settled:  # the common case: each row extends its own cache row in place
            ordered = torch.empty_like(tokens).index_copy_(0, self.cache_row, tokens)
            return self.model.decode(ordered, self.cache).index_select(0, self.cache_row)
        if self.shared:  # one child history per distinct (cache row, new tokens): identical beams are encoded once
            keys = torch.cat((self.cache_row[:, None], tokens), dim=1)  # (rows, 1 + n)
            distinct, child = torch.unique(keys, dim=0, return_inverse=True)
            parents, tokens = distinct[:, 0], distinct[:, 1:]
        else:
            parents, child = self.cache_row, torch.arange(len(tokens), device=tokens.device)
        home = self.place(parents)
        logits = self.model.decode(torch.empty_like(tokens).index_copy_(0, home, tokens), self.cache)
        self.cache_row = home[child]
        self.shared = len(parents) < len(child)
        self.settled = not self.shared
        return logits.index_select(0, self.cache_row)

    def place(self, parents: torch.Tensor) -> torch.Tensor:
        """Cache rows [0, children) for children of cache rows `parents` (children,), copying only forked histories."""
        children = len(parents)
        index = torch.arange(children, device=parents.device)
        # a parent's first child inherits its cache row, if that row is in [0, children); the others move to free rows
        first = torch.full((self.cache.rows,), children, device=parents.device)
        first.scatter_reduce_(0, parents, index, "amin")  # each cache row's first child, or `children` if none
        stays = (first[parents] == index) & (parents < children)
        free = torch.ones(children, dtype=torch.bool, device=parents.device)
        free[parents[stays]] = False
        home = parents.clone()
        movers = ~stays
        home[movers] = free.nonzero().squeeze(1)
        if self.cache.length > 0 and bool(movers.any()):
            self.cache.copy_rows(home[movers], parents[movers])
        return home


class GraphDecoder:
    """Exact incremental decoding with static shapes for GPUs: one cache row per beam, no host synchronisation.

    Each beam keeps its own cache row (no deduplication, whose sizes the host would have to read); a
    selection re-gathers the rows on the device. On CUDA every one-token step is a CUDA graph, captured
    once per (rows, position) and replayed from then on: keep the decoder across searches to reuse them.
    """

    def __init__(self, model: TrajectoryTransformerModel, max_tokens: int, rows: int) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.cache = KVCache(model, rows, max_tokens)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self.start: int | None = None  # sequence position of the window's first token; None before a search

    def reset(self) -> None:
        """Forget the last search's beams (the captured graphs stay)."""
        self.start = None

    def logits(self, sequences: torch.Tensor) -> torch.Tensor:
        """Logits (rows, vocab_size + 1) of the token after each row of sequences (rows, length)."""
        start = window_start(sequences.shape[1], self.max_tokens, self.model.config.transition_dim)
        if start != self.start:  # a new search or a slid window: encode the window from scratch
            self.start, self.cache.length = start, 0
            return self.model.decode(sequences[:, start:], self.cache)
        tokens = sequences[:, start + self.cache.length :]
        if tokens.shape[1] != 1 or sequences.device.type != "cuda":
            return self.model.decode(tokens, self.cache)
        return self.replay(tokens)

    def select(self, rows: torch.Tensor) -> None:
        """Beams were re-indexed with `rows` (1-D LongTensor): row i now continues old row rows[i]."""
        if self.start is not None:
            self.cache.copy_rows(torch.arange(len(rows), device=rows.device), rows)

    def replay(self, tokens: torch.Tensor) -> torch.Tensor:
        """`model.decode(tokens, cache)` for one token per row, by the CUDA graph of this shape and position."""
        key = (len(tokens), self.cache.length)
        if key not in self.graphs:
            self.graphs[key] = self.capture(tokens)
        graph, inputs, outputs = self.graphs[key]
        inputs.copy_(tokens)
        graph.replay()
        self.cache.length += 1
        return outputs.clone()  # the next replay of this graph overwrites its outputs

    def capture(self, tokens: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        """A CUDA graph of `model.decode` on a copy of tokens (rows, 1) at the cache's length, which it leaves as is."""
        inputs, length = tokens.clone(), self.cache.length
        side = torch.cuda.Stream(tokens.device)  # warm up off the main stream, as graph capture requires
        side.wait_stream(torch.cuda.current_stream(tokens.device))
        with torch.cuda.stream(side):
            self.model.decode(inputs, self.cache)
        torch.cuda.current_stream(tokens.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self.cache.length = length
        with torch.cuda.graph(graph):
            outputs = self.model.decode(inputs, self.cache)
        self.cache.length = length
        return graph, inputs, outputs
