"""`splitpoint profile` and `splitpoint policy explain`: measuring what the scheduler plans with
(a device's or server's time per split), and showing the plan it makes from them."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from splitpoint import config as cfg
from splitpoint.cli_signals import sigterm_interrupts
from splitpoint.errors import ConfigError
from splitpoint.files import check_writable_dir


def _split_list(text: str, split_ids: list[int]) -> list[int]:
    """`--splits 0,8,155` -> [0, 8, 155]; a value that is not a split of the bundle is named."""
    out = []
    for part in text.split(","):
        try:
            k = cfg.parse_int(part.strip())
        except ValueError:
            raise ConfigError("--splits", text, f"{part.strip()!r} is not a split number; e.g. --splits 0,8,155") from None
        if k not in split_ids:
            from splitpoint.bundle import split_ranges

            raise ConfigError("--splits", text, f"{k} is not a split of this bundle; its splits: {split_ranges(split_ids)}")
        out.append(k)
    return out


def cmd_profile(args: argparse.Namespace) -> int:
    from scheduler.profiles import (
        check_output,
        format_profile,
        load_profile,
        profile_cloud,
        profile_edge,
    )
    from splitpoint.bundle import load_bundle

    if args.side == "show":
        if not args.file:
            raise ConfigError("FILE", None, "give the profile to show: splitpoint profile show FILE")
        print(format_profile(load_profile(args.file)))
        return 0
    if not args.bundle:
        raise ConfigError("--bundle", None, "give the bundle to profile")
    if args.side != "edge":
        for flag, value in (("--device", args.device), ("--threads", args.threads), ("--splits", args.splits)):
            if value is not None:
                raise ConfigError(flag, value, f"is for `profile edge`; `profile {args.side}` has no use for it")
    if args.side == "reference":
        from scheduler.reference_profiles import write_reference_profiles

        if args.output == "":
            raise ConfigError("-o", "", "give a directory (or leave -o out for ./reference-profiles)")
        if args.runs is not None:  # it was ignored without a word: nothing is timed
            raise ConfigError("--runs", args.runs, "is for `profile edge` and `profile cloud`; `profile reference` "
                                                   "measures nothing (its figures are a model's)")
        out = Path(args.output if args.output is not None else "reference-profiles")
        paths = write_reference_profiles(load_bundle(args.bundle, verify=False).manifest, out)
        for path in paths[:2]:
            print(format_profile(load_profile(path)), end="\n\n")
        print("written: " + ", ".join(map(str, paths)) + "\n(a model shaped like the drone paper, not a measurement)")
        return 0
    if not args.output:
        raise ConfigError("-o", None, "give the profile file to write with -o FILE")
    for flag, value, default in (("--splits", args.splits, "every split"), ("--device", args.device, "the CPU")):
        if value == "":  # a variable left empty: not "the default" (it profiled every split, or the CPU)
            raise ConfigError(flag, "", f"give a value (or leave the flag out for {default})")
    # found now, not after every split is measured: -o bundle/manifest.json or notes.md is refused
    check_output(args.output, "-o")
    check_writable_dir("-o", args.output)  # a read-only directory: found now, not after measuring (exit 1)
    # SIGTERM as Ctrl-C, as for bench: "interrupted", exit 130 (it was 143 without a word), and the
    # earlier profile at -o left as it was (the new one is written whole or not at all)
    runs = 50 if args.runs is None else args.runs
    with sigterm_interrupts():
        if args.side == "edge":
            from edge_node.heads import EdgeHeads
            from scheduler.power import find_meter
            from splitpoint.runtime.litert import Device

            bundle = load_bundle(args.bundle, side="edge")
            only = _split_list(args.splits, bundle.manifest.split_ids) if args.splits else None
            meter, _ = find_meter()  # logs what it found, or why there is none
            heads = EdgeHeads(bundle, Device.parse(args.device or "cpu", "--device"), cpu_fallback=False, splits=only,
                              num_threads=args.threads or 1)
            prof = profile_edge(heads, bundle, runs=runs, meter=meter)
        else:
            bundle = load_bundle(args.bundle, side="cloud")
            prof = profile_cloud(bundle, runs=runs)
        prof.save(args.output, "-o")
    print(format_profile(prof))
    print(f"\nwritten to {args.output}")
    return 0


def cmd_policy_explain(args: argparse.Namespace) -> int:
    from scheduler.link import LinkState
    from scheduler.objectives import PolicyConfig
    from scheduler.planner import (
        build_cost_model,
        explain,
        explain_json,
        explain_table,
        parse_bandwidth,
        parse_duration_ms,
    )
    from splitpoint.bundle import load_bundle

    alias = args.policy_alias
    if alias is not None and getattr(args, "name", alias) != alias:  # one was silently dropped
        raise ConfigError("--policy", alias, f"and --name {args.name} name two policies: give one")
    bundle = load_bundle(args.bundle, verify=False)
    if not hasattr(args, "name"):
        args.name = alias or "min-latency"
    try:  # errors named as this command's flags (--power-table), not the agent's keys
        pcfg = cfg.load(PolicyConfig, args, None)
        link = LinkState(parse_bandwidth(args.bandwidth), parse_duration_ms(args.rtt),
                         parse_duration_ms(args.queue, "--queue", round_trip=False))
        cost = build_cost_model(pcfg, bundle.manifest.model_digest, num_layers=bundle.manifest.num_layers)
        level = None
        if pcfg.battery_low_pct is not None:  # the level now, read as the agent reads it
            from scheduler.power import BatteryGauge

            level = BatteryGauge(pcfg.battery_file or None)()
        # the bundle's splits, as the agent plans over them: a profile of another bundle of the same model
        # (same digest, other --splits) may hold splits this one lacks
        preds, decision = explain(cost, pcfg, link, candidates=bundle.manifest.split_ids, battery_pct=level)
    except ConfigError as err:
        raise _as_explain_flags(err) from None
    print(explain_json(preds, decision, link, pcfg, level) if args.json
          else explain_table(preds, decision, link, pcfg, level))
    return 0


def _as_explain_flags(err: ConfigError) -> ConfigError:
    """The error with the agent's keys (`policy.power_table`, `split`) named as the flags `policy
    explain` has for them (`--power-table`, `--split`), in its key and its words: "policy.margin
    = -1" and "needs policy.edge_profile" sent users looking for a config file they had not given."""
    import dataclasses

    from scheduler.objectives import PolicyConfig

    flags = {f.name for f in dataclasses.fields(PolicyConfig)}  # its flags (unset ones are not in args)

    def flag(name: str) -> str | None:
        return "--" + name.replace("_", "-") if name in flags else None

    key = flag(err.key.removeprefix("policy.")) or err.key
    reason = re.sub(r"\bpolicy\.([a-z_]+)", lambda m: flag(m[1]) or m[0], err.reason)
    return err if (key, reason) == (err.key, err.reason) else ConfigError(key, err.value, reason)
