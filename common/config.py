"""Stage settings: one frozen dataclass per stage, the command line derived from it.

Why: defaults written twice drift apart (``--nice`` was 0 in the worker and 10 in the launcher) and
configs built positionally swap values silently when a field moves. Here each setting is declared
once, as a dataclass field with its default and help text (``option``); ``add_arguments`` builds
the argparse flags from those fields, ``from_namespace`` builds the config *by keyword*, and
``to_argv`` turns a config back into the flags that rebuild it, which is how the launcher writes
each stage's command line. Validation lives in each config's ``__post_init__``, raising
``FatalError`` with one clear line, so no config can exist with invalid values.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, NoReturn

from common.errors import FatalError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ``FatalError`` line instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise FatalError(f"{message} (see --help)")


def option(
    default: Any,
    help: str,
    *,
    choices: Iterable[Any] | None = None,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    show: Callable[[Any], str] | None = None,
    metavar: str | None = None,
    const: Any = None,
    cli: bool = True,
) -> Any:
    """A setting: default, help text and how it is spelled on the command line.

    ``flag`` overrides the derived ``--field-name``; ``parse``/``show`` convert between the
    command-line text and the value (e.g. ``on``/``off`` for a bool); ``cli=False`` keeps a
    setting out of the command line (set by code only); ``const`` makes the value optional on
    the command line (``--flag`` alone means ``const``, ``--flag VALUE`` that value).
    """
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "flag": flag,
        "parse": parse,
        "show": show,
        "metavar": metavar,
        "const": const,
        "cli": cli,
    }
    return field(default=default, metadata=meta)


def on_off(text: str) -> bool:
    """``on``/``off`` (also yes/no, true/false, 1/0) as a bool, for flags like ``--privacy on``."""
    t = text.strip().lower()
    if t in ("on", "yes", "true", "1"):
        return True
    if t in ("off", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def show_on_off(value: bool) -> str:
    return "on" if value else "off"


def _base_type(hint: Any) -> Any:
    """``Path | None`` -> Path; ``int`` -> int."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def _cli_fields(cls: type, skip: Iterable[str] = ()) -> list[tuple[Field, Any]]:
    hints = typing.get_type_hints(cls)
    skip = set(skip)
    return [
        (f, _base_type(hints[f.name]))
        for f in fields(cls)
        if f.metadata.get("cli") and f.name not in skip
    ]


def flag_name(f: Field) -> str:
    """The command-line flag of a field: ``--field-name``, ``--no-field-name`` for a default-on
    bool without a converter, or the declared ``flag``."""
    if f.metadata.get("flag"):
        return f.metadata["flag"]
    name = f.name.replace("_", "-")
    if f.default is True and f.metadata.get("parse") is None:
        return f"--no-{name}"
    return f"--{name}"


def add_arguments(
    parser: argparse.ArgumentParser | Any, cls: type, skip: Iterable[str] = ()
) -> None:
    """Add one flag per field of ``cls`` (defaults shown in --help come from the dataclass)."""
    for f, typ in _cli_fields(cls, skip):
        meta = f.metadata
        default = f.default if f.default is not MISSING else None
        shown = meta["show"](default) if meta["show"] and default is not None else default
        is_switch = typ is bool and meta["parse"] is None
        quiet = default in (None, "") or is_switch
        helptext = meta["help"] if quiet else f"{meta['help']} (default: {shown})"
        kw: dict[str, Any] = {"dest": f.name, "default": default, "help": helptext}
        if is_switch:
            kw["action"] = "store_false" if default is True else "store_true"
        else:
            kw["type"] = meta["parse"] or typ
            if meta["choices"] is not None:
                kw["choices"] = meta["choices"]
            if meta["metavar"]:
                kw["metavar"] = meta["metavar"]
            if meta["const"] is not None:
                kw.update(nargs="?", const=meta["const"])
        parser.add_argument(flag_name(f), **kw)


def from_namespace(cls: type, ns: argparse.Namespace, **override: Any) -> Any:
    """Build ``cls`` by keyword from parsed flags (fields not on the command line: defaults)."""
    values = {f.name: getattr(ns, f.name) for f in fields(cls) if f.init and hasattr(ns, f.name)}
    values.update(override)
    return cls(**values)


def to_argv(config: Any, skip: Iterable[str] = ()) -> list[str]:
    """The flags that rebuild ``config`` with ``from_namespace`` (only non-default values)."""
    argv: list[str] = []
    for f, typ in _cli_fields(type(config), skip):
        value = getattr(config, f.name)
        if value == f.default or value is None:
            continue
        name = flag_name(f)
        if typ is bool and f.metadata["parse"] is None:
            argv.append(name)  # store_true / store_false: the flag alone flips the default
        elif f.metadata["const"] is not None and value == f.metadata["const"]:
            argv.append(name)  # an optional value left out
        else:
            show = f.metadata["show"]
            argv += [name, show(value) if show else _text(value)]
    return argv


def _text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    if isinstance(value, Path):
        return str(value)
    return str(value)


def require(ok: bool, message: str) -> None:
    """Raise the one-line ``FatalError`` of a failed start-up check."""
    if not ok:
        raise FatalError(message)
