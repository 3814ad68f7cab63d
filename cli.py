"""The `seqrl` command: rollouts, evaluation sweeps, datasets, training and checkpoint info."""

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from seqrl import SeqrlError
from seqrl.agents.options import InvalidOption, Options, convert, parse_text, spec_of
from seqrl.agents.rollout import RolloutOptions
from seqrl.planners.decision.options import PolicySettings
from seqrl.planners.decision.options import TrainArgs as DecisionTrainArgs
from seqrl.planners.importing import ImportOptions
from seqrl.planners.sweep import SweepSpec
from seqrl.planners.trajectory.options import PlannerSettings
from seqrl.planners.trajectory.options import TrainArgs as TrajectoryTrainArgs

app = typer.Typer(
    help="Planning and control agents for offline RL with sequence models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def show_version(value: bool) -> None:
    """Print seqrl's version and stop (the eager `--version` flag)."""
    if value:
        from seqrl import __version__

        Console().print(f"seqrl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", help="Show seqrl's version and exit.", callback=show_version, is_eager=True, metavar=" "
    ),
) -> None:
    """Planning and control agents for offline RL with sequence models."""


train_app = typer.Typer(help="Train a model on an offline dataset.", no_args_is_help=True)
app.add_typer(train_app, name="train")
TT_PANEL = "Trajectory Transformer planner (unset: checkpoint's value, else the default shown)"
DT_PANEL = "Decision Transformer policy (unset: checkpoint's value, else the default shown)"


def flag(name: str) -> str:
    """The command-line flag of an option: max_steps -> --max-steps."""
    return "--" + name.replace("_", "-")


def typer_parameters(options: type[Options], panel: str | None = None) -> list[inspect.Parameter]:
    """Typer parameters for the fields of an options dataclass; with `panel`, every one unset (None) by default.

    Unset flags leave the value to whoever fills it next (a checkpoint's stored settings, then the field's
    default); their help names that default. Options that may be None, or a word such as 'mean', are taken as
    text and read by `parse_text`, so 'none' can switch a filter off.
    """
    parameters = []
    hints = options.type_hints()
    for field in dataclasses.fields(options):
        spec = spec_of(field)
        if not spec.cli:
            continue
        annotation, default, help_text, names = hints[field.name], field.default, spec.help, [flag(field.name)]
        if panel is not None:
            if annotation is bool:  # a flag that flips the default
                names, default = [flag(("no_" if default else "") + field.name)], False
            else:
                text = spec.off or spec.choices  # 'none' or a word
                annotation = str | None if text else annotation | None
                if default is not None:
                    help_text = f"{spec.help} (default {default})"
                default = None
        typer_default = ... if default is dataclasses.MISSING else default
        if annotation is bool:
            typer_default, metavar = bool(typer_default), " "  # a plain flag: no value to show
        else:
            metavar = None
        info = typer.Option(
            typer_default, *names, help=help_text.replace("[", "\\["), rich_help_panel=panel, metavar=metavar
        )
        parameters.append(
            inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)
        )
    return parameters


def command_from(function: Callable[..., Any], parameters: list[inspect.Parameter]) -> Callable[..., Any]:
    """`function(**values)` with `parameters` as its signature, for typer to read."""

    def command(**values: Any) -> Any:
        return function(**values)

    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    command.__doc__ = function.__doc__
    return command


def build(options: type[Options], values: dict[str, Any], **extra: Any) -> Any:
    """The options dataclass from command-line values; an invalid one is an error naming its flag."""
    try:
        return options(**{name: values[name] for name in options.field_names() if name in values}, **extra)
    except InvalidOption as error:
        raise SeqrlError(f"{flag(error.name)} got {error.value!r}; it must be {error.expected}") from None


def agent_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The planner and policy flags given (not left unset), with their text read as values."""
    given = {}
    for options in (PlannerSettings, PolicySettings):
        hints = options.type_hints()
        for field in dataclasses.fields(options):
            value = values.get(field.name)
            if hints[field.name] is bool:
                if value:  # the flag flips the default
                    given[field.name] = not field.default
            elif value is not None:
                value = parse_text(value, hints[field.name]) if isinstance(value, str) else value
                try:  # each value alone; the agent's loader checks them together with the checkpoint's
                    given[field.name] = convert(field.name, value, hints[field.name], spec_of(field))
                except InvalidOption as error:
                    raise SeqrlError(f"{flag(error.name)} got {error.value!r}; it must be {error.expected}") from None
    return given


def rollout(**values: Any) -> None:
    """Run episodes of an agent in a MuJoCo env, with progress, a summary, an episode log and a recording.

    Examples:

      seqrl rollout --env Hopper-v5 --agent random --episodes 5

      seqrl rollout --env Hopper-v5 --checkpoint runs/tt-hopper --episodes 10 --num-envs 5 --log runs.jsonl

      seqrl rollout --env Hopper-v5 --checkpoint runs/tt-hopper --episodes 10 --log runs.jsonl --resume

      seqrl rollout --env Hopper-v5 --episodes 20 --record datasets  (then MINARI_DATASETS_PATH=datasets)
    """
    options = build(RolloutOptions, values, settings=agent_settings(values))
    if options.video is not None:
        from seqrl.agents.video import choose_gl_backend

        choose_gl_backend()  # before anything loads mujoco
    from seqrl.agents.rollout import rollout as run
    from seqrl.planners import choose_agent

    status = run(options, choose_agent)
    if status:
        raise typer.Exit(status)


def evaluate(
    checkpoint: list[str], checkpoints: list[str] | None, agent: list[str], set_: list[str], **values: Any
) -> None:
    """Evaluate a grid of agents x settings x episodes on one env, on local worker processes or a Ray cluster.

    Examples:

      seqrl evaluate --env Hopper-v5 --checkpoint bundled:hopper-dt --set target_return=1800,3600 --log sweep.jsonl

      seqrl evaluate --env Hopper-v5 --agent tt --set beam_width=8,32 --workers 2 --log tt.jsonl --resume

      seqrl evaluate --env Hopper-v5 --checkpoint 'runs/dt/checkpoints/*' --ray auto --log history.jsonl
    """
    from seqrl.agents.bundled import bundled_methods
    from seqrl.planners.sweep import expand_checkpoints, parse_grid, run_sweep

    agents = [*agent, *expand_checkpoints([*checkpoint, *(checkpoints or [])])] or bundled_methods(values["env"])[:1]
    status = run_sweep(build(SweepSpec, values, agents=agents or ["random"], grid=parse_grid(set_)))
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
    references = sorted({info["reference"] for info in stats.values() if info["reference"]})
    table = Table(
        title=f"Minari datasets in {root}",
        caption=f"score: normalized return, mean (reference returns: {', '.join(references) or 'none'})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
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
    logs: list[Path] = typer.Argument(..., help="Episode logs of `seqrl rollout --log`, or one run's metrics.jsonl."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="PNG file to write (default returns.png, or learning_curves.png for metrics)."
    ),
) -> None:
    """Draw episode returns and normalized scores per agent from episode logs, or a training run's learning curves.

    Examples: seqrl plot runs.jsonl other.jsonl -o returns.png; seqrl plot runs/tt-hopper/metrics.jsonl
    """
    from seqrl.agents.plot import plot_logs, plot_metrics

    if len(logs) == 1 and logs[0].name == "metrics.jsonl":  # the name training gives it
        output = output or Path("learning_curves.png")
        plot_metrics(logs[0], output)
    else:
        output = output or Path("returns.png")
        plot_logs(logs, output)
    Console().print(f"wrote {output}")


@app.command()
def info(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, bundled:NAME, or hf:ORG/NAME[@REVISION] (hub)."),
) -> None:
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


def train_tt(**values: Any) -> None:
    """Train a Trajectory Transformer on an offline dataset (the original recipe by default).

    Example: seqrl train tt --dataset zoo/hopper/medium-v0 --out runs/tt-hopper --steps 20000
    """
    from seqrl.planners.trajectory.train import train_tt as train

    train(build(TrajectoryTrainArgs, values))


def train_dt(**values: Any) -> None:
    """Train a Decision Transformer on an offline dataset (the paper's gym recipe by default).

    Example: seqrl train dt --dataset zoo/hopper/medium-v0 --out runs/dt-hopper --steps 20000
    """
    from seqrl.planners.decision.train import train_dt as train

    train(build(DecisionTrainArgs, values))


def import_checkpoint(source: str, **values: Any) -> None:
    """Write a complete seqrl checkpoint directory from a plain one plus what it lacks, to run offline afterwards.

    Examples:

      seqrl import hf:edbeeching/decision-transformer-gym-hopper-medium --out checkpoints/dt-hopper-medium

      seqrl import hf:ORG/NAME --out checkpoints/dt --state-statistics stats.json --target-return 1800

      seqrl import runs/plain-tt --out checkpoints/tt --dataset zoo/hopper/medium-v0
    """
    from seqrl.planners.importing import import_checkpoint as run

    Console(highlight=False).print(run(build(ImportOptions, values, source=source, settings=agent_settings(values))))


def option_parameter(name: str, *names: str, help: str) -> inspect.Parameter:
    """A repeatable text option of a command (its values arrive as a list)."""
    info = typer.Option([], *names, help=help.replace("[", "\\["))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=list[str])


evaluate_parameters = [
    option_parameter(
        "checkpoint",
        "--checkpoint",
        help="Checkpoint directory, hub id or bundled:NAME; repeat for more, "
        "or a quoted glob ('runs/x/checkpoints/*').",
    ),
    inspect.Parameter(
        "checkpoints",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=list[str] | None,
        default=typer.Argument(
            None, help="More checkpoints (so an unquoted --checkpoint runs/x/checkpoints/* works).", show_default=False
        ),
    ),
    option_parameter(
        "agent",
        "--agent",
        help="Built-in agent dt or tt (the env's bundled checkpoint) or random; "
        "repeatable. Default with no --checkpoint: the env's bundled agent.",
    ),
    option_parameter(
        "set_", "--set", help="Agent setting NAME=V1,V2,...; repeatable; the grid is the product of them."
    ),
    *typer_parameters(SweepSpec),
]
rollout_parameters = [
    *typer_parameters(RolloutOptions),
    *typer_parameters(PlannerSettings, TT_PANEL),
    *typer_parameters(PolicySettings, DT_PANEL),
]
import_parameters = [
    inspect.Parameter(
        "source",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=str,
        default=typer.Argument(..., help="Plain checkpoint directory, or hf:ORG/NAME\\[@REVISION] (hub)."),
    ),
    *typer_parameters(ImportOptions),
    *typer_parameters(PlannerSettings, TT_PANEL),
    *typer_parameters(PolicySettings, DT_PANEL),
]
app.command("rollout")(command_from(rollout, rollout_parameters))
app.command("import")(command_from(import_checkpoint, import_parameters))
app.command("evaluate")(command_from(evaluate, evaluate_parameters))
train_app.command("tt")(command_from(train_tt, typer_parameters(TrajectoryTrainArgs)))
train_app.command("dt")(command_from(train_dt, typer_parameters(DecisionTrainArgs)))


def main() -> None:
    """Entry point of the `seqrl` command: user errors print one line and exit with status 1."""
    try:
        app()
    except SeqrlError as error:
        message = escape(str(error))  # so rich keeps brackets such as 'seqrl[plot]'
        Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
