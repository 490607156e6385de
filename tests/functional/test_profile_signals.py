"""`splitpoint profile` stopped by SIGTERM (systemd, `timeout`) while it measures: it met Python's
default and ended with 143 and no word, where bench, loadtest and demo say "interrupted" and exit
130. A real process, signalled once it says it has timed a split."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from helpers import cli_env, finish_process

from scheduler.profiles import Profile, SplitProfile, StageStats


def test_sigterm_while_profiling_is_an_interruption_and_keeps_the_earlier_profile(digits_bundle: Path,
                                                                                 tmp_path: Path) -> None:
    out = tmp_path / "edge.json"
    Profile("edge", "sha256:earlier", "digits-cnn", {}, {0: SplitProfile(0, 1, StageStats.constant(1.0))}).save(out)
    before = out.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitpoint", "profile", "edge", "--bundle", str(digits_bundle), "-o", str(out),
         "--runs", "100000"],  # seconds per split: the signal comes while a split is timed
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:  # synchronised on its output: the first split's figure is logged
        said.append(line)
        if "edge split 0: median" in line:
            break
    else:
        raise AssertionError("profile ended before timing a split: " + "".join(said))
    proc.send_signal(signal.SIGTERM)
    _, err = finish_process(proc)
    assert proc.returncode == 130, (proc.returncode, "".join(said) + err)
    assert err.strip().splitlines()[-1] == "interrupted", err
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [out.name]
