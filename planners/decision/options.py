"""Decision Transformer options: the policy's settings, `seqrl train dt`'s options and the checkpoint's metadata."""

from dataclasses import dataclass

from seqrl import SeqrlError
from seqrl.agents.options import Options, option
from seqrl.planners.metadata import CheckpointMeta
from seqrl.planners.train_options import RunArgs

ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu", "tanh")
N_POSITIONS = 1024  # transformers' GPT-2 default, the trunk's token limit: K steps take 3K tokens


@dataclass(frozen=True, kw_only=True)
class PolicySettings(Options):
    """How the policy conditions on returns; unset values come from the checkpoint, then these defaults."""

    target_return: float | None = option(
        None,
        "Return to condition on (default: the paper's for the env: Hopper 3600, HalfCheetah 12000, Walker2d 5000).",
    )
    return_scale: float = option(1000.0, "Returns-to-go are divided by this.", above=0)
    context_length: int = option(20, "Steps of history the policy sees (K).", low=1, high=N_POSITIONS // 3)


@dataclass(frozen=True, kw_only=True)
class TrainArgs(RunArgs):
    """Every option of `seqrl train dt`, with the paper's gym recipe as defaults."""

    steps: int = option(100_000, "Updates to run (the paper: 10 iterations of 10k).", low=1, resumable=True)
    batch_size: int = option(64, "Windows per update.", low=1, high=1 << 20)
    lr: float = option(1e-4, "AdamW learning rate after warmup.", above=0)
    weight_decay: float = option(1e-4, "AdamW weight decay (all parameters, as the original).", low=0)
    warmup_steps: int = option(10_000, "Linear learning-rate warmup, in updates; flat afterwards.", low=0)
    decay_steps: int | None = option(
        None,
        "Cosine-decay the learning rate after warmup, to zero at this update (default: flat, as the paper).",
        low=1,
    )
    grad_clip: float = option(0.25, "Gradient-norm clip.", above=0)
    context_length: int = option(
        20, "Steps per window (K), also the policy's default context.", low=1, high=N_POSITIONS // 3
    )
    hidden_size: int = option(128, "Embedding width.", low=1, high=65536)
    n_layer: int = option(3, "Transformer blocks.", low=1, high=256)
    n_head: int = option(1, "Attention heads.", low=1, high=1024)
    activation_function: str = option("relu", "MLP activation.", choices=ACTIVATIONS)
    dropout: float = option(0.1, "Dropout on embeddings, attention and residual branches.", low=0, below=1)
    max_ep_len: int = option(1000, "Timestep embeddings; later steps share the last one.", low=1, high=1 << 20)
    return_scale: float = option(1000.0, "Returns-to-go are divided by this.", above=0)
    target_return: float | None = option(
        None, "Default target return of rollouts (default: the paper's for the env, else the best episode's)."
    )

    def check(self) -> None:
        """Heads must divide the width; a cosine decay must end after the warmup."""
        if self.hidden_size % self.n_head:
            raise SeqrlError(f"--hidden-size {self.hidden_size} must be divisible by --n-head {self.n_head}")
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise SeqrlError(f"--decay-steps {self.decay_steps} must come after --warmup-steps {self.warmup_steps}")
        if self.batch_size < self.nproc:
            raise SeqrlError(f"--batch-size {self.batch_size} is split over --nproc {self.nproc}; give each one sample")


@dataclass(frozen=True, kw_only=True)
class DecisionMeta(CheckpointMeta):
    """A DT checkpoint's seqrl.json: the state normalization it was trained with and its policy defaults."""

    state_mean: list[float] | None = option(None, "per-dimension mean of the training states")
    state_std: list[float] | None = option(None, "per-dimension std of the training states")
    policy: dict = option({}, "policy settings this checkpoint acts with unless told otherwise")
