"""The `splitpoint` command line.

    splitpoint partition MODEL -o BUNDLE      make a bundle (heads + tails + manifest)
    splitpoint inspect BUNDLE                 what a bundle holds
    splitpoint cloud --bundle DIR ...         run the server
    splitpoint edge --bundle DIR ...          run the agent
    splitpoint demo                           all of it on loopback with the bundled digits model

Errors the user can fix print one line naming the bad value and exit 2; other
library errors exit 1. Heavy imports (TensorFlow) happen inside the commands
that need them, so the edge side runs without TensorFlow installed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import splitpoint
from splitpoint import config as cfg
from splitpoint.errors import ConfigError, PartitionError, SplitpointError

log = logging.getLogger("splitpoint")


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


# ---------------------------------------------------------------- partition


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def cmd_partition(args: argparse.Namespace) -> int:
    import time

    from splitpoint.partition import PartitionOptions, load_model_source, parse_splits, partition

    t0 = time.perf_counter()
    src = load_model_source(args.model, args.input_size)
    opts = PartitionOptions(
        output=Path(args.output),
        calibration_dir=Path(args.calibration) if args.calibration else None,
        calibration_random=args.calibration_random,
        splits=parse_splits(args.splits) if args.splits else None,
        min_agreement=args.min_agreement,
        jobs=args.jobs,
        input_size=args.input_size,
        force=args.force,
    )
    manifest = partition(src, opts)
    print(_bundle_table(manifest))
    print(f"\nbundle written to {args.output} in {time.perf_counter() - t0:.1f}s "
          f"({len(manifest.splits)} splits, model digest {manifest.model_digest[:23]}...)")
    return 0


def _bundle_table(m: object) -> str:
    from splitpoint.bundle import EDGETPU_CACHE_BYTES, Manifest

    assert isinstance(m, Manifest)
    rows = [("k", "after layer", "cut shape", "wire bytes", "head params", "edge tpu", "top-1 agree", "max err")]
    for s in m.splits:
        cut = "x".join(map(str, s.cut[0].shape)) if s.cut else "-"
        params = f"{s.head_param_bytes / 1024:.0f} KiB" + (" >8MB!" if s.head_param_bytes > EDGETPU_CACHE_BYTES else "")
        tpu = s.edgetpu.get("status", "")
        if tpu == "compiled":
            tpu = f"{s.edgetpu.get('ops_on_edgetpu')} tpu/{s.edgetpu.get('ops_on_cpu')} cpu ops"
        v = s.verification
        rows.append((
            str(s.split), s.after_layer or "(input)", cut, str(s.wire_bytes), params if s.head else "-", tpu,
            f"{v.get('top1_agreement', 0):.1%}", f"{v.get('max_abs_error', 0):.4f}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    head = f"{m.model_name}: {m.num_layers} layers, digest {m.model_digest[:23]}..., source {m.source}"
    return "\n".join([head, *lines])


def cmd_inspect(args: argparse.Namespace) -> int:
    from splitpoint.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    print(_bundle_table(bundle.manifest))
    print(f"\n{args.bundle}: all artifacts present and matching their sha256")
    return 0


# ---------------------------------------------------------------- cloud / edge


def _load_side_config(cls: type, args: argparse.Namespace) -> object:
    conf = cfg.load(cls, args, args.config)
    if args.print_config:
        print(cfg.to_toml(conf), end="")
    return conf


def cmd_cloud(args: argparse.Namespace) -> int:
    from cloud_server.config import CloudConfig

    conf = _load_side_config(CloudConfig, args)
    if args.print_config:
        return 0
    assert isinstance(conf, CloudConfig)
    setup_logging(conf.log_level)
    from cloud_server.server import serve

    return serve(conf)


def cmd_edge(args: argparse.Namespace) -> int:
    from edge_node.config import EdgeConfig

    conf = _load_side_config(EdgeConfig, args)
    if args.print_config:
        return 0
    assert isinstance(conf, EdgeConfig)
    setup_logging(conf.log_level)
    import signal

    from edge_node.agent import EdgeAgent
    from edge_node.sources import open_source

    agent = EdgeAgent(conf)
    # SIGTERM and Ctrl-C both stop after the current frame; frames in flight still get records.
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    if hasattr(signal, "SIGHUP"):  # re-read [policy] from the config file, swap between frames
        agent.on_reload(lambda: cfg.load(EdgeConfig, args, args.config).policy)
        signal.signal(signal.SIGHUP, lambda *_: agent.request_reload())
    with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps) as source:
        summary = agent.run(source)
    acc = f", accuracy {summary.accuracy:.1%}" if summary.accuracy is not None else ""
    med = summary.median_ms()
    print(
        f"{summary.frames} frames in {summary.seconds:.1f}s: {summary.cloud} cloud, {summary.local} local "
        f"({summary.fallbacks} fallbacks), {summary.failed} failed, {summary.dropped} dropped, "
        f"{summary.skipped} skipped (already recorded){acc}"
        + (f", median end-to-end {med:.1f} ms" if med is not None else "")
        + f"; results in {conf.results}"
    )
    return 0 if summary.failed == 0 else 1


def cmd_profile(args: argparse.Namespace) -> int:
    from scheduler.profiles import format_profile, load_profile, profile_cloud, profile_edge
    from splitpoint.bundle import load_bundle

    if args.side == "show":
        if not args.file:
            raise ConfigError("FILE", None, "give the profile to show: splitpoint profile show FILE")
        print(format_profile(load_profile(args.file)))
        return 0
    if not args.bundle:
        raise ConfigError("--bundle", None, "give the bundle to profile")
    if args.side == "reference":
        from scheduler.reference_profiles import write_reference_profiles

        out = Path(args.output or "reference-profiles")
        paths = write_reference_profiles(load_bundle(args.bundle, verify=False).manifest, out)
        for path in paths[:2]:
            print(format_profile(load_profile(path)), end="\n\n")
        print("written: " + ", ".join(map(str, paths)) + "\n(a model shaped like the drone paper, not a measurement)")
        return 0
    if not args.output:
        raise ConfigError("-o", None, "give the profile file to write with -o FILE")
    if args.side == "edge":
        from edge_node.heads import EdgeHeads
        from scheduler.power import find_meter
        from splitpoint.runtime.litert import Device

        bundle = load_bundle(args.bundle, side="edge")
        meter, why = find_meter()
        if meter is None:
            print(f"note: {why}", file=sys.stderr)
        heads = EdgeHeads(bundle, Device.parse(args.device, "--device"), cpu_fallback=False, num_threads=args.threads)
        prof = profile_edge(heads, bundle, runs=args.runs, meter=meter)
    else:
        bundle = load_bundle(args.bundle, side="cloud")
        prof = profile_cloud(bundle, runs=args.runs)
    prof.save(args.output)
    print(format_profile(prof))
    print(f"\nwritten to {args.output}")
    return 0


def cmd_policy_explain(args: argparse.Namespace) -> int:
    from scheduler.link import LinkState
    from scheduler.planner import (
        build_cost_model,
        explain,
        explain_json,
        explain_table,
        parse_bandwidth,
        parse_duration_ms,
    )
    from scheduler.policy import PolicyConfig
    from splitpoint.bundle import load_bundle

    bundle = load_bundle(args.bundle, verify=False)
    if not hasattr(args, "name"):
        args.name = "min-latency"
    pcfg = cfg.load(PolicyConfig, args, None)
    link = LinkState(parse_bandwidth(args.bandwidth), parse_duration_ms(args.rtt), parse_duration_ms(args.queue, "--queue"))
    cost = build_cost_model(pcfg, bundle.manifest.model_digest)
    preds, decision = explain(cost, pcfg, link)
    print(explain_json(preds, decision, link, pcfg) if args.json else explain_table(preds, decision, link, pcfg))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from splitpoint import doctor

    values, config_checks = doctor.resolve_settings(args.config, {k: getattr(args, k, None) for k in doctor.EDGE_KEYS})
    cloud = values.get("cloud") or None
    # the one client factory: OffloadClient(cloud, timeout_s=5, security=ClientSecurity(<the TLS keys>))
    make_client, transport = doctor.client_factory(cloud or "", {k: values.get(k) for k in doctor.TRANSPORT_KEYS})
    return doctor.run_doctor(values.get("bundle") or None, cloud, values["device"], values["results"],
                             make_client=make_client if cloud else None, transport=transport,
                             config_checks=config_checks,
                             secrets={k: values[k] for k in ("tls_key", "token_file") if values.get(k)})


def cmd_certs(args: argparse.Namespace) -> int:
    from splitpoint.certs import make_dev_certs

    names = [n.strip() for n in args.server_name.split(",") if n.strip()]
    paths = make_dev_certs(Path(args.output), names, force=args.force)
    print(f"development CA and certificates in {args.output} (server names: {', '.join(names)}):")
    for label, path in vars(paths).items():
        print(f"  {label:<12} {path}")
    print("server: --tls-cert server.pem --tls-key server.key [--tls-client-ca ca.pem for mutual TLS]")
    print("agent:  --tls-ca ca.pem [--tls-cert client.pem --tls-key client.key]")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from splitpoint.bench.harness import options_from_args, run_bench

    result = run_bench(options_from_args(args, sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "bench" else []))
    return 0 if result.get("complete") and not result.get("errors") else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from splitpoint.demo import run_demo

    return run_demo(Path(args.workdir), frames=args.frames, split=args.split, rebuild=args.rebuild)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitpoint", description="Split a CNN between a Coral Edge TPU and a TensorFlow server.")
    parser.add_argument("--version", action="version", version=f"splitpoint {splitpoint.__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("partition", help="split a Keras model into int8 heads and float tails (a bundle)",
                       description="Partition a model into a bundle: int8 heads for the edge, float tails for the server.")
    p.add_argument("model", help="a .keras/.h5 file, a SavedModel directory, or a built-in: digits-cnn, vgg16, mobilenetv2, resnet50")
    p.add_argument("-o", "--output", required=True, metavar="BUNDLE", help="bundle directory to write")
    cal = p.add_mutually_exclusive_group()
    cal.add_argument("--calibration", metavar="DIR", help="representative frames (images or .npy) for int8 calibration")
    cal.add_argument("--calibration-random", type=_positive_int, metavar="N", help="calibrate on N random frames")
    p.add_argument("--splits", metavar="LIST", help="only these splits, e.g. 3,5,8-10 (0 and K are always built)")
    p.add_argument("--min-agreement", type=_fraction, metavar="F",
                   help="fail when a split's top-1 agreement with the float model is below F (default 0.98; "
                        "random-weight built-ins only record it unless this is given)")
    p.add_argument("--jobs", type=_positive_int, metavar="N", help="splits converted in parallel (default: 1, or 2 for big models)")
    p.add_argument("--input-size", type=_positive_int, metavar="PX", help="input size for vgg16/mobilenetv2/resnet50 (default 224)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle in BUNDLE")
    p.set_defaults(func=cmd_partition)

    p = sub.add_parser("inspect", help="show a bundle's splits and check its files")
    p.add_argument("bundle", metavar="BUNDLE")
    p.set_defaults(func=cmd_inspect)

    from cloud_server.config import CloudConfig
    from edge_node.config import EdgeConfig

    for name, cls, func, text in (
        ("cloud", CloudConfig, cmd_cloud, "run the server: tails on TensorFlow behind gRPC"),
        ("edge", EdgeConfig, cmd_edge, "run the agent: heads on the Edge TPU or CPU, the rest offloaded"),
    ):
        p = sub.add_parser(name, help=text, description=f"{text}. Every flag is also a key of the --config TOML file.")
        p.add_argument("--config", metavar="FILE", help="TOML file; flags given here override it")
        p.add_argument("--print-config", action="store_true", help="print the effective config as TOML and exit")
        cfg.add_arguments(p, cls)
        p.set_defaults(func=func)

    p = sub.add_parser("profile", help="measure every split's head (edge) or tail (cloud) latency; show a profile")
    p.add_argument("side", choices=("edge", "cloud", "show", "reference"),
                   help="edge or cloud: measure here; show: print FILE; reference: write drone-paper-shaped "
                        "edge/cloud profiles and a power table for the bundle into the -o directory")
    p.add_argument("file", nargs="?", help="the profile to show (with `show`)")
    p.add_argument("--bundle", help="bundle directory")
    p.add_argument("--device", default="cpu", help="edge: cpu, edgetpu, edgetpu:usb:N (default cpu)")
    p.add_argument("--threads", type=_positive_int, default=1, help="edge: LiteRT threads (default 1)")
    p.add_argument("--runs", type=_positive_int, default=50, help="timed runs per split after warm-up (default 50)")
    p.add_argument("-o", "--output", metavar="FILE", help="profile JSON to write")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("policy", help="explain what a split policy would choose")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    pe = psub.add_parser("explain", help="predicted latency and energy of every split, and the choice",
                         description="Predict every split's latency and edge energy for a given link, and show the policy's choice.")
    pe.add_argument("--bundle", required=True, help="bundle directory")
    pe.add_argument("--bandwidth", required=True, help="uplink rate, e.g. 5Mbps")
    pe.add_argument("--rtt", required=True, help="round-trip time, e.g. 40ms")
    pe.add_argument("--queue", default="0ms", help="server queue wait (default 0ms)")
    pe.add_argument("--json", action="store_true", help="print JSON instead of a table")
    from scheduler.policy import PolicyConfig

    pe.add_argument("--policy", dest="name", choices=("min-latency", "min-energy", "weighted"), default=argparse.SUPPRESS,
                    help="the policy to explain (same as --name; default min-latency)")
    cfg.add_arguments(pe, PolicyConfig)
    pe.set_defaults(func=cmd_policy_explain)

    p = sub.add_parser("doctor", help="check the Edge TPU, runtimes, bundle, cloud, TLS, clock and disk, in plain words",
                       description="Check a field installation and print one line per finding; exit 1 when any "
                                   "says FAIL. With --config, reads bundle, cloud, device, results and the TLS keys "
                                   "from the agent's TOML file (and validates the whole file); flags override it. "
                                   "Run it as the agent's user, with the agent stopped (it holds the Edge TPU).")
    p.add_argument("--config", metavar="FILE", help="the agent's TOML config, e.g. /etc/splitpoint/edge.toml")
    p.add_argument("--bundle", metavar="DIR", help="bundle directory (checks every edge file's sha256)")
    p.add_argument("--cloud", metavar="HOST:PORT", help="the server to reach (Describe, Probe, digest, clock skew)")
    p.add_argument("--device", help="cpu, edgetpu, edgetpu:usb[:N], edgetpu:pci[:N] (default cpu): "
                                    "a missing Edge TPU fails only when asked for")
    p.add_argument("--results", metavar="PATH", help="results log path (free disk, write access; default results.jsonl)")
    p.add_argument("--tls-ca", metavar="FILE", help="CA (PEM) that signed the server's certificate")
    p.add_argument("--tls-cert", metavar="FILE", help="this agent's certificate (PEM), for mutual TLS")
    p.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    p.add_argument("--tls-server-name", metavar="NAME", help="name to verify in the server's certificate")
    p.add_argument("--token-file", metavar="FILE", help="file holding the bearer token")
    p.add_argument("--insecure", action="store_true", default=None, help="talk plaintext to the cloud (development only)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("certs", help="make a development CA and server/client certificates for (mutual) TLS")
    p.add_argument("-o", "--output", default="certs", help="directory to write (default ./certs)")
    p.add_argument("--server-name", default="localhost,127.0.0.1",
                   help="comma-separated DNS names/IPs the server certificate is valid for (default localhost,127.0.0.1)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("bench", help="measure every split's real end-to-end latency, the scheduler's choices, traces, throughput",
                       description="Benchmark a bundle through the real server and agent on loopback: every split at every "
                                   "(bandwidth, RTT) condition (the oracle), the adaptive agent's settled split, a step "
                                   "change, real uplink traces, throughput mode, goodput and per-frame overhead. "
                                   "See docs/benchmarks.md.")
    p.add_argument("--bundle", metavar="DIR", help="bundle to measure (default: the digits bundle, built once into the cache)")
    p.add_argument("--bandwidths", metavar="LIST", help="uplink rates in Mbps (default 1,2,5,10,20,50,100)")
    p.add_argument("--rtts", metavar="LIST", help="round-trip times in ms (default 10,50,150)")
    p.add_argument("--frames", type=_positive_int, metavar="N", help="measured frames per fixed-split run (default 30)")
    p.add_argument("--warmup", type=int, metavar="N", help="warm-up frames excluded from each run (default 3)")
    p.add_argument("--adaptive-frames", type=_positive_int, metavar="N", help="frames of each adaptive run (default 40)")
    p.add_argument("--splits", metavar="LIST", help="measure only these splits, e.g. 0,4,8-10 (0 and K always; the adaptive "
                                                    "agent then chooses among the same set)")
    p.add_argument("--smoke", action="store_true", help="CI smoke run: digits bundle, two conditions, few frames, a short trace slice")
    p.add_argument("--json", metavar="FILE", help="write every figure and the machine description here (updated after each stage)")
    p.add_argument("--markdown", metavar="FILE", help="write the markdown report here")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots here (needs matplotlib: the bench extra)")
    p.add_argument("--traces-dir", metavar="DIR", help="directory of Mahimahi traces (default ../shared/data/traces beside the repo)")
    p.add_argument("--traces", metavar="LIST", help="trace files to replay (default Verizon-LTE-short.up,ATT-LTE-driving-2016.up)")
    p.add_argument("--trace-seconds", type=float, metavar="S", help="replay the first S seconds of each trace (default 20)")
    p.add_argument("--trace-fps", type=float, metavar="F", help="camera rate of the trace runs (default 10)")
    p.add_argument("--trace-rtt", type=float, metavar="MS", help="RTT during the trace runs (default 50)")
    p.add_argument("--deadline-ms", type=float, metavar="MS", help="deadline of a trace frame (default one frame interval)")
    p.add_argument("--step-fps", type=float, metavar="F", help="camera rate of the step-change run (default 10)")
    p.add_argument("--step-frames", type=_positive_int, metavar="N", help="frames per phase of the step change (default 30)")
    p.add_argument("--tp-frames", type=_positive_int, metavar="N", help="frames per throughput-mode run (default 60)")
    p.add_argument("--overhead-frames", type=_positive_int, metavar="N", help="frames per path of the overhead measurement (default 300)")
    p.add_argument("--skip", metavar="LIST", help="stages to skip: conditions,step,traces,throughput,overhead")
    p.add_argument("--power-table", metavar="FILE", help="edge power table: adds energy figures and a min-energy agent per condition")
    p.add_argument("--radio-link", choices=("wifi", "lte"), help="radio power model for energy (default wifi, as the agent)")
    p.add_argument("--edge-cpu", type=int, metavar="N", help="CPU the edge worker is pinned to (default: the last allowed one)")
    p.add_argument("--edge-slowdown", type=float, metavar="F",
                   help="emulate an edge device F times slower than the worker's core: each head run is followed by a "
                        "sleep of (F - 1) x its measured time (default 1: native; see docs/benchmarks.md)")
    p.add_argument("--profile-runs", type=_positive_int, metavar="N", help="runs per split when profiling (default 20)")
    p.add_argument("--reprofile", action="store_true", help="measure the profiles again instead of using the cached ones")
    p.add_argument("--max-frame-s", type=float, metavar="S", help="do not run splits whose wire time alone exceeds S seconds (default 8)")
    p.add_argument("--warm-tails", type=int, metavar="N", help="the server's warm_tails (default 0: load every tail at start)")
    p.add_argument("--cache-dir", metavar="DIR", help="digits bundle and profiles (default ~/.cache/splitpoint/bench)")
    p.add_argument("--keep-runs", metavar="DIR", help="keep every run's results log and the edge worker's log here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="partition the bundled digits model, start a server and an agent on loopback, stream frames")
    p.add_argument("--workdir", default="splitpoint-demo", help="where the bundle and the results go (default: ./splitpoint-demo)")
    p.add_argument("--frames", type=_positive_int, default=24, help="frames to stream (default 24)")
    p.add_argument("--split", type=int, default=None, help="fixed split; default: take turns over every split")
    p.add_argument("--rebuild", action="store_true", help="partition again even if the bundle exists")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from splitpoint import native_logs

    native_logs.configure(args.verbose)  # before any command loads TensorFlow, LiteRT or OpenCV
    setup_logging("debug" if args.verbose else "warning" if args.command == "demo" else "info")
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"splitpoint {args.command}: error: {err}", file=sys.stderr)
        return 2
    except PartitionError as err:
        print(f"splitpoint {args.command}: error: {err}", file=sys.stderr)
        return 2
    except SplitpointError as err:
        print(f"splitpoint {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
