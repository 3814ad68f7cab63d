"""Options declared once: dataclass fields that carry their default, help text and valid range.

A command's or an agent's settings are a frozen dataclass deriving from `Options`, each field made with
`option(default, help, ...)`. Building the dataclass validates every field (type, range, finite numbers)
and then the class's own `check()` for rules that tie fields together, whether the values came from
command-line flags, from a JSON file (`from_dict`) or from Python. The `seqrl` command builds its flags
from the same fields (cli.py), so a default or a help text is written in one place only.
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from seqrl import SeqrlError

MAX_SEED = 2**32 - 1  # the largest seed every generator involved takes (numpy, torch, MuJoCo envs)
NONE_WORD = "none"  # how a command line or a file says "off" for an option that may be None


@dataclass(frozen=True)
class Spec:
    """What an option's metadata holds besides its default."""

    help: str
    low: float | None = None  # smallest allowed number
    above: float | None = None  # numbers must be greater than this
    high: float | None = None  # largest allowed number
    below: float | None = None  # numbers must be smaller than this
    choices: tuple[str, ...] = ()  # allowed words, for str options (or words allowed beside a number)
    off: bool = False  # None is a setting a user picks ('none' switches the option off), not only "unset"
    resumable: bool = False  # training: may differ when a run is resumed (its length, where and how it runs)
    cli: bool = True  # a command-line flag


def option(default: Any = dataclasses.MISSING, help: str = "", **spec: Any) -> Any:
    """A dataclass field with its default and `Spec`; a list or dict default is copied for each instance."""
    metadata = {"spec": Spec(help=help, **spec)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class InvalidOption(SeqrlError):
    """One option's value is of the wrong type or out of range."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        super().__init__(f"{name} got {value!r}; it must be {expected}")
        self.name, self.value, self.expected = name, value, expected


def spec_of(field: dataclasses.Field) -> Spec:
    """The `Spec` of a field made by `option` (an empty one otherwise)."""
    return field.metadata.get("spec", Spec(help=""))


def allowed_types(annotation: Any) -> tuple[Any, ...]:
    """The members of an annotation: `int | None` -> (int, NoneType)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def describe(annotation: Any, spec: Spec) -> str:
    """What a valid value looks like, for error messages: 'an integer >= 1 or none'."""
    kinds = []
    for kind in allowed_types(annotation):
        if kind in (int, float):
            bounds = [
                f">= {spec.low:g}" if spec.low is not None else "",
                f"> {spec.above:g}" if spec.above is not None else "",
                f"<= {spec.high:g}" if spec.high is not None else "",
                f"< {spec.below:g}" if spec.below is not None else "",
            ]
            noun = "an integer" if kind is int else "a finite number"
            kinds.append(" ".join([noun, *filter(None, bounds)]))
        elif kind is str:
            kinds.append("one of " + ", ".join(spec.choices) if spec.choices else "a string")
        elif kind is bool:
            kinds.append("true or false")
        elif kind is Path:
            kinds.append("a path")
        elif kind is type(None):
            kinds.append(NONE_WORD)
        elif typing.get_origin(kind) is list:
            kinds.append("a list of numbers" if typing.get_args(kind) == (float,) else "a list of strings")
        elif typing.get_origin(kind) is dict or kind is dict:
            kinds.append("an object")
    return " or ".join(kinds)


def _in_range(number: float, spec: Spec) -> bool:
    return (
        math.isfinite(number)
        and (spec.low is None or number >= spec.low)
        and (spec.above is None or number > spec.above)
        and (spec.high is None or number <= spec.high)
        and (spec.below is None or number < spec.below)
    )


def _convert(value: Any, kind: Any, spec: Spec) -> tuple[bool, Any]:
    """(True, the value as `kind`) when `value` is a valid `kind`, else (False, None); JSON-strict (no "3" for 3)."""
    if kind is type(None):
        return value is None, None
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and _in_range(value, spec)
        return ok, value
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _in_range(value, spec)
        return ok, float(value) if ok else None
    if kind is str:
        return isinstance(value, str) and (not spec.choices or value in spec.choices), value
    if kind is Path:
        return isinstance(value, (str, Path)) and str(value) != "", Path(value) if isinstance(
            value, (str, Path)
        ) else None
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            return False, None
        items = [_convert(entry, item, Spec(help="")) for entry in value]
        return all(ok for ok, _ in items), [converted for _, converted in items]
    if typing.get_origin(kind) is dict or kind is dict:
        return isinstance(value, dict), value
    raise TypeError(f"options of type {kind} are not supported")


def convert(name: str, value: Any, annotation: Any, spec: Spec) -> Any:
    """`value` checked against the field's type and range, converted (int to float, str to Path), or `InvalidOption`."""
    for kind in allowed_types(annotation):
        ok, converted = _convert(value, kind, spec)
        if ok:
            return converted
    raise InvalidOption(name, value, describe(annotation, spec))


def parse_text(text: str, annotation: Any) -> Any:
    """A command-line word as the value it stands for: 'none' -> None where allowed, '5' -> 5, '0.6' -> 0.6."""
    kinds = allowed_types(annotation)
    if type(None) in kinds and text.lower() == NONE_WORD:
        return None
    for kind in (int, float):
        if kind in kinds:
            try:
                return kind(text)
            except ValueError:
                pass
    return text


class Options:
    """Base of option dataclasses: every field is validated when the dataclass is built."""

    _hints: ClassVar[dict[type, dict[str, Any]]] = {}  # resolved annotations, per options class

    def __post_init__(self) -> None:
        hints = self.type_hints()
        for field in dataclasses.fields(self):
            value = convert(field.name, getattr(self, field.name), hints[field.name], spec_of(field))
            object.__setattr__(self, field.name, value)  # frozen dataclasses take their converted values this way
        self.check()

    def check(self) -> None:
        """Rules that tie several fields together; subclasses raise `SeqrlError` when one is broken."""

    @classmethod
    def type_hints(cls) -> dict[str, Any]:
        """The resolved annotation of each field."""
        if cls not in Options._hints:
            Options._hints[cls] = typing.get_type_hints(cls)
        return Options._hints[cls]

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of the fields, in declaration order."""
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Self:
        """Build from a JSON object read from `source`; unknown keys and bad values are one-line errors naming it."""
        if not isinstance(data, dict):
            raise SeqrlError(f"{source} must be a JSON object of {cls.__name__} settings, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise SeqrlError(
                f"{source} has unknown key(s) {', '.join(unknown)}; remove them (known: {', '.join(cls.field_names())})"
            )
        try:
            return cls(**data)
        except InvalidOption as error:
            raise SeqrlError(f"{source}: {error}; fix or remove that value") from None
        except TypeError as error:  # a required key is missing
            raise SeqrlError(f"{source} is incomplete ({error}); re-save it") from None

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (paths as strings)."""
        return {
            name: str(value) if isinstance(value, Path) else value for name, value in dataclasses.asdict(self).items()
        }

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)


def check_seed_range(seed: int, episodes: int) -> None:
    """Refuse episode seeds `seed .. seed + episodes - 1` that pass `MAX_SEED`."""
    if seed + episodes - 1 > MAX_SEED:
        raise SeqrlError(f"--seed {seed} + --episodes {episodes} passes the largest seed {MAX_SEED}; lower --seed")
