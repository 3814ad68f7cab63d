"""The `seqrl` command: rollouts, evaluation sweeps, datasets, training and checkpoint info."""

from pathlib import Path

from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from seqrl import SeqrlError

app = typer.Typer(
    help="Planning and control agents for offline RL with sequence models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train a model on an offline dataset.", no_args_is_help=True)
app.add_typer(train_app, name="train")
TT_PANEL = "Trajectory Transformer planner (unset: checkpoint's value or default)"
DT_PANEL = "Decision Transformer policy (unset: checkpoint's value or default)"


@app.command()
def rollout(
    env: str = typer.Option(..., "--env", help="Gymnasium MuJoCo env id, e.g. Hopper-v5."),
    agent: str | None = typer.Option(None, help="Built-in agent: dt or tt (the env's bundled trained agent) or random; default: the env's bundled agent, else random."),
    checkpoint: str | None = typer.Option(None, help="Checkpoint directory (or hub id) of a TT planner or DT policy."),
    dataset: str | None = typer.Option(None, help="Dataset the checkpoint agent takes its statistics from, if it needs one."),
    episodes: int = typer.Option(10, help="Episodes to run; episode i uses seed SEED + i."),
    seed: int = typer.Option(0, help="Seed of episode 0 (env reset and the agent's random stream)."),
    max_steps: int | None = typer.Option(None, help="Cap on steps per episode; a capped episode ends truncated (default: the env's own limit)."),
    num_envs: int = typer.Option(1, help="Envs stepped together (one batched agent call per step)."),
    log: Path | None = typer.Option(None, help="Append one JSON line per finished episode to this file."),
    resume: bool = typer.Option(False, "--resume", help="Skip the episodes --log already holds for these settings."),
    record: Path | None = typer.Option(None, help="Minari datasets root to record the episodes into."),
    record_id: str | None = typer.Option(None, help="Id of the recorded dataset (default: seqrl/<env name>/rollout-v0)."),
    device: str = typer.Option("cpu", help="Where the agent's model runs: cpu or cuda."),
    threads: int | None = typer.Option(None, help="CPU threads for torch (default: torch's choice)."),
    quiet: bool = typer.Option(False, "--quiet", help="Print nothing but errors."),
    video: Path | None = typer.Option(None, help="Film the first episode offscreen into this MP4 file (needs seqrl[video])."),
    horizon: int | None = typer.Option(None, help="TT: planning horizon in transitions (default 15).", rich_help_panel=TT_PANEL),
    beam_width: int | None = typer.Option(None, help="TT: beams kept per step (default 128).", rich_help_panel=TT_PANEL),
    n_expand: int | None = typer.Option(None, help="TT: samples per beam per step (default 2).", rich_help_panel=TT_PANEL),
    k_obs: str | None = typer.Option(None, help="TT: top-k for observation tokens, or none (default 1).", rich_help_panel=TT_PANEL),
    k_act: str | None = typer.Option(None, help="TT: top-k for action tokens, or none (default none).", rich_help_panel=TT_PANEL),
    cdf_obs: str | None = typer.Option(None, help="TT: keep the likeliest observation tokens holding this mass, or none (default none).", rich_help_panel=TT_PANEL),
    cdf_act: str | None = typer.Option(None, help="TT: keep the likeliest action tokens holding this mass, or none (default 0.6).", rich_help_panel=TT_PANEL),
    percentile: str | None = typer.Option(None, help="TT: reward/value estimate: mean or a fraction (default mean).", rich_help_panel=TT_PANEL),
    max_context_transitions: int | None = typer.Option(None, help="TT: past transitions the model sees (default 5).", rich_help_panel=TT_PANEL),
    plan_freq: int | None = typer.Option(None, help="TT: replan every this many steps (default 1).", rich_help_panel=TT_PANEL),
    discount: float | None = typer.Option(None, help="TT: discount of planned rewards (default: the training discount, else 0.99).", rich_help_panel=TT_PANEL),
    no_kv_cache: bool = typer.Option(False, "--no-kv-cache", help="TT: the original planner, re-encoding the window for every token.", rich_help_panel=TT_PANEL),
    target_return: float | None = typer.Option(None, help="DT: return to condition on (default: the checkpoint's, else the paper's for the env: Hopper 3600, HalfCheetah 12000, Walker2d 5000).", rich_help_panel=DT_PANEL),
) -> None:
    """Run episodes of an agent in a MuJoCo env, with progress, a summary, an episode log and a recording.

    Examples:

      seqrl rollout --env Hopper-v5 --agent random --episodes 5

      seqrl rollout --env Hopper-v5 --checkpoint runs/tt-hopper --episodes 10 --num-envs 5 --log runs.jsonl

      seqrl rollout --env Hopper-v5 --checkpoint runs/tt-hopper --episodes 10 --log runs.jsonl --resume

      seqrl rollout --env Hopper-v5 --episodes 20 --record datasets  (then MINARI_DATASETS_PATH=datasets)
    """
    if video is not None:
        from seqrl.agents.video import choose_gl_backend

        choose_gl_backend()  # before anything loads mujoco
    from seqrl.agents.rollout import rollout as run

    # Planner and policy settings for load_agent (None: the checkpoint's default); add new flags here.
    method_options: dict[str, object] = {
        "horizon": horizon, "beam_width": beam_width, "n_expand": n_expand, "k_obs": k_obs, "k_act": k_act,
        "cdf_obs": cdf_obs, "cdf_act": cdf_act, "percentile": percentile, "max_context_transitions": max_context_transitions,
        "plan_freq": plan_freq, "discount": discount, "kv_cache": False if no_kv_cache else None,
        "target_return": target_return,
    }
    status = run(
        env, agent, checkpoint, dataset, episodes, seed, max_steps, num_envs, log, resume, record, record_id,
        device, threads, quiet, video, options={name: value for name, value in method_options.items() if value is not None},
    )
    if status:
        raise typer.Exit(status)


@app.command()
def evaluate(
    env: str = typer.Option(..., "--env", help="Gymnasium MuJoCo env id, e.g. Hopper-v5."),
    checkpoint: list[str] = typer.Option([], help="Checkpoint directory, hub id or bundled:NAME; repeat for more, or a quoted glob ('runs/x/checkpoints/*')."),
    checkpoints: list[str] = typer.Argument(None, help="More checkpoints (so an unquoted --checkpoint runs/x/checkpoints/* works).", show_default=False),
    agent: list[str] = typer.Option([], help="Built-in agent dt or tt (the env's bundled checkpoint) or random; repeatable. Default with no --checkpoint: the env's bundled agent."),
    set_: list[str] = typer.Option([], "--set", help="Agent setting NAME=V1,V2,...; repeatable; the grid is the product of all of them."),
    episodes: int = typer.Option(10, help="Episodes per cell; episode i uses seed SEED + i."),
    seed: int = typer.Option(0, help="Seed of episode 0 of every cell."),
    max_steps: int | None = typer.Option(None, help="Cap on steps per episode (default: the env's own limit)."),
    num_envs: int = typer.Option(1, help="Envs each worker steps together (one batched agent call per step)."),
    workers: int | None = typer.Option(None, help="Worker processes (default 1; with --ray auto or ADDRESS: the cluster's CPUs / --threads)."),
    ray: str | None = typer.Option(None, "--ray", help="Run on Ray (needs seqrl[ray]): local (a local cluster of --workers CPUs), auto or a cluster ADDRESS."),
    threads: int = typer.Option(1, help="CPU threads for torch in each worker."),
    log: Path | None = typer.Option(None, help="Append one JSON line per finished episode (rollout's fields plus its cell) to this file."),
    resume: bool = typer.Option(False, "--resume", help="Skip the episodes --log already holds for this sweep."),
    quiet: bool = typer.Option(False, "--quiet", help="Print nothing but errors."),
) -> None:
    """Evaluate a grid of agents x settings x episodes on one env, on local worker processes or a Ray cluster.

    Examples:

      seqrl evaluate --env Hopper-v5 --checkpoint bundled:hopper-dt --set target_return=1800,3600 --episodes 10 --log sweep.jsonl

      seqrl evaluate --env Hopper-v5 --agent tt --set beam_width=8,32 --workers 2 --log tt.jsonl --resume

      seqrl evaluate --env Hopper-v5 --checkpoint 'runs/dt/checkpoints/*' --ray auto --log history.jsonl
    """
    from seqrl.planners.sweep import SweepSpec, expand_checkpoints, parse_grid, run_sweep

    agents = [*agent, *expand_checkpoints([*checkpoint, *(checkpoints or [])])]
    if not agents:
        from seqrl.agents.bundled import bundled_methods

        agents = bundled_methods(env)[:1] or ["random"]
    spec = SweepSpec(env, tuple(agents), parse_grid(set_), episodes, seed, max_steps, num_envs, workers, ray, threads,
                     log, resume, quiet)
    status = run_sweep(spec)
    if status:
        raise typer.Exit(status)


@app.command()
def datasets(
    root: Path | None = typer.Option(
        None, "--root", help="Minari datasets root (default: MINARI_DATASETS_PATH, else ~/.minari/datasets)."
    ),
) -> None:
    """List the local Minari datasets with their episode and return statistics.

    Example: seqrl datasets --root ../shared/datasets
    """
    from rich import box
    from rich.table import Table

    from seqrl.envs.datasets import datasets_root, load_dataset, local_dataset_ids

    root = root or datasets_root()
    if not root.is_dir():
        raise SeqrlError(f"no datasets root {root}: pass --root DIR or set MINARI_DATASETS_PATH")
    ids = local_dataset_ids(root)
    if not ids:
        Console().print(f"no Minari datasets under {root}")
        return
    stats, problems = {}, []
    for dataset_id in ids:
        try:
            stats[dataset_id] = load_dataset(str(root / dataset_id)).stats()
        except SeqrlError as error:
            problems.append(str(error))
    table = Table(title=f"Minari datasets in {root}", caption="score: D4RL normalized return, mean",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("env / dataset", no_wrap=True)
    for column in ("episodes", "steps", "return\nmean ± std", "return\nmin..max", "score"):
        table.add_column(column, justify="right", no_wrap=True)
    envs = {dataset_id: info["env_id"] or "unknown env" for dataset_id, info in stats.items()}
    for env_id in sorted(set(envs.values())):
        table.add_row(f"[bold]{env_id}[/]")
        for dataset_id in (d for d in stats if envs[d] == env_id):
            info, score = stats[dataset_id], stats[dataset_id]["normalized_score_mean"]
            table.add_row(
                f" {dataset_id}",
                f"{info['episodes']:,}",
                f"{info['steps']:,}",
                f"{info['return_mean']:.0f} ± {info['return_std']:.0f}",
                f"{info['return_min']:.0f}..{info['return_max']:.0f}",
                "-" if score is None else f"{score:.1f}",
            )
    Console().print(table)
    if problems:
        raise SeqrlError(f"{len(problems)} unreadable dataset(s): " + " | ".join(problems))


@app.command()
def plot(
    logs: list[Path] = typer.Argument(..., help="Episode logs written by `seqrl rollout --log`."),
    output: Path = typer.Option(Path("returns.png"), "-o", "--output", help="PNG file to write."),
) -> None:
    """Draw episode returns and normalized scores per agent from one or more episode logs.

    Example: seqrl plot runs.jsonl other.jsonl -o returns.png
    """
    from seqrl.agents.plot import plot_logs

    plot_logs(logs, output)
    Console().print(f"wrote {output}")


@app.command()
def info(checkpoint: str = typer.Argument(..., help="Checkpoint directory (or Hugging Face hub id).")) -> None:
    """Show what a checkpoint is: kind, env, dimensions, parameters, datasets, training and loss.

    Example: seqrl info runs/tt-hopper
    """
    from rich import box
    from rich.table import Table

    from seqrl.planners.info import describe_checkpoint

    table = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for name, value in describe_checkpoint(checkpoint):
        table.add_row(name, value)
    Console().print(table)


# Options `seqrl train tt` and `seqrl train dt` share.
TRAIN_DATASET = typer.Option(..., help="Dataset(s): Minari id or directory, D4RL .hdf5, DT .pkl; comma-separated to combine.")
TRAIN_OUT = typer.Option(..., help="Checkpoint directory to create (or continue with --resume).")
TRAIN_HOLDOUT = typer.Option(0.05, help="Fraction of episodes held out for the held-out loss (0 for none).")
TRAIN_DEVICE = typer.Option("auto", help="auto (CUDA when available), cpu, cuda or cuda:N.")
TRAIN_EVAL_EVERY = typer.Option(500, help="Steps between metrics.jsonl records (train and held-out loss).")
TRAIN_SAVE_EVERY = typer.Option(1000, help="Steps between checkpoints (always one at the end).")
TRAIN_THREADS = typer.Option(None, help="CPU threads for torch (default: torch's choice).")
TRAIN_RESUME = typer.Option(False, "--resume", help="Continue the run saved in --out (repeat its options; --steps may grow).")
TRAIN_DATASETS_ROOT = typer.Option(None, help="Minari datasets root for dataset ids (sets MINARI_DATASETS_PATH).")
TRAIN_QUIET = typer.Option(False, "--quiet", help="No progress output.")


@train_app.command("tt")
def train_tt(
    dataset: str = TRAIN_DATASET,
    out: Path = TRAIN_OUT,
    steps: int | None = typer.Option(None, help="Updates to run (default: the original's budget of 50M windows, 50 epochs of a 1M-step dataset)."),
    epochs: float | None = typer.Option(None, help="Passes over the training windows, instead of --steps."),
    batch_size: int = typer.Option(256, help="Windows per update."),
    lr: float = typer.Option(6e-4, help="Peak AdamW learning rate."),
    weight_decay: float = typer.Option(0.1, help="AdamW weight decay, applied to weight matrices only."),
    beta1: float = typer.Option(0.9, help="AdamW beta1."),
    beta2: float = typer.Option(0.95, help="AdamW beta2."),
    grad_clip: float = typer.Option(1.0, help="Gradient-norm clip."),
    warmup_epochs: float = typer.Option(1.0, help="Linear warmup length, in epochs."),
    decay_epochs: float = typer.Option(20.0, help="Epoch at which the cosine decay reaches --min-lr-ratio."),
    min_lr_ratio: float = typer.Option(0.1, help="Floor of the learning rate, as a fraction of --lr."),
    n_layer: int = typer.Option(4, help="Transformer blocks."),
    n_head: int = typer.Option(4, help="Attention heads."),
    n_embd: int = typer.Option(128, help="Embedding width."),
    embd_pdrop: float = typer.Option(0.1, help="Dropout on embeddings."),
    resid_pdrop: float = typer.Option(0.1, help="Dropout on residual branches."),
    attn_pdrop: float = typer.Option(0.1, help="Dropout on attention weights."),
    action_weight: float = typer.Option(5.0, help="Loss weight of action tokens."),
    reward_weight: float = typer.Option(1.0, help="Loss weight of reward tokens."),
    value_weight: float = typer.Option(1.0, help="Loss weight of value tokens."),
    sequence_length: int = typer.Option(10, help="Transitions per training window."),
    n_bins: int = typer.Option(100, help="Bins (tokens) per dimension."),
    discretizer: str = typer.Option("quantile", help="Bin placement: quantile (equal counts, the original) or uniform."),
    discount: float = typer.Option(0.99, help="Discount of the value-to-go targets."),
    termination_penalty: float = typer.Option(-100.0, help="Reward that replaces the reward of a terminal step."),
    max_path_length: int = typer.Option(1000, help="Steps of an episode that count in the loss."),
    holdout: float = TRAIN_HOLDOUT,
    seed: int = typer.Option(42, help="Seed of initialization, data order, dropout and the held-out split."),
    device: str = TRAIN_DEVICE,
    precision: str = typer.Option("fp32", help="fp32, or bf16: forward passes under bfloat16 autocast (weights stay fp32)."),
    eval_every: int = TRAIN_EVAL_EVERY,
    save_every: int = TRAIN_SAVE_EVERY,
    threads: int | None = TRAIN_THREADS,
    resume: bool = TRAIN_RESUME,
    datasets_root: Path | None = TRAIN_DATASETS_ROOT,
    quiet: bool = TRAIN_QUIET,
) -> None:
    """Train a Trajectory Transformer on an offline dataset (the original recipe by default).

    Example: seqrl train tt --dataset zoo/hopper/medium-v0 --out runs/tt-hopper --steps 20000
    """
    from seqrl.planners.trajectory.train import TrainArgs, train_tt

    _train(TrainArgs, train_tt, locals())


@train_app.command("dt")
def train_dt(
    dataset: str = TRAIN_DATASET,
    out: Path = TRAIN_OUT,
    steps: int = typer.Option(100_000, help="Updates to run (the paper: 10 iterations of 10k)."),
    batch_size: int = typer.Option(64, help="Windows per update."),
    lr: float = typer.Option(1e-4, help="AdamW learning rate after warmup."),
    weight_decay: float = typer.Option(1e-4, help="AdamW weight decay (all parameters, as the original)."),
    warmup_steps: int = typer.Option(10_000, help="Linear learning-rate warmup, in updates; flat afterwards."),
    decay_steps: int | None = typer.Option(None, help="Cosine-decay the learning rate after warmup, to zero at this update (default: flat after warmup, as the paper)."),
    grad_clip: float = typer.Option(0.25, help="Gradient-norm clip."),
    context_length: int = typer.Option(20, help="Steps per window (K), also the policy's default context."),
    hidden_size: int = typer.Option(128, help="Embedding width."),
    n_layer: int = typer.Option(3, help="Transformer blocks."),
    n_head: int = typer.Option(1, help="Attention heads."),
    activation_function: str = typer.Option("relu", help="MLP activation: relu, gelu, gelu_new, silu or tanh."),
    dropout: float = typer.Option(0.1, help="Dropout on embeddings, attention and residual branches."),
    max_ep_len: int = typer.Option(1000, help="Timestep embeddings; later steps share the last one."),
    return_scale: float = typer.Option(1000.0, help="Returns-to-go are divided by this."),
    target_return: float | None = typer.Option(None, help="Default target return of rollouts (default: the paper's for the env, else the best episode's)."),
    holdout: float = TRAIN_HOLDOUT,
    seed: int = typer.Option(42, help="Seed of initialization, window sampling, dropout and the held-out split."),
    device: str = TRAIN_DEVICE,
    eval_every: int = TRAIN_EVAL_EVERY,
    save_every: int = TRAIN_SAVE_EVERY,
    threads: int | None = TRAIN_THREADS,
    resume: bool = TRAIN_RESUME,
    datasets_root: Path | None = TRAIN_DATASETS_ROOT,
    quiet: bool = TRAIN_QUIET,
) -> None:
    """Train a Decision Transformer on an offline dataset (the paper's gym recipe by default).

    Example: seqrl train dt --dataset zoo/hopper/medium-v0 --out runs/dt-hopper --steps 20000
    """
    from seqrl.planners.decision.train import TrainArgs, train_dt

    _train(TrainArgs, train_dt, locals())


def _train(args_class: type, train: Callable[[Any], object], options: dict[str, Any]) -> None:
    """Call `train(args_class(...))` with a command's options; `datasets_root` sets MINARI_DATASETS_PATH."""
    import os

    if options["datasets_root"] is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(options["datasets_root"])
    fields = args_class.__dataclass_fields__
    train(args_class(**{name: value for name, value in options.items() if name in fields and name != "out"}, out=str(options["out"])))


def main() -> None:
    """Entry point of the `seqrl` command: user errors print one line and exit with status 1."""
    try:
        app()
    except SeqrlError as error:
        from rich.markup import escape

        # escaped: messages name extras such as seqrl[ray], which rich would read as markup
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
