"""The `splitpoint` command line's grammar: commands, their flags in groups, and examples.

The commands themselves live in splitpoint/cli.py; this module only describes them, so
that `splitpoint --help`, `splitpoint COMMAND --help` and the bare `splitpoint` overview
read from one place (their summaries, usage lines and examples: splitpoint/cli_commands.py). The agent's and the server's flags are generated from their config
dataclasses (splitpoint/config.py), each under the heading of its `group`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import splitpoint
from edge_node.config import MAX_THREADS
from splitpoint import config as cfg
from splitpoint.cli_commands import (  # COMMANDS re-exported: tests read the examples here
    COMMANDS,
    EXIT_CODES,
)

Command = Callable[[argparse.Namespace], int]
#: `splitpoint demo --frames`' ceiling (~a minute to an hour of frames, a results log of tens of MB)
MAX_DEMO_FRAMES = 100_000


def overview() -> str:
    """What bare `splitpoint` prints: every command in one line."""
    width = max(map(len, COMMANDS))
    lines = [f"splitpoint {splitpoint.__version__}: split a CNN between a Coral Edge TPU and a TensorFlow server.",
             "", "usage: splitpoint [-v] COMMAND [options]      (splitpoint COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (summary, _, _) in COMMANDS.items()]
    lines += ["", "start here: splitpoint demo", EXIT_CODES]
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error, with where to look; a value that
    begins with '-' taken as the value it is (`--bandwidth -5Mbps`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message: str, file: Any = None) -> None:
        # argparse drops an OSError here: `--version > /dev/full` exited 0 with nothing written.
        # It reaches cli._main now, which says so (exit 1; a reader gone is handled there too).
        if message:
            (file or sys.stderr).write(message)

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        # argparse reports words no parser took from the top-level parser ("splitpoint: error:
        # unrecognized arguments: --bogus (see splitpoint --help)"); the command's own parser
        # knows its options, so the error is its: "splitpoint edge: error: ... splitpoint edge --help"
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser: argparse.ArgumentParser = self
            while True:
                sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
                chosen = getattr(parsed, sub.dest, None) if sub is not None else None
                if sub is None or chosen not in sub.choices:
                    break
                parser = sub.choices[chosen]
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # every parser of the grammar, subcommands' included, parses its own part here
        argv = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._values_attached(argv), namespace)

    def _values_attached(self, argv: list[str]) -> list[str]:
        """`--opt VALUE` as `--opt=VALUE` where VALUE begins with '-' and is no option of this parser.

        argparse takes any such word for an option (only a plain negative number like -5 is let
        through), so `--bandwidth -5Mbps` failed with "expected one argument" instead of the
        message about -5Mbps that `--bandwidth=-5Mbps` gets. Stops at `--` and at a
        subcommand's name: what follows is the subcommand's to parse."""
        takes_value = {s for a in self._actions if a.nargs in (None, 1) for s in a.option_strings}
        options = [s for a in self._actions for s in a.option_strings]
        commands = {c for a in self._actions if a.nargs == argparse.PARSER for c in (a.choices or ())}

        def named(word: str) -> list[str]:  # the options `word` alone names: itself, or what it abbreviates
            if word in options:
                return [word]
            return [s for s in options if s.startswith(word) and s.startswith("--")] if (
                word.startswith("--") and self.allow_abbrev) else []

        def is_option(word: str) -> bool:  # as argparse reads it: -o, --opt, --opt=..., an abbreviation, -oVALUE
            return bool(named(word.split("=", 1)[0]) or word[:2] in options)

        out: list[str] = []
        i = 0
        while i < len(argv):
            word = argv[i]
            if word == "--" or word in commands:
                return out + argv[i:]
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            wants = named(word)
            if (len(wants) == 1 and wants[0] in takes_value and nxt is not None and nxt.startswith("-")
                    and nxt not in ("-", "--") and not is_option(nxt)):
                out.append(f"{word}={nxt}")
                i += 2
                continue
            out.append(word)
            i += 1
        return out


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _command(sub: Any, name: str, func: Command, description: str = "") -> argparse.ArgumentParser:
    summary, usage, examples = COMMANDS[name]
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\n" + EXIT_CODES
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, usage=usage, description=(description or summary[0].upper() + summary[1:] + "."),
        epilog=epilog, formatter_class=_Formatter)
    p.set_defaults(func=func)
    return p


def integer(text: str) -> int:
    """An integer flag (splitpoint.config.parse_int: ASCII digits, `--split \uff15` is refused)."""
    try:
        return cfg.parse_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str, most: int | None = None) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"{value} must be at most {most}")
    return value


def up_to(most: int) -> Callable[[str], int]:
    """positive_int, at most `most`: `profile --threads 100000` segfaulted in LiteRT, and
    `--runs 100000000000` ran for ever."""
    def convert(text: str) -> int:
        return positive_int(text, most)

    convert.__name__ = "integer"  # argparse names the type in its message
    return convert


def number(text: str) -> float:
    """A number flag (splitpoint.config.parse_float: ASCII alone)."""
    try:
        return cfg.parse_float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fraction(text: str) -> float:
    value = number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def build_parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    """The whole grammar; `commands` maps each command name to the function that runs it."""
    # the overview says the usage and lists the commands: argparse's own usage line and
    # COMMAND list would say both again (`splitpoint --help`)
    parser = _Parser(prog="splitpoint", usage=argparse.SUPPRESS, description=overview(), formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"splitpoint {splitpoint.__version__}")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="debug logging, and the native libraries' own logs (TensorFlow, LiteRT, OpenCV)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog="splitpoint", parser_class=_Parser,
                                help=argparse.SUPPRESS)
    _add_demo(_command(sub, "demo", commands["demo"]))
    _add_partition(_command(sub, "partition", commands["partition"],
                            "Partition a model into a bundle: int8 heads for the edge, float tails for the server."))
    _command(sub, "inspect", commands["inspect"]).add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    from cloud_server.config import CloudConfig
    from edge_node.config import EdgeConfig

    for name, cls in (("cloud", CloudConfig), ("edge", EdgeConfig)):
        summary = COMMANDS[name][0]
        p = _command(sub, name, commands[name], f"{summary[0].upper()}{summary[1:]}. Every flag is also a key of "
                                                f"the --config TOML file (docs/configuration.md); flags override it.")
        p.add_argument("--config", metavar="FILE", help="TOML file; flags given here override it")
        p.add_argument("--print-config", action="store_true", help="print the effective config as TOML and exit")
        if name == "edge":  # for programs that drive the agent (splitpoint bench); not a config key
            p.add_argument("--events", metavar="FILE",
                           help='append one JSON line per milestone here: {"event": "source-open", ...} when the '
                                "frame source has opened and the agent has started (its first link probe "
                                "done), right before the first frame")
        cfg.add_arguments(p, cls)
    p = _command(sub, "results", commands["results"], (
        "Summarize results logs (JSONL or SQLite; one a running agent is writing too): frames by status and "
        "where they ran, end-to-end latency percentiles, splits, why frames ran locally instead of in the "
        "cloud, replicas, failures, accuracy where frames have labels. With several logs, each and then all."))
    p.add_argument("logs", nargs="+", metavar="LOG", help="results log")
    p.add_argument("--json", action="store_true", help="one JSON list of the summaries")
    _add_profile(_command(sub, "profile", commands["profile"]))
    _add_policy(_command(sub, "policy", commands["policy"]), commands["policy"])
    _add_doctor(_command(sub, "doctor", commands["doctor"], (
        "Check a field installation and print one line per finding; exit 1 when any says FAIL. With --config, "
        "reads bundle, source, cloud, device, results and the TLS keys from the agent's TOML file (and validates the "
        "whole file); flags override it. Run it as the agent's user, with the agent stopped (it holds the Edge TPU).")))
    _add_certs(_command(sub, "certs", commands["certs"]))
    _add_bench(_command(sub, "bench", commands["bench"], (
        "Benchmark a bundle through the real server and agent on loopback: every split at every (bandwidth, RTT) "
        "condition (the oracle), the adaptive agent's settled split, a step change, real uplink traces, "
        "throughput mode, goodput and per-frame overhead. Every flag is also a key of the --config TOML file; "
        "flags override it. See docs/benchmarks.md.")))
    from splitpoint.loadtest import LoadtestConfig

    p = _command(sub, "loadtest", commands["loadtest"], (
        "Emulate N drones (each its own channel and Infer stream, paced like a camera, sending the bundle's "
        "held-out frames cut at one split) against a target, and report frames/s, latency percentiles, "
        "refusals by status code and each replica's share. Every flag is also a key of the --config TOML file."))
    p.add_argument("--config", metavar="FILE", help="TOML file; flags given here override it")
    cfg.add_arguments(p, LoadtestConfig)
    return parser


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", metavar="DIR",
                   help="where the bundle and the results go (default: splitpoint/demo under the user's cache "
                        "directory, $XDG_CACHE_HOME or ~/.cache)")
    # a demo is a look, not a soak test: each frame is a printed line and a results record, and
    # the detector demo holds every frame's detections for its summary (--frames 10**12 took all that)
    p.add_argument("--frames", type=up_to(MAX_DEMO_FRAMES), default=24,
                   help=f"frames to stream, 1 to {MAX_DEMO_FRAMES} (default 24)")
    p.add_argument("--split", type=integer, default=None, help="fixed split; default: take turns over every split")
    p.add_argument("--model", choices=("digits-cnn", "digits-detector"), default="digits-cnn",
                   help="the bundled classifier (default) or the digits detector: several outputs, "
                        "multi-tensor cuts, detections in source-image pixels")
    p.add_argument("--rebuild", action="store_true", help="partition again even if the bundle exists")


def _add_partition(p: argparse.ArgumentParser) -> None:
    # The one list of built-ins, not a copy here that falls behind it.
    from splitpoint.models import BUILTIN, MAX_INPUT_SIZE, SIZED

    g = p.add_argument_group("model and output")
    g.add_argument("model", help="a .keras/.h5 file (not a SavedModel directory: save it with "
                                 f"model.save(\"m.keras\")), or a built-in: {', '.join(BUILTIN)}")
    g.add_argument("-o", "--output", required=True, metavar="BUNDLE", help="REQUIRED: bundle directory to write")
    g.add_argument("--input-size", type=positive_int, metavar="PX",
                   help=f"input size, 32-{MAX_INPUT_SIZE}, of {', '.join(f'{k} (default {v})' for k, v in SIZED.items())}; "
                        "a model file's own input shape decides its size, unless it takes any size: then "
                        f"1-{MAX_INPUT_SIZE}, as small as its layers can take")
    g.add_argument("--force", action="store_true", help="replace an existing bundle in BUNDLE")
    g = p.add_argument_group("calibration (int8 quantization)")
    cal = g.add_mutually_exclusive_group()
    cal.add_argument("--calibration", metavar="DIR", help="representative frames (images or .npy) for int8 calibration")
    cal.add_argument("--calibration-random", type=positive_int, metavar="N", help="calibrate on N random frames")
    g = p.add_argument_group("splits and verification")
    g.add_argument("--splits", metavar="LIST", help="only these splits, e.g. 3,5,8-10 (0 and K are always built)")
    g.add_argument("--max-cut-tensors", type=positive_int, default=4, metavar="N",
                   help="offer cuts whose frontier is up to N tensors (skip connections, feature pyramids); "
                        "1 = only points where one tensor carries everything (default 4)")
    g.add_argument("--min-agreement", type=fraction, metavar="F",
                   help="fail when a split's top-1 agreement (a detector's: detection agreement, both ways; "
                        "one value per frame: within 5%% of the float values' range) with "
                        "the float model is below F (default 0.98, a detector's 0.95; "
                        "random-weight built-ins only record it unless this is given)")
    g.add_argument("--jobs", type=positive_int, metavar="N",
                   help="splits converted in parallel (default: 1, or 2 for big models; at most one per CPU)")
    g = p.add_argument_group(
        "a detector of one's own (decoder settings; docs/bundle.md, splitpoint/detection_config.py)")
    g.add_argument("--detection", metavar="FILE",
                   help="TOML or JSON file: kind, heatmap, size, stride, box_format, score_threshold, nms_iou, "
                        "max_detections, class_agnostic_nms, labels; the flags below override it")
    g.add_argument("--detection-kind", metavar="KIND", help="how outputs decode: centernet (the default)")
    g.add_argument("--score-threshold", type=number, metavar="F", help="detections below F are dropped (default 0.3)")
    g.add_argument("--nms-iou", type=number, metavar="F", help="non-maximum suppression IoU (default 0.5)")
    g.add_argument("--max-detections", type=integer, metavar="N", help="at most N detections per frame, 1 to 10000 (default 20)")
    g.add_argument("--box-format", metavar="FMT",
                   help="the size map's unit: size_pixels (default), size_cells or size_normalized")
    g.add_argument("--labels", metavar="LIST|FILE",
                   help="class labels, comma-separated or one per line in FILE (any model)")


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("side", choices=("edge", "cloud", "show", "reference"),
                   help="edge or cloud: measure here; show: print FILE; reference: write drone-paper-shaped "
                        "edge/cloud profiles and a power table for the bundle into the -o directory")
    p.add_argument("file", nargs="?", help="the profile to show (with `show`)")
    g = p.add_argument_group("measuring (edge, cloud, reference)")
    g.add_argument("--bundle", metavar="DIR", help="REQUIRED except with show: bundle directory")
    g.add_argument("-o", "--output", metavar="FILE", help="REQUIRED except with show: profile JSON to write")
    # defaults None: given to another side than edge they are refused, not ignored (cmd_profile)
    g.add_argument("--device", help="edge: cpu, edgetpu, edgetpu:usb:N (default cpu)")
    g.add_argument("--threads", type=up_to(MAX_THREADS), help="edge: LiteRT threads (default 1)")
    g.add_argument("--runs", type=up_to(100_000), help="timed runs per split after warm-up (default 50)")
    g.add_argument("--splits", metavar="K,K,...", help="edge: profile only these splits (and K); default every split")


def _add_policy(p: argparse.ArgumentParser, func: Command) -> None:
    from scheduler.objectives import POLICIES, PolicyConfig

    # prog given: argparse would otherwise build it from the parent's usage line
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND", parser_class=_Parser,
                            prog="splitpoint policy")
    summary, usage, examples = COMMANDS["policy"]
    pe = psub.add_parser("explain", help="predicted latency and energy of every split, and the choice", usage=usage,
                         description="Predict every split's latency and edge energy for a given link, and show the "
                                     "policy's choice.", formatter_class=_Formatter,
                         epilog="examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\n" + EXIT_CODES)
    g = pe.add_argument_group("bundle and link")
    g.add_argument("--bundle", required=True, metavar="DIR", help="REQUIRED: bundle directory")
    g.add_argument("--bandwidth", required=True, help="REQUIRED: uplink rate, e.g. 5Mbps")
    g.add_argument("--rtt", required=True, help="REQUIRED: round-trip time, e.g. 40ms")
    g.add_argument("--queue", default="0ms", help="server queue wait (default 0ms)")
    g.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g.add_argument("--policy", dest="policy_alias", choices=POLICIES, metavar="NAME", default=None,
                   help="the policy to explain: " + ", ".join(POLICIES) + " (same as --name; default min-latency)")
    cfg.add_arguments(pe, PolicyConfig, groups={"other options": pe.add_argument_group("policy options")})
    for action in pe._actions:  # the agent's defaults (fixed, its --split) are not explain's
        if action.dest == "name" and "--name" in action.option_strings:
            action.help = "the policy to explain (default: min-latency; fixed: the choice is --split)"
        elif action.dest == "split":
            action.help = "the split of the fixed policy (--name fixed; default: K, all on the edge)"
    pe.set_defaults(func=func)


def _add_doctor(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to check")
    g.add_argument("--config", metavar="FILE", help="the agent's TOML config, e.g. /etc/splitpoint/edge.toml")
    g.add_argument("--bundle", metavar="DIR", help="bundle directory (checks every edge file's sha256)")
    g.add_argument("--cloud", metavar="HOST:PORT", help="the server to reach (Describe, Probe, digest, clock skew): "
                                                             "HOST:PORT, IP:PORT,IP:PORT (each checked) or dns:///NAME:PORT")
    g.add_argument("--device", help="cpu, edgetpu, edgetpu:usb[:N], edgetpu:pci[:N] (default cpu): "
                                    "a missing Edge TPU fails only when asked for")
    g.add_argument("--results", metavar="PATH",
                   help="results log path (free disk, write access; default results.jsonl)")
    g.add_argument("--results-format", choices=("jsonl", "sqlite"),
                   help="the agent's results_format (default jsonl): an existing log must be of it")
    g.add_argument("--source", metavar="SPEC", help="the frame source to open and read a frame from "
                                                    "(camera:N, a directory, a video file, synthetic:N)")
    g = p.add_argument_group("security")
    g.add_argument("--tls-ca", metavar="FILE", help="CA (PEM) that signed the server's certificate")
    g.add_argument("--tls-cert", metavar="FILE", help="this agent's certificate (PEM), for mutual TLS")
    g.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    g.add_argument("--tls-server-name", metavar="NAME", help="name to verify in the server's certificate")
    g.add_argument("--token-file", metavar="FILE", help="file holding the bearer token")
    g.add_argument("--insecure", action="store_true", default=None, help="talk plaintext to the cloud (development only)")


def _add_certs(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default="certs", metavar="DIR", help="directory to write (default ./certs)")
    p.add_argument("--server-name", metavar="NAMES",
                   help="comma-separated DNS names/IPs the server certificate is valid for (default localhost,127.0.0.1)")
    p.add_argument("--clients", metavar="NAMES",  # names, not a count: the server counts streams per name
                   help="comma-separated drone names: a certificate each (CN = the name) in DIR/clients/NAME.pem, "
                        "NAME.key; a CA already in DIR signs them and is kept, with server.pem")
    p.add_argument("--force", action="store_true",
                   help="replace existing files (with --clients and a CA in DIR: only the named drones' files)")


def _add_bench(p: argparse.ArgumentParser) -> None:
    from splitpoint.bench.options import add_arguments  # declared once, as BenchOptions

    add_arguments(p)
