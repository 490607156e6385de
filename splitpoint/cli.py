"""The `splitpoint` command line.

    splitpoint partition MODEL -o BUNDLE      make a bundle (heads + tails + manifest)
    splitpoint inspect BUNDLE                 what a bundle holds
    splitpoint cloud --bundle DIR ...         run the server (cli_cloud.py)
    splitpoint edge --bundle DIR ...          run the agent
    splitpoint demo                           all of it on loopback with the bundled digits model
    splitpoint profile / policy explain       the scheduler's inputs and its plan (cli_scheduler.py)

The grammar (flags, groups, examples) is in splitpoint/cli_parser.py. An error
prints one line and exits with its `exit_code`: 2 when the command, its
configuration or an input it names is wrong, 1 when the run itself failed. Heavy imports (TensorFlow) happen inside the commands
that need them, so the edge side runs without TensorFlow installed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from splitpoint import cli_logging, cli_parser, partition_guard, scratch_dir
from splitpoint import config as cfg
from splitpoint.cli_certs import cmd_certs
from splitpoint.cli_cloud import cmd_cloud
from splitpoint.cli_edge import cmd_edge
from splitpoint.cli_logging import PIPE_CLOSED_EXIT, logging_restored, setup_logging, stdout_gone
from splitpoint.cli_parser import Command
from splitpoint.cli_scheduler import cmd_policy_explain, cmd_profile
from splitpoint.cli_signals import HELD, sigterm_interrupts
from splitpoint.errors import ConfigError, SplitpointError

if TYPE_CHECKING:
    from splitpoint.bundle import Manifest

log = logging.getLogger("splitpoint")


# ---------------------------------------------------------------- partition


def cmd_partition(args: argparse.Namespace) -> int:

    from splitpoint import detection_config
    from splitpoint.partition import PartitionOptions, load_model_source, parse_splits, partition

    t0 = time.perf_counter()
    if args.output == "":  # `-o "$OUT"` with OUT unset: Path("") is the current directory, which it replaced
        raise ConfigError("-o", "", "give a directory for the bundle (it was empty: an unset variable?)")
    labels = detection_config.parse_labels(args.labels) if args.labels is not None else None
    detection, labels, origins = detection_config.build(args.detection, vars(args), labels)  # checked before the model loads
    src = load_model_source(args.model, args.input_size)
    if src.detection and args.detection is None and detection is not None:  # flags adjust its own decoder
        detection = detection_config.build(None, vars(args), None, base=src.detection)[0]
    opts = PartitionOptions(
        output=Path(args.output),
        calibration_dir=_calibration_dir(args.calibration),
        calibration_random=args.calibration_random,
        splits=parse_splits(args.splits) if args.splits is not None else None,
        min_agreement=args.min_agreement,
        jobs=args.jobs,
        input_size=args.input_size,
        force=args.force,
        max_cut_tensors=args.max_cut_tensors,
        detection=detection,
        labels=labels,
        detection_origins=origins,
    )
    manifest = partition(src, opts)
    print(_bundle_table(manifest))
    print(f"\nbundle written to {args.output} in {time.perf_counter() - t0:.1f}s "
          f"({len(manifest.splits)} splits, model digest {manifest.model_digest[:23]}...)")
    return 0


def _calibration_dir(text: str | None) -> Path | None:
    if text is not None and not text.strip():  # `--calibration "$DIR"` with DIR unset fell back to random frames
        raise ConfigError("--calibration", text, "give a directory of frames, or leave the flag out for random ones")
    return Path(text) if text else None


def _bundle_table(m: object) -> str:
    from splitpoint.bundle import EDGETPU_CACHE_BYTES, Manifest

    assert isinstance(m, Manifest)
    # a detector's agreement is detection agreement (verify.py), which it has no top-1 of
    # one value per frame (a sigmoid score, a regressor): value agreement, within a tolerance (verify.py)
    kinds = {("top1_agreement" in s.verification, "value_agreement" in s.verification) for s in m.splits}
    agree = ("det. agree" if m.detection else "value agree" if kinds == {(False, True)}
             else "agree (top-1/value)" if (True, True) in kinds else "top-1 agree")
    rows = [("k", "after layer", "cut shape", "wire bytes", "head params", "edge tpu", agree, "max err")]
    for s in m.splits:
        cut = "x".join(map(str, s.cut[0].shape)) if s.cut else "-"
        if len(s.cut) > 1:  # the wire bytes are every tensor's
            cut += f" +{len(s.cut) - 1} more"
        params = f"{s.head_param_bytes / 1024:.0f} KiB" + (" >8MB!" if s.head_param_bytes > EDGETPU_CACHE_BYTES else "")
        tpu = s.edgetpu.get("status", "")
        if tpu == "compiled":
            tpu = f"{s.edgetpu.get('ops_on_edgetpu')} tpu/{s.edgetpu.get('ops_on_cpu')} cpu ops"
        v = s.verification
        rows.append((
            str(s.split), s.after_layer or "(input)", cut, str(s.wire_bytes), params if s.head else "-", tpu,
            f"{v.get('agreement', v.get('top1_agreement', 0)):.1%}", f"{v.get('max_abs_error', 0):.4f}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    head = f"{m.model_name}: {m.num_layers} layers, digest {m.model_digest[:23]}..., source {m.source}"
    return "\n".join([head, *lines, *_compile_failures(m)])


def _compile_failures(m: Manifest) -> list[str]:
    """Why heads failed to compile for the Edge TPU, one line per reason: the table said only
    "failed", and the compiler's words were in the manifest alone."""
    from splitpoint.bundle import split_ranges

    by_reason: dict[str, list[int]] = {}
    for s in m.splits:
        if s.edgetpu.get("status") == "failed":
            by_reason.setdefault(str(s.edgetpu.get("reason", "")), []).append(s.split)
    return [f"edge tpu: head{'s' if len(ks) > 1 else ''} {split_ranges(ks)} failed to compile ({reason[:300]}); "
            "those splits' heads run on the CPU" for reason, ks in by_reason.items()]


def cmd_inspect(args: argparse.Namespace) -> int:
    from splitpoint.artifact_shapes import check_head_files
    from splitpoint.bundle import load_bundle
    from splitpoint.errors import BackendUnavailableError

    bundle = load_bundle(args.bundle)
    try:
        heads = f"; its {check_head_files(bundle)} head files take and make their splits' shapes"
    except BackendUnavailableError as err:  # a machine without LiteRT still shows the bundle
        heads = f"; head shapes not checked ({err})"
    print(_bundle_table(bundle.manifest))
    print(f"\n{args.bundle}: all artifacts present and matching their sha256{heads} "
          "(the server checks each tail's when it loads it)")
    return 0


# ---------------------------------------------------------------- cloud / edge


def cmd_doctor(args: argparse.Namespace) -> int:
    from splitpoint import doctor

    flags = {k: getattr(args, k, None) for k in doctor.EDGE_KEYS}
    values, config_checks, config = doctor.resolve_settings(args.config, flags)
    cloud = values.get("cloud") or None
    # a server named on this command line is checked whatever the config's policy
    no_server = "" if flags.get("cloud") else doctor.contacts_no_server(config)
    # the one client factory, one per replica of a list: OffloadClient(replica, timeout_s=5, security=ClientSecurity(...))
    make_clients, transport = doctor.client_factories(cloud or "", {k: values.get(k) for k in doctor.TRANSPORT_KEYS})
    return doctor.run_doctor(values.get("bundle") or None, cloud, values["device"], values["results"],
                             make_client=make_clients if cloud else None, transport=transport,
                             config_checks=config_checks,
                             secrets={k: values[k] for k in ("tls_key", "token_file") if values.get(k)},
                             no_server=no_server,
                             certificates={k: values[k] for k in ("tls_ca", "tls_cert") if values.get(k)},
                             source=values.get("source") or "", results_format=values.get("results_format") or "jsonl",
                             conf=config)


def cmd_bench(args: argparse.Namespace) -> int:
    from splitpoint.bench.harness import run_bench
    from splitpoint.bench.options import load_options

    opts = load_options(args)
    if args.print_config:
        print(cfg.to_toml(opts), end="")
        return 0
    opts.check_inputs()
    # the harness stops its edge worker, link emulator and server and saves what it measured
    # (killed outright, it left the worker running its command)
    with sigterm_interrupts():
        result = run_bench(opts, sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "bench" else [])
    return 0 if result.complete and not result.errors else 1


def cmd_loadtest(args: argparse.Namespace) -> int:
    from splitpoint.files import check_replaceable
    from splitpoint.loadtest import LoadtestConfig, run_loadtest
    from splitpoint.loadtest_report import REPORT, is_report

    conf = cfg.load(LoadtestConfig, args, args.config)
    conf.check_files()
    if conf.json:  # found now, not after the whole run's load
        check_replaceable(conf.json, "json", REPORT, is_report)  # a directory, or someone's file
        if not Path(conf.json).parent.is_dir():
            raise ConfigError("json", conf.json, f"its directory {Path(conf.json).parent} does not exist")
    # SIGTERM as Ctrl-C, as for bench: the drones stop sending, the frames in flight get their
    # answers (timeout_s at most), and the figures of the part run are printed and saved
    with sigterm_interrupts():
        try:
            report = run_loadtest(conf)
        except KeyboardInterrupt:  # before the clock started: there is no figure to keep
            print("stopped while the drones connected: nothing was measured"
                  + (f", no report written to {conf.json}" if conf.json else ""), file=sys.stderr)
            raise
        if report.complete and report.connected == 0 and report.answered == 0:
            hint = report.last_error_hint() or "is the server running, and are the address and the TLS settings right?"
            raise SplitpointError(f"no drone could open a stream to {conf.target} ({report.last_error or 'no answer'}): "
                                  f"{hint} (`splitpoint doctor --cloud ...` checks them)")
        print(report.text())  # before the JSON: a file that cannot be written loses no figure
        if conf.json:
            report.save(conf.json)
            print(f"figures in {conf.json}")
    if not report.complete:
        raise KeyboardInterrupt  # ends as every interrupted command does (_command: "interrupted", exit 130)
    return 0 if report.answered else 1


def cmd_results(args: argparse.Namespace) -> int:
    from splitpoint.results_report import run_report

    return run_report(args.logs, args.json)


def cmd_demo(args: argparse.Namespace) -> int:
    from splitpoint.demo import default_workdir, run_demo

    if args.workdir == "":  # not "the default": a variable left empty, as elsewhere
        raise ConfigError("--workdir", "", "give a directory (or leave the flag out for the user's cache)")
    workdir = Path(args.workdir) if args.workdir is not None else default_workdir()
    with sigterm_interrupts(once=True):  # the demo's server process is stopped, not left running
        if args.model == "digits-detector":
            from splitpoint.demo_detect import run_detector_demo

            return run_detector_demo(workdir, frames=args.frames, split=args.split, rebuild=args.rebuild)
        return run_demo(workdir, frames=args.frames, split=args.split, rebuild=args.rebuild)


COMMANDS: dict[str, Command] = {
    "demo": cmd_demo, "partition": cmd_partition, "inspect": cmd_inspect, "cloud": cmd_cloud, "edge": cmd_edge,
    "profile": cmd_profile, "policy": cmd_policy_explain, "doctor": cmd_doctor, "certs": cmd_certs, "bench": cmd_bench,
    "loadtest": cmd_loadtest, "results": cmd_results,
}


def build_parser() -> argparse.ArgumentParser:
    return cli_parser.build_parser(COMMANDS)


def main(argv: list[str] | None = None) -> int:
    with logging_restored():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:  # --help prints here, and the bare command's overview below: `splitpoint --help | head`
        args = parser.parse_args(argv)
        if not args.command:  # bare `splitpoint`: say what there is
            print(cli_parser.overview())
            return 0
    except BrokenPipeError:
        if stdout_gone():  # the reader stopped: not an error (it was a traceback)
            return PIPE_CLOSED_EXIT
        raise
    except OSError as err:  # --help, --version or the overview to a full disk (a traceback, or exit 0)
        return cli_logging.unwritten_output(err)
    from splitpoint import native_logs

    native_logs.configure(args.verbose)  # before any command loads TensorFlow, LiteRT or OpenCV
    setup_logging("debug" if args.verbose else "warning" if args.command == "demo" else "info")
    return _command(args, lambda: _start(args))


def _start(args: argparse.Namespace) -> int:
    if getattr(args, "config", None) == "":  # `--config "$CONF"` with CONF unset: not "no file", as elsewhere
        # (edge and cloud ran on their defaults without a word, doctor checked no config)
        raise ConfigError("--config", "", "give a file, or leave the flag out")
    if args.command not in ("edge", "cloud"):  # they take the signals over; the others get Python's
        HELD.release()  # defaults back, and a signal held while the command line was read acts as it always did
    if args.command == "partition" and partition_guard.can_isolate():
        # in a child, so that a native crash of the converter is one line, not a silent death
        return partition_guard.isolated(lambda: _command(args, lambda: args.func(args)), args.model,
                                        Path(args.output))
    return int(args.func(args) or 0)


def _command(args: argparse.Namespace, run: Callable[[], int]) -> int:
    """run() with every error told in one line and its exit code."""
    try:
        return int(run() or 0)
    except SplitpointError as err:  # exit 2: fix the command, config or input; 1: the run failed
        print(f"splitpoint {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError as err:
        if stdout_gone():  # whoever read the output stopped (`splitpoint results LOG | head`): not an error
            return PIPE_CLOSED_EXIT
        return _os_error(args, err)
    except OSError as err:
        return _os_error(args, err)
    except MemoryError:  # numpy asked for more than there is (a size or count too large for this machine)
        log.debug("%s ran out of memory", args.command, exc_info=True)
        print(f"splitpoint {args.command}: error: out of memory: a size or count given is too large for this "
              "machine", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _os_error(args: argparse.Namespace, err: OSError) -> int:
    """What no command foresaw (a disk filling mid-write): one line, not a traceback; exit 1."""
    log.debug("%s failed", args.command, exc_info=True)  # -v: where
    where = f"{err.filename}: " if err.filename else ""
    print(f"splitpoint {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
    return 1


def run() -> None:
    """The process's entry (`splitpoint`, `python -m splitpoint`): the command, then os._exit.

    Every command closes what it opened before it returns (results log fsynced and closed,
    channels and servers shut down), so interpreter shutdown has nothing left to do - and with
    gRPC's threads still winding down it once hung an agent for good after it had printed its
    fatal results-log error (seen once in CI, tests/functional/test_agent_faults.py; root cause
    not found). A process whose command has finished must end.

    SIGTERM, SIGINT and SIGHUP are held from here until the command says what they mean
    (splitpoint/cli_signals.py): `splitpoint edge` stops before its first frame, and
    `splitpoint cloud` before it serves, on a stop that came while it was starting."""
    cli_logging.closed_streams_to_devnull()  # `splitpoint cloud >&-`: before any file or socket can take fd 1
    partition_guard.ENTRY.set()  # this process is the command: `partition` may fork (partition_guard.py)
    HELD.hold()
    scratch = scratch_dir.use_own()  # os._exit below runs no atexit: TensorFlow's temp files go with it
    try:
        code = main()
    except SystemExit as exc:  # argparse: --help, --version, a usage error (its message said)
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        scratch_dir.remove(scratch)
    logging.shutdown()
    os._exit(cli_logging.flush_output(code))


if __name__ == "__main__":
    run()
