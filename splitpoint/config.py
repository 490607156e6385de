"""Configuration: one TOML file per side, every key also a command-line flag.

A config is a dataclass whose fields carry their help text. Values come from
the defaults, then the TOML file (`--config FILE`), then flags given on the
command line; the result is checked field by field and by the class's
`validate()`, and every problem is a ConfigError naming the key and the value.
A nested dataclass field is a TOML table (`[policy]`) and its keys are flags
with the table's name in front (`--policy-deadline-ms`). A key named `..._s` or `..._ms` is a
time, at most MAX_SECONDS (gRPC and Python's waits keep times in 32-bit milliseconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from splitpoint.errors import ConfigError, show_value
from splitpoint.files import open_regular

T = TypeVar("T")

#: the longest time a key may give, in seconds: 2^31 - 1 ms, 24.8 days. gRPC keeps its times
#: (keepalive, connection age, deadlines) in 32-bit milliseconds: --max-connection-age-s 3000000
#: ended in an OverflowError traceback once the server had loaded, and grace_s = 1e300 in a
#: shutdown that never ended (a wait past threading.TIMEOUT_MAX)
MAX_SECONDS = 2_147_483
_TIME_UNITS = {"_s": 1.0, "_ms": 1000.0}  # a key's suffix -> its unit per second


#: an integer as a flag or an item of a list writes it: ASCII digits 0-9, a sign at most
_INTEGER = re.compile(r"[+-]?[0-9]+")
#: more digits than any bound of an integer option has (each says its own bound below this)
_MOST_DIGITS = 30


def parse_int(text: str) -> int:
    """The integer a flag's text (or a list item, a split number) writes; ValueError naming the
    text otherwise. Every integer of the command line is read here: Python's int() also reads
    other scripts' digits, and `--runs \uff15` (a full-width 5) ran 5 runs, `--frames \u0665` (an
    Arabic-Indic 5) five frames, though no key, log or message the user reads writes them so."""
    stripped = text.strip(" \t")
    if not _INTEGER.fullmatch(stripped):
        digits = "" if text.isascii() else " (digits 0-9 only)"
        raise ValueError(f"{text!r} is not an integer{digits}")
    if len(stripped.lstrip("+-").lstrip("0")) > _MOST_DIGITS:  # int() of 4300 digits: Python's limit message
        raise ValueError(f"{stripped[:12]!r}... ({len(stripped)} characters) is far too large")
    return int(stripped)


def parse_float(text: str) -> float:
    """A number as a flag writes it: float()'s syntax, in ASCII alone (float() reads other scripts'
    digits too: `--grace-s \uff15` was 5 s). ValueError naming the text otherwise."""
    if not text.isascii():
        raise ValueError(f"{text!r} is not a number (digits 0-9 only)")
    if "_" in text:  # float() reads "1_0" as 10; an integer flag refuses it
        raise ValueError(f"{text!r} is not a number")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple | None = None,
           default_factory: Any = dataclasses.MISSING, secret: bool = False, group: str = "") -> Any:
    """A config field. `secret` values are never printed (tokens, keys); `group` heads its flag in --help."""
    meta = {"help": help, "choices": choices, "secret": secret, "group": group}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-").replace(".", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _flag_type(base: Any) -> Any:
    """argparse converter for a flag's text: numbers are parsed here, so the TOML side can be strict."""
    if typing.get_origin(base) is list and typing.get_args(base)[0] in (int, float):
        item = _flag_type(typing.get_args(base)[0])

        def convert_list(text: str) -> list:  # `--splits 3,7`: a comma-separated list of numbers
            return [item(v.strip()) for v in text.split(",") if v.strip()]

        convert_list.__name__ = f"comma-separated list of {item.__name__}s"
        return convert_list
    if base not in (int, float):
        return None

    def convert(text: str) -> Any:
        try:
            return parse_int(text) if base is int else parse_float(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = "integer" if base is int else "number"
    return convert


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = (),
                  groups: dict[str, Any] | None = None) -> None:
    """One flag per key, under the heading of its `group`. Flags default to 'not given' so that
    the TOML file is not overridden. A key without a default is marked required (it may come
    from the flag or from the config file)."""
    groups = {} if groups is None else groups

    def heading(title: str) -> Any:
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        return groups[title]

    for f, tp in _fields(cls):
        if f.name in skip:
            continue
        name = prefix + f.name
        if _is_section(tp):
            add_arguments(parser, tp, prefix=name + ".", groups=groups)
            continue
        base, optional = _unwrap_optional(tp)
        help_text = f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if f.default is dataclasses.MISSING else f.default
        if required:
            help_text = "REQUIRED (flag or config key): " + help_text
        elif default not in (None, "") and not f.metadata.get("secret"):
            help_text += f" (default: {show_value(default) if isinstance(default, bool) else default})"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = f.name.upper().split(".")[-1]
            if _flag_type(base):
                kwargs["type"] = _flag_type(base)
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
                kwargs.pop("metavar")
        title = f"[{prefix.rstrip('.')}] table" if prefix else f.metadata.get("group") or "other"
        heading(title + " options").add_argument(_flag(name), **kwargs)


def _coerce(key: str, value: Any, tp: Any, choices: tuple | None, listed: bool = False) -> Any:
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and value == ""):
        if optional:
            return None
        raise ConfigError(key, value, "a value is required")
    try:
        # Strict: a TOML string is not a number or a boolean (`window = "4"` is refused, naming
        # the key); flags arrive already converted by argparse (_flag_type, BooleanOptionalAction).
        if base is bool:
            if not isinstance(value, bool):
                raise ValueError
            out: Any = value
        elif base is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif base is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):  # `--grace-s nan`, TOML `inf`: every `x < bound` check passes them
                raise ConfigError(key, value, "expected a finite number")
        elif base is str:
            # nor is a TOML number a string: `bundle = 5` was read as "5", and `tls_cert = 7` said
            # "tls_key: tls_cert and tls_key go together"; a flag's value is text already. In a
            # list, `listed`, a number stays an item (bench's `splits = [0, "4-5"]`)
            if isinstance(value, bool) or not isinstance(value, (str, int, float) if listed else str):
                raise ValueError
            out = str(value)
            if "\0" in out:  # no file name, address or name holds one: os.stat raised ValueError, a traceback
                raise ConfigError(key, value, "contains a NUL byte")
        elif typing.get_origin(base) is list:
            (item,) = typing.get_args(base)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError
            out = [_coerce(f"{key}[{i}]", v, item, None, listed=True) for i, v in enumerate(value)]
        else:
            out = value
    except (TypeError, ValueError):
        raise ConfigError(key, value, _expected(base, value)) from None
    if choices and out not in choices:
        raise ConfigError(key, value, f"must be one of {', '.join(map(str, choices))}")
    per_second = next((u for suffix, u in _TIME_UNITS.items() if key.endswith(suffix)), None)
    if per_second is not None and isinstance(out, (int, float)) and out > MAX_SECONDS * per_second:
        unit = "s" if per_second == 1 else "ms"
        raise ConfigError(key, value, f"must be at most {MAX_SECONDS * per_second:.0f} {unit} (24.8 days: gRPC "
                                      "keeps times in 32-bit milliseconds)")
    return out


def _expected(base: Any, value: Any) -> str:
    want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        base, "a list" if typing.get_origin(base) is list else getattr(base, "__name__", str(base)))
    if isinstance(value, str) and base in (bool, int, float):
        return f"expected {want}, not a string: write it without quotes"
    if base is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'expected {want}, not a number: write it in quotes ("{value}")'
    return f"expected {want}"


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def build(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """An instance of cls from a (TOML-shaped) dict; unknown keys and bad values are ConfigErrors."""
    known = {f.name: (f, tp) for f, tp in _fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(prefix + key, values[key], f"unknown key; known keys: {', '.join(known)}")
    kwargs: dict[str, Any] = {}
    for name, (f, tp) in known.items():
        key = prefix + name
        if _is_section(tp):
            sub = values.get(name, {})
            if not isinstance(sub, dict):
                raise ConfigError(key, sub, "expected a table")
            kwargs[name] = build(tp, sub, prefix=key + ".")
        elif name in values:
            kwargs[name] = _coerce(key, values[name], tp, f.metadata.get("choices"))
            if _required(f) and isinstance(kwargs[name], str) and not kwargs[name].strip():
                # --bundle "": Path("") is the working directory, and "manifest.json is missing" named no key
                raise ConfigError(key, values[name], f"give the {f.metadata.get('help') or 'value'}")
        elif _required(f):
            raise ConfigError(key, None, f"is required: give the flag {_flag(key)} or the key {name} in the config file")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate:
        validate()
    return obj


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:  # a regular file only: a named pipe would block open() for ever, deaf to SIGTERM
        with os.fdopen(open_regular(p, "--config"), "rb") as fh:
            data = fh.read()
        return tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError("--config", str(p), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        bom = " - it starts with a byte-order mark (Windows Notepad's UTF-8): save it as UTF-8 without one" \
            if data.startswith(b"\xef\xbb\xbf") else ""
        raise ConfigError("--config", str(p), f"not valid TOML ({exc}){bom}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("--config", str(p), f"not UTF-8 text, so not TOML (byte {exc.start})") from None
    except RecursionError:  # 100,000 `[`: tomllib's parser recurses, and ended in a traceback
        raise ConfigError("--config", str(p), "not valid TOML (nested too deeply to be read)") from None
    except OSError as exc:
        raise ConfigError("--config", str(p), f"unreadable ({exc.strerror})") from None


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def load(cls: type[T], args: argparse.Namespace, config_path: str | Path | None = None) -> T:
    """Defaults < TOML file < flags given on the command line."""
    values = read_toml(config_path) if config_path else {}
    names = set()
    stack: list[tuple[type, str]] = [(cls, "")]
    while stack:
        c, prefix = stack.pop()
        for f, tp in _fields(c):
            if _is_section(tp):
                stack.append((tp, prefix + f.name + "."))
            else:
                names.add(prefix + f.name)
    for dotted in names:
        if hasattr(args, dotted):
            _set_dotted(values, dotted, getattr(args, dotted))
    return build(cls, values)


def load_printed(cls: type[T], args: argparse.Namespace) -> T:
    """`load` from the command's --config and flags; with --print-config the result is also
    printed as TOML (the command then stops)."""
    conf = load(cls, args, args.config)
    if args.print_config:
        print(to_toml(conf), end="")
    return conf


def to_toml(obj: Any, table: str = "") -> str:
    """The effective config as TOML (secrets masked); `--print-config` shows this."""
    lines: list[str] = []
    sections: list[tuple[str, Any]] = []
    for f, tp in _fields(type(obj)):
        value = getattr(obj, f.name)
        if _is_section(tp):
            sections.append((f.name, value))
            continue
        help_text = f.metadata.get("help", "")
        if help_text:
            lines.append(f"# {help_text}")
        if value is None:
            lines.append(f"# {f.name} = (not set)")
            continue
        if f.metadata.get("secret") and value:
            value = "********"
        lines.append(f"{f.name} = {_toml_value(value)}")
    out = (f"[{table}]\n" if table else "") + "\n".join(lines) + "\n"
    for name, value in sections:
        out += "\n" + to_toml(value, f"{table}.{name}" if table else name)
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    # a TOML basic string: JSON's escapes are TOML's (\n, \", \\, \uXXXX), so a control
    # character printed by --print-config reads back; TOML also wants DEL escaped, JSON does not
    return json.dumps(str(v), ensure_ascii=False).replace("\x7f", "\\u007f")


#: a host name or IPv4 address; an IPv6 address goes in brackets, so that its colons are not the port's
_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_BRACKETED_V6 = re.compile(r"\[[0-9A-Fa-f:.%A-Za-z]+\]")


def format_address(host: str, port: int) -> str:
    """(host, port) -> 'HOST:PORT', an IPv6 address in brackets: what parse_address reads back
    (a server on [::1] said it listened on "::1:50051", which no --cloud accepts)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(key: str, text: str, allow_zero_port: bool = True) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); names the key and value when malformed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(key, text, "expected HOST:PORT, e.g. 127.0.0.1:50051")
    if not (_HOST.fullmatch(host) or _BRACKETED_V6.fullmatch(host)):
        raise ConfigError(key, text, f"{host!r} is not a host name or address (no scheme such as http://; "
                                     "IPv6 in brackets: [::1]:50051)")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(key, text, f"port {port_text!r} is not a number") from None
    if not (0 if allow_zero_port else 1) <= port <= 65535:
        raise ConfigError(key, text, f"port {port} is out of range")
    return host.strip("[]"), port
