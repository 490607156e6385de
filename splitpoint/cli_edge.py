"""`splitpoint edge`: the agent from its configuration, its signals, its one summary line.

SIGTERM and Ctrl-C stop the agent after the current frame (exit 0), from the moment the
command starts (splitpoint/cli_signals.py): one that comes while the bundle and heads load
ends it before its first frame, in one line. SIGHUP re-reads [policy], also one that came
while the agent was being made (a reload once it exists). `--events FILE`
gets a `source-open` line when the first frame is next (what a driver waits for).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

from splitpoint import config as cfg
from splitpoint import scratch_dir
from splitpoint.cli_logging import say, setup_logging
from splitpoint.cli_signals import CommandSignals
from splitpoint.errors import ConfigError

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name


def cmd_edge(args: argparse.Namespace) -> int:
    from edge_node.config import EdgeConfig

    # SIGTERM and Ctrl-C both stop after the current frame; frames in flight still get records.
    # Caught from here on (and held since the process began): one that comes while the agent is
    # still starting ends it before its first frame, not the process with no word said.
    stop = CommandSignals().install()
    # A SIGHUP before the configuration is read is dropped: the read below sees the file as it is
    # now, so there is nothing newer to re-read. One after it (while the bundle and heads load,
    # seconds) is kept and becomes a reload request once the agent exists (reloads_to, below).
    stop.reload_pending = False
    conf = cfg.load_printed(EdgeConfig, args)
    if args.print_config:
        return 0
    assert isinstance(conf, EdgeConfig)
    setup_logging("debug" if args.verbose else conf.log_level)  # -v wins over the file
    conf.security.check_files()  # a bad CA would fail every handshake, unnamed
    if args.events is not None:
        check_events_file(args.events, conf.results)
    from splitpoint.cert_validity import log_validity

    log_validity({"tls_ca": conf.security.tls_ca, "tls_cert": conf.security.tls_cert})  # one ending soon, said now
    if stop.signum is not None:  # no bundle and heads loaded for nothing
        return _stopped_before_the_first_frame(stop, conf.results)
    from edge_node.agent import EdgeAgent
    from edge_node.source_spec import open_source

    agent = EdgeAgent.from_config(conf)
    stop.on_stop = lambda signum: agent.stop()
    if stop.signum is not None:  # it came while the bundle, LiteRT and the heads loaded
        agent.close()
        return _stopped_before_the_first_frame(stop, conf.results)
    # SIGHUP: re-read [policy] from the config file, swap between frames
    agent.on_reload(lambda: reread_policy(conf, args))
    stop.reloads_to(agent.request_reload)
    scratch_dir.stop_using()  # the heads are loaded: a run of weeks must not outlive /tmp's cleaner
    with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps,
                     camera_reopen_s=conf.camera_reopen_s) as source:
        ready = None
        if args.events:  # the explicit start signal a driver waits for (not a log line: those get reworded)
            def ready() -> None:  # the source is open and the agent started: its first frame is next
                write_event(args.events, "source-open", source=str(getattr(source, "description", conf.source)))
        summary = agent.run(source, on_ready=ready)
    if agent.results is None and stop.signum is not None:  # it came while the server was asked
        return _stopped_before_the_first_frame(stop, conf.results)
    acc = f", accuracy {summary.accuracy:.1%}" if summary.accuracy is not None else ""
    med = summary.median_ms()
    say(
        f"{summary.frames} frames in {summary.seconds:.1f}s: {summary.cloud} cloud, {summary.local} local "
        f"({summary.fallbacks} fallbacks), {summary.failed} failed, {summary.dropped} dropped, "
        f"{summary.skipped} skipped (already recorded){acc}"
        + (f", median end-to-end {med:.1f} ms" if med is not None else "")
        + (f", {summary.abandoned} unfinished at stop (they run again on resume)" if summary.abandoned else "")
        + (f"; no answer from the cloud at {', '.join(summary.unreached)}" if summary.unreached else "")
        + (f"; {dets}" if (dets := summary.detection_summary()) else "")
        + f"; results in {conf.results}"
        + (f" (and {len(rotated)} earlier log(s) rotated this run, the first {rotated[0]})"
           if (rotated := agent.recorder.rotated) else "")
    )
    # a stop asked for (SIGTERM, Ctrl-C) is a success, as documented: a camera's run that survived an
    # outage has its failed frame, and `systemctl stop` then left the unit "failed" (status=1)
    return 0 if summary.failed == 0 or stop.signum is not None else 1


def reread_policy(running: Any, args: argparse.Namespace) -> Any:
    """A SIGHUP's [policy] table, read from the config file with the command's flags over it.
    Keys outside [policy] that differ from the running agent's are named in a WARNING: only the
    table is re-read, and "policy reloaded: fixed split 3 -> fixed split 3" after an edit of the
    top-level `split` looked like a reload that had taken it."""
    from edge_node.config import EdgeConfig

    new = cfg.load(EdgeConfig, args, args.config)
    changed = [f.name for f in dataclasses.fields(EdgeConfig)
               if f.name != "policy" and getattr(new, f.name) != getattr(running, f.name)]
    if changed:
        log.warning("%s: %s changed since the agent started; a reload re-reads only the [policy] table, the "
                    "rest takes effect on a restart (sudo systemctl restart splitpoint-edge)",
                    args.config, ", ".join(changed))
    return new.policy


def _stopped_before_the_first_frame(stop: CommandSignals, results: str) -> int:
    """A stop as any other (exit 0), said in one line: nothing was read, the results log not opened."""
    say(f"stopped before the first frame: {stop.name} came while the agent was starting; no frame was read "
        f"and the results log {results} was not touched")
    return 0


def check_events_file(path: str, results: str) -> None:
    """ConfigError unless `--events` can take event lines without harm: not empty, not the results
    log, and not a file of something else. An event line appended to a results log (this run's, or
    an older run's given by mistake) made that log one that resume and `splitpoint results` refuse,
    and a systemd unit restarted into that refusal for good. A stream (a pipe, /dev/stdout) is the
    driver's to read and is taken as it is; a new file's directory must exist, as nothing makes it."""
    from splitpoint.files import check_distinct, open_regular

    if path == "":
        raise ConfigError("--events", "", "give a file (or leave the flag out)")
    check_distinct([("results", results), ("--events", path)])
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not Path(path).parent.is_dir():
            raise ConfigError("--events", path, f"its directory {Path(path).parent} does not exist") from None
        return
    except OSError as exc:
        raise ConfigError("--events", path, f"cannot be used ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        return  # a named pipe, /dev/stdout, /dev/null: written to as they are, never read here
    try:
        with os.fdopen(open_regular(path, "--events"), "rb") as fh:
            first = b""
            while not first.strip() and (line := fh.readline(64 * 1024)):
                first = line  # the first line with something on it: a log may start with a blank one
    except OSError as exc:
        raise ConfigError("--events", path, f"cannot read it ({exc.strerror})") from None
    if not first.strip():
        return  # empty: as good as new
    try:
        ok = isinstance(event := json.loads(first), dict) and isinstance(event.get("event"), str)
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError("--events", path, "holds something other than events (its first line is no "
                                            '{"event": ...} line; a results log?): give a new file')


def write_event(path: str | Path, event: str, **fields: object) -> None:
    """Append `{"event": ..., "t_unix_ns": ..., **fields}` as one line to `path` (`splitpoint edge --events`).

    One write of a whole line, flushed: a reader polling the file sees a line complete or not at all."""
    line = json.dumps({"event": event, "t_unix_ns": time.time_ns(), "pid": os.getpid(), **fields}) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
    except OSError as exc:
        raise ConfigError("--events", str(path), f"cannot write the events file ({exc.strerror})") from None
