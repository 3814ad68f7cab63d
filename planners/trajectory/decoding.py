"""Next-token logits for beam search, which sees only the last window of whole transitions.

Both decoders answer `logits(sequences)`: the model's distribution over the token after each row of
`sequences` (rows, length), computed on the window the original planner feeds its model, i.e. the
last `max_tokens` tokens or fewer, cropped at the front in whole transitions. `FullWindowDecoder`
re-encodes that window for every token, as the original does. `CachedDecoder` gives the same
logits from cached keys and values: it encodes only the tokens appended since its last call, keeps
one cache row per distinct token sequence (beams forked from one parent share it) and, when the
window slides (every position then changes), re-encodes the new window, again sharing the common
parts of the beams' histories.
"""

import torch

from seqrl.planners.trajectory.model import TrajectoryTransformerModel, select_cache


def window_start(length: int, max_tokens: int, transition_dim: int) -> int:
    """Tokens the original crops from the front of a `length`-token sequence: whole transitions, until `max_tokens` remain."""
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

    def __init__(self, model: TrajectoryTransformerModel, max_tokens: int) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.cache = None  # per layer (key, value), each (nodes, n_head, cached_length, head_dim)
        self.node_of_row = torch.zeros(0, dtype=torch.long)  # (rows,): the cache row holding each row's history
        self.start = 0  # sequence position of the window's first token
        self.length = 0  # sequence positions [start, length) are in the cache

    def logits(self, sequences: torch.Tensor) -> torch.Tensor:
        """Logits (rows, vocab_size + 1) of the token after each row of sequences (rows, length)."""
        length = sequences.shape[1]
        start = window_start(length, self.max_tokens, self.model.config.transition_dim)
        if self.cache is None or start != self.start:
            return self.encode_window(sequences[:, start:], start)
        logits = self.extend(sequences[:, self.length :])
        self.length = length
        return logits

    def select(self, rows: torch.Tensor) -> None:
        """Beams were re-indexed with `rows` (1-D LongTensor): row i now continues old row rows[i]."""
        if self.cache is not None:  # before the first call there is nothing to re-index
            self.node_of_row = self.node_of_row[rows]

    def encode_window(self, window: torch.Tensor, start: int) -> torch.Tensor:
        """Encode window (rows, n) from scratch, piece by piece so that rows share their common history."""
        self.cache = None
        self.node_of_row = torch.zeros(len(window), dtype=torch.long, device=window.device)
        self.start, self.length = start, start + window.shape[1]
        begin = 0
        for end in self.branch_points(window):
            logits = self.extend(window[:, begin:end])
            begin = end
        return logits

    def branch_points(self, window: torch.Tensor) -> list[int]:
        """Ends of the pieces to encode: where an observation or action starts and the beams' histories split further."""
        config = self.model.config
        size = window.shape[1]
        cuts = [cut for cut in range(1, size) if cut % config.transition_dim in (0, config.observation_dim)] + [size]
        history = torch.zeros(len(window), dtype=torch.long, device=window.device)  # (rows,) id of each distinct history
        counts, begin = [], 0
        for cut in cuts:
            history = torch.unique(torch.cat((history[:, None], window[:, begin:cut]), dim=1), dim=0, return_inverse=True)[1]
            counts.append(int(history.max()) + 1)
            begin = cut
        # a cut after which no further split happens only adds a model call
        return [cut for cut, count, later in zip(cuts, counts, counts[1:] + [0]) if count != later]

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append tokens (rows, n) to every row's history; logits (rows, vocab_size + 1) after the last one."""
        # a new cache row per distinct (old cache row, new tokens): identical beams are encoded once
        keys = torch.cat((self.node_of_row[:, None], tokens), dim=1)  # (rows, 1 + n)
        distinct, self.node_of_row = torch.unique(keys, dim=0, return_inverse=True)
        parents = distinct[:, 0]
        past, self.cache = self.cache, None  # hold one reference, so that the old rows are freed once gathered
        if past is not None and not self.is_identity(parents, len(past[0][0])):
            past = select_cache(past, parents)
        output = self.model(distinct[:, 1:], past_key_values=past, use_cache=True)
        self.cache = output.past_key_values
        return output.logits[:, -1].index_select(0, self.node_of_row)

    @staticmethod
    def is_identity(parents: torch.Tensor, nodes: int) -> bool:
        """Whether new cache row i continues old cache row i for every i (no copy needed)."""
        return len(parents) == nodes and bool((parents == torch.arange(nodes, device=parents.device)).all())
