"""Declaring a setting once: type, default, bounds and help, on the dataclass field that holds it.

A config dataclass (`TrainConfig`, `LoraSettings`, ...) declares each user-facing field with
`setting(...)`. Everything that offers that field to a person derives from the declaration:
the worker's job validation (`worker/params.py`), the REST schema, the Train forms and the CLI
flags (`add_arguments`). So a default or a bound is written in exactly one place.

This module imports no torch: the web process and `--help` read declarations without paying for it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from llm.printable import first_unprintable

_META_KEY = "workbench"

# Whole numbers are stored (job params as JSON, counters in BIGINT-sized places) and handed to torch,
# which both stop at a signed 64-bit integer; a setting without its own bounds still has these.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Devices a setting of type "device" accepts. The index is checked for its form only: this process
# may not be a worker (workers report no GPUs), and no machine has more than MAX_CUDA_INDEX + 1.
# No "mps": llm.device.pick_device runs jobs on CUDA or the CPU only, so it would fail in the worker.
DEVICE_NAMES = ("auto", "cpu", "cuda")
MAX_CUDA_INDEX = 63


@dataclass(frozen=True)
class Setting:
    """How one user-facing value is checked and offered."""

    type: str                         # "int" | "float" | "bool" | "str" | "compile" | "device" | "ids"
    default: Any = None
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False   # "greater than" instead of "at least"
    choices: tuple[str, ...] | None = None
    required: bool = False
    max_length: int = 200             # characters of a "str"; how many an "ids" may list
    label: str = ""                   # form label; default: the name with spaces
    advanced: bool = False            # forms put these under "Advanced"

    def with_default(self, default: Any) -> "Setting":
        return Setting(**{**self.__dict__, "default": default})

    def check(self, name: str, value: Any) -> Any:
        """`value` converted to this setting's type, or ValueError("must be ...") naming nothing else.

        The caller adds where the value came from (a job's field, a CLI flag).
        """
        if self.type == "ids":
            return self._check_ids(name, value)
        if self.type == "int":
            # bool is an int in Python; True as "max_steps" is a mistake, not 1.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"must be a whole number, got {value!r}")
            if isinstance(value, float):
                # Web forms send numbers as floats (30.0); accept those that are whole.
                if not math.isfinite(value) or not value.is_integer():
                    raise ValueError(f"must be a whole number, got {value!r}")
                value = int(value)
            if not INT64_MIN <= value <= INT64_MAX:
                bound = f"at most {INT64_MAX}" if value > 0 else f"at least {INT64_MIN}"
                raise ValueError(f"must be {bound}, got a {value.bit_length()}-bit number")
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"must be a number, got {value!r}")
            value = float(value)
        elif self.type == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, got {value!r}")
        elif self.type == "compile":
            if not (isinstance(value, bool) or value == "auto"):
                raise ValueError(f"must be true, false or 'auto', got {value!r}")
        elif self.type in ("str", "device"):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"must be a non-empty string, got {value!r}")
            value = value.strip()
            if len(value) > self.max_length:
                raise ValueError(f"must be at most {self.max_length} characters")
            if (found := first_unprintable(value)) is not None:
                raise ValueError(f"holds {found}: control and bidirectional control characters are not allowed")
        if self.type in ("int", "float"):
            if self.minimum is not None:
                too_small = value <= self.minimum if self.exclusive_minimum else value < self.minimum
                if too_small:
                    if self.type == "int" and self.minimum == 1:
                        raise ValueError(f"must be a positive whole number, got {value!r}")
                    relation = "greater than" if self.exclusive_minimum else "at least"
                    raise ValueError(f"must be {relation} {self.minimum:g}, got {value!r}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"must be at most {self.maximum:g}, got {value!r}")
        if self.type == "device":
            value = check_device(value)
        elif self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}; got {value!r}")
        return value


    def _check_ids(self, name: str, value: Any) -> list[int]:
        """Several row ids (e.g. models to compare): a list of whole numbers, or text such as "3, 5" (a form's
        or a flag's), each within the bounds; none twice, at most `max_length` of them."""
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if not all(part.isascii() and part.isdigit() for part in parts):
                raise ValueError(f"must be ids separated by commas, such as 3, 5; got {value!r}")
            value = [int(part) for part in parts]
        if not isinstance(value, list) or not value:
            raise ValueError(f"must be a list of one or more ids, got {value!r}")
        if len(value) > self.max_length:
            raise ValueError(f"must list at most {self.max_length} ids, got {len(value)}")
        each = Setting("int", minimum=self.minimum, maximum=self.maximum)
        ids = []
        for index, item in enumerate(value):
            try:
                ids.append(each.check(name, item))
            except ValueError as error:
                raise ValueError(f"item {index + 1} {error}") from None
            if ids[-1] in ids[:-1]:
                raise ValueError(f"lists {ids[-1]} twice")
        return ids


def check_device(value: str) -> str:
    """`value` in lower case if it is auto, cpu, cuda or cuda:N (N from 0 to MAX_CUDA_INDEX), else
    ValueError. Whether GPU N exists is known only on the machine that runs the job."""
    device = value.strip().lower()
    prefix, colon, index = device.partition(":")
    if device in DEVICE_NAMES:
        return device
    if prefix == "cuda" and colon and index.isascii() and index.isdigit() and len(index) <= 2 \
            and int(index) <= MAX_CUDA_INDEX:
        return f"cuda:{int(index)}"
    if prefix == "cuda" and index.isascii() and index.isdigit():
        raise ValueError(f"must be cuda:N with N a GPU index from 0 to {MAX_CUDA_INDEX}; got {value!r}")
    raise ValueError(f"must be one of {', '.join(DEVICE_NAMES)} or cuda:N (N a GPU index); got {value!r}")


def setting(default: Any, type: str | None = None, help: str = "", **options: Any):
    """A dataclass field carrying its `Setting`; the type is taken from the default when not given."""
    kind = type or {bool: "bool", int: "int", float: "float", str: "str"}.get(default.__class__, "str")
    declared = Setting(type=kind, default=default, help=help, **options)
    return field(default=default, metadata={_META_KEY: declared})


def settings_of(config_class: type) -> dict[str, Setting]:
    """The declared settings of a config dataclass, by field name, in field order."""
    declared = {}
    for f in fields(config_class):
        if _META_KEY in f.metadata:
            value = f.metadata[_META_KEY]
            default = f.default if f.default is not MISSING else value.default
            declared[f.name] = value.with_default(default)
    return declared


def add_arguments(parser: argparse.ArgumentParser, declared: dict[str, Setting], *,
                  with_defaults: bool = False) -> None:
    """CLI flags (`--max-steps`, ...) for declared settings. Without `with_defaults` a flag left out
    is None, so the config class's own default applies (it is not copied into argparse)."""
    for name, spec in declared.items():
        flag = "--" + name.replace("_", "-")
        default = spec.default if with_defaults else None
        help_text = spec.help + (f" (default: {spec.default})" if spec.default is not None else "")
        if spec.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        convert = {"int": int, "float": float}.get(spec.type, str)
        parser.add_argument(flag, type=convert, default=default, help=help_text,
                            choices=list(spec.choices) if spec.choices and spec.type == "str" else None)


def values_from_arguments(args: argparse.Namespace, declared: dict[str, Setting]) -> dict[str, Any]:
    """The flags a person gave (not None), checked against their declarations."""
    values = {}
    for name, spec in declared.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if spec.type == "compile" and isinstance(value, str) and value.lower() in ("on", "off", "true", "false"):
            value = value.lower() in ("on", "true")
        try:
            values[name] = spec.check(name, value)
        except ValueError as error:
            raise ValueError(f"--{name.replace('_', '-')} {error}") from None
    return values
