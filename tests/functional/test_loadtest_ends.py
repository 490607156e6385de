"""`splitpoint loadtest` stopped, or unable to write its JSON, keeps what it measured.

A hostile tester's findings, each on a real `splitpoint loadtest` process against a real server:

  * SIGTERM 4 s into a 6 s run killed it (exit 143, undocumented) and Ctrl-C ended it with
    "interrupted": no summary, no JSON either way. Now, as `splitpoint bench`: the drones stop
    sending, the frames in flight get their answers, the summary of the part run is printed and
    the JSON written, marked `complete: false`; exit 130.
  * `--json` on a full disk: "error: No space left on device" (which file?) and no summary,
    the JSON being written first. Now the summary comes first and the error names the file.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, cli_env, finish_process


def loadtest(bundle: Path, address: str, *extra: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "splitpoint", "loadtest", "--bundle", str(bundle), "--target", address,
                             "--insecure", "--agents", "2", "--fps", "5", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=cli_env(), **popen)


def answered_by(server: Any) -> float:
    return server.registry.get_sample_value("splitpoint_cloud_frames_total", {"split": "0", "status": "OK"}) or 0.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_loadtest_prints_and_saves_what_it_measured(digits_bundle: Path, cloud_server: Any,
                                                              tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "lt.json"
    # SIGINT as a terminal's Ctrl-C delivers it, even under a runner that ignores it (a shell's
    # background job): ignored at start, Python leaves it ignored
    proc = loadtest(digits_bundle, cloud_server.address, "--duration", "600", "--json", str(out),
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while answered_by(cloud_server) < 5:  # the run is measuring: the server has answered its frames
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        before = answered_by(cloud_server)
        proc.send_signal(sig)
        stdout, stderr = finish_process(proc, 60)  # well inside --duration 600: the signal ended it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.rstrip().endswith("interrupted")
    lines = stdout.splitlines()
    assert lines[0].startswith("interrupted after ") and lines[0].endswith("s of 600s: the figures are of the part run")
    report = json.loads(out.read_text())
    assert report["complete"] is False and 0 < report["seconds"] < 600
    # every frame the server had answered before the signal was in flight or answered: the drones
    # waited for their answers, and the summary printed is the JSON's
    assert report["answered"] >= before
    assert report["sent"] == (report["answered"] + report["unanswered"] + sum(report["refused"].values())
                              + sum(report["stream_failures"].values()))
    # (a machine too busy to pace 2 drones says so on a line of its own before the figures)
    summary = next(line for line in lines if line.startswith("2 drones for "))
    assert summary.startswith(f"2 drones for {report['seconds']:.1f}s: {report['sent']} frames sent, "
                              f"{report['answered']} answered"), summary
    assert lines[-1] == f"figures in {out}"


def test_a_json_that_cannot_be_written_names_its_file_after_the_summary(digits_bundle: Path, cloud_server: Any,
                                                                       tmp_path: Path) -> None:
    """A disk that fills: the process may write no file over 64 bytes (RLIMIT_FSIZE; Python ignores
    SIGXFSZ, so the write fails with EFBIG as it would with ENOSPC)."""
    out = tmp_path / "lt.json"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    proc = loadtest(digits_bundle, cloud_server.address, "--duration", "1", "--json", str(out), preexec_fn=small_files)
    stdout, stderr = finish_process(proc, 60)
    assert proc.returncode == 1, stderr
    assert "\n2 drones for 1.0s: " in "\n" + stdout and "answered per drone" in stdout, stdout
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert errors == [f'splitpoint loadtest: error: json = "{out}": the report could not be written (File too large); '
                      "its figures are the ones printed above"], stderr
    assert list(tmp_path.iterdir()) == []  # no half-written report, no temporary file left


def test_a_server_on_another_bundle_is_refused_before_the_run(digits_bundle: Path, cloud_server: Any) -> None:
    """Against a server on another bundle every frame was refused FAILED_PRECONDITION and the run
    said only "0 answered; refused by the server: FAILED_PRECONDITION 20", exit 1."""
    from splitpoint.bundle import load_bundle
    from splitpoint.errors import ConfigError
    from splitpoint.loadtest_frames import check_server_bundle
    from splitpoint.security import ClientSecurity

    address = f"127.0.0.1:{cloud_server.port}"
    insecure = ClientSecurity(insecure=True)
    digest = load_bundle(digits_bundle, verify=False).manifest.model_digest
    check_server_bundle(address, insecure, digest, 10.0)  # the same bundle: on with the run
    with pytest.raises(ConfigError) as info:
        check_server_bundle(address, insecure, "sha256:" + "0" * 64, 10.0)
    assert info.value.key == "target"
    assert f"the server runs bundle digits-cnn {digest}, --bundle is sha256:000" in str(info.value)
    assert "give the bundle the server runs" in str(info.value)
    check_server_bundle("127.0.0.1:1", insecure, "sha256:" + "0" * 64, 2.0)  # not reached: the run says so
