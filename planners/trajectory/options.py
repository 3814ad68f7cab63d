"""Trajectory Transformer options: the planner's settings, `seqrl train tt`'s options and the checkpoint's metadata."""

from dataclasses import dataclass

from seqrl import SeqrlError
from seqrl.agents.options import Options, option
from seqrl.planners.metadata import CheckpointMeta
from seqrl.planners.train_options import RunArgs

DISCRETIZERS = ("quantile", "uniform")
MAX_LAYERS = 256  # far beyond any trained TT; a larger config is a broken or hostile file


@dataclass(frozen=True, kw_only=True)
class PlannerSettings(Options):
    """Every knob of the beam-search planner; defaults are the original's (config/offline.py)."""

    horizon: int = option(15, "Planning horizon in transitions.", low=1, high=1000)
    beam_width: int = option(128, "Beams kept per step.", low=1, high=100_000)
    n_expand: int = option(2, "Samples per beam per step.", low=1, high=100_000)
    k_obs: int | None = option(1, "Top-k for observation tokens, or none.", low=1, off=True)
    k_act: int | None = option(None, "Top-k for action tokens, or none.", low=1, off=True)
    cdf_obs: float | None = option(
        None, "Keep the likeliest observation tokens holding this mass, or none.", above=0, high=1, off=True
    )
    cdf_act: float | None = option(
        0.6, "Keep the likeliest action tokens holding this mass, or none.", above=0, high=1, off=True
    )
    discount: float = option(
        0.99, "Discount of planned rewards (a checkpoint's default: its training discount).", above=0, high=1
    )
    percentile: str | float = option(
        "mean", "Reward/value estimate: mean or a fraction.", choices=("mean",), low=0, high=1
    )
    max_context_transitions: int = option(5, "Past transitions the model sees.", low=1, high=1000)
    plan_freq: int = option(1, "Replan every this many steps.", low=1)
    kv_cache: bool = option(True, "Decode with the key/value cache; off, plan as the original, re-encoding the window.")

    def check(self) -> None:
        """A plan lasts `horizon` steps, so it must be replanned within them."""
        if self.plan_freq > self.horizon:
            raise SeqrlError(
                f"plan_freq {self.plan_freq} exceeds the horizon {self.horizon}; a plan only lasts that long"
            )


@dataclass(frozen=True, kw_only=True)
class TrainArgs(RunArgs):
    """Every option of `seqrl train tt`, with the original recipe as defaults."""

    steps: int | None = option(
        None,
        "Updates to run (default: the original's budget of 50M windows, 50 epochs of a 1M-step dataset).",
        low=1,
        resumable=True,
    )
    epochs: float | None = option(
        None, "Passes over the training windows, instead of --steps.", above=0, resumable=True
    )
    batch_size: int = option(256, "Windows per update.", low=1, high=1 << 20)
    lr: float = option(6e-4, "Peak AdamW learning rate.", above=0)
    weight_decay: float = option(0.1, "AdamW weight decay, applied to weight matrices only.", low=0)
    beta1: float = option(0.9, "AdamW beta1.", low=0, below=1)
    beta2: float = option(0.95, "AdamW beta2.", low=0, below=1)
    grad_clip: float = option(1.0, "Gradient-norm clip.", above=0)
    warmup_epochs: float = option(1.0, "Linear warmup length, in epochs.", low=0)
    decay_epochs: float = option(20.0, "Epoch at which the cosine decay reaches --min-lr-ratio.", low=0)
    min_lr_ratio: float = option(0.1, "Floor of the learning rate, as a fraction of --lr.", low=0, high=1)
    n_layer: int = option(4, "Transformer blocks.", low=1, high=MAX_LAYERS)
    n_head: int = option(4, "Attention heads.", low=1, high=1024)
    n_embd: int = option(128, "Embedding width.", low=1, high=65536)
    embd_pdrop: float = option(0.1, "Dropout on embeddings.", low=0, below=1)
    resid_pdrop: float = option(0.1, "Dropout on residual branches.", low=0, below=1)
    attn_pdrop: float = option(0.1, "Dropout on attention weights.", low=0, below=1)
    action_weight: float = option(5.0, "Loss weight of action tokens.", low=0)
    reward_weight: float = option(1.0, "Loss weight of reward tokens.", low=0)
    value_weight: float = option(1.0, "Loss weight of value tokens.", low=0)
    sequence_length: int = option(10, "Transitions per training window.", low=1, high=1000)
    n_bins: int = option(100, "Bins (tokens) per dimension.", low=2, high=1 << 15)
    discretizer: str = option(
        "quantile", "Bin placement: quantile (equal counts, the original) or uniform.", choices=DISCRETIZERS
    )
    discount: float = option(0.99, "Discount of the value-to-go targets.", above=0, high=1)
    termination_penalty: float = option(-100.0, "Reward that replaces the reward of a terminal step.")
    max_path_length: int = option(1000, "Steps of an episode that count in the loss.", low=1)
    precision: str = option(
        "fp32",
        "fp32, or bf16: forward passes under bfloat16 autocast (weights stay fp32).",
        choices=("fp32", "bf16"),
        resumable=True,
    )

    def check(self) -> None:
        """--steps and --epochs exclude each other; heads must divide the width."""
        if self.steps is not None and self.epochs is not None:
            raise SeqrlError("pass --steps or --epochs, not both")
        if self.n_embd % self.n_head:
            raise SeqrlError(f"--n-embd {self.n_embd} must be divisible by --n-head {self.n_head}")
        if self.batch_size < self.nproc:
            raise SeqrlError(f"--batch-size {self.batch_size} is split over --nproc {self.nproc}; give each one sample")


@dataclass(frozen=True, kw_only=True)
class TrajectoryMeta(CheckpointMeta):
    """A TT checkpoint's seqrl.json: how its data was tokenized, and the planner defaults it was evaluated with."""

    discount: float = option(0.99, "discount of the value targets (the planner's default discount)", above=0, high=1)
    termination_penalty: float = option(-100.0, "reward that replaced terminal steps' rewards")
    sequence_length: int | None = option(None, "transitions per training window", low=1)
    max_path_length: int | None = option(None, "steps of an episode that counted in the loss", low=1)
    discretizer: str = option(
        "quantile", "bin placement of discretizer.npz (or of bins fitted to --dataset)", choices=DISCRETIZERS
    )
    n_bins: int | None = option(None, "bins per dimension", low=2)
    planner: dict = option({}, "planner settings this checkpoint plans with unless told otherwise")
