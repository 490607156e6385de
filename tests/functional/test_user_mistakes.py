"""The mistakes new users make, run as they would make them: a real `splitpoint` process each.

Every one must end with the documented exit code (2: the command, its configuration or an
input it names is wrong) and one message naming the problem in the user's terms - the key,
the flag or the file, and the value as it was written - never a traceback or a Python value
(`None`, `False`, `'x'`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from splitpoint.cli_parser import COMMANDS

PYTHON_VALUES = ("None", "False", "True", "Traceback")


def splitpoint(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "splitpoint", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
    assert len(lines) == 1, proc.stderr
    for word in PYTHON_VALUES:
        assert word not in proc.stderr, proc.stderr
    return lines[0]


def test_bare_command_lists_every_command() -> None:
    proc = splitpoint()
    assert proc.returncode == 0
    listed = [ln.split()[0] for ln in proc.stdout.splitlines() if ln.startswith("  ")]
    assert listed == list(COMMANDS)
    assert "splitpoint demo" in proc.stdout and "exit codes" in proc.stdout


@pytest.mark.parametrize("command", ["edge", "cloud"])
def test_a_forgotten_required_key_names_the_flag_and_the_config_key(command: str) -> None:
    proc = splitpoint(command, "--insecure")
    assert proc.returncode == 2
    assert error_line(proc).endswith("bundle: is required: give the flag --bundle or the key bundle in the config file")


@pytest.mark.parametrize("command", ["edge", "cloud"])
def test_a_missing_bundle_is_a_usage_error(command: str, tmp_path: Path) -> None:
    extra = ["--source", "synthetic:1"] if command == "edge" else ["--listen", "127.0.0.1:0"]
    proc = splitpoint(command, "--insecure", "--bundle", str(tmp_path / "nope"), *extra)
    assert proc.returncode == 2  # like every other input the user names, not 1
    assert str(tmp_path / "nope") in error_line(proc)


def test_a_file_that_is_not_a_model_is_not_called_missing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.keras"
    junk.write_text("not a model\n")
    proc = splitpoint("partition", str(junk), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    line = error_line(proc)
    assert "junk.keras is not a Keras model" in line and "not found" not in line.lower()
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_number_written_as_a_string_in_toml_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "edge.toml"
    conf.write_text('bundle = "b"\nsource = "synthetic:1"\ninsecure = true\nwindow = "4"\n')
    proc = splitpoint("edge", "--config", str(conf))
    assert proc.returncode == 2
    assert error_line(proc).endswith('window = "4": expected an integer, not a string: write it without quotes')


def test_an_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    conf = tmp_path / "cloud.toml"
    conf.write_text('bundle = "b"\nworker = 4\n')
    proc = splitpoint("cloud", "--config", str(conf))
    assert proc.returncode == 2
    line = error_line(proc)
    assert "worker = 4: unknown key" in line and "workers" in line


def test_a_bad_flag_value_names_the_flag_and_the_value() -> None:
    proc = splitpoint("edge", "--window", "four")
    assert proc.returncode == 2
    assert "--window" in proc.stderr and "'four' is not an integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_empty_value_is_not_shown_as_a_python_value() -> None:
    proc = splitpoint("edge", "--bundle", "b", "--source", "synthetic:1", "--tls-ca", "ca.pem", "--tls-cert", "c.pem")
    assert proc.returncode == 2
    line = error_line(proc)
    assert "tls_key" in line and "''" not in line


@pytest.mark.parametrize("command", ["edge", "cloud"])
def test_help_groups_marks_required_and_gives_examples(command: str) -> None:
    proc = splitpoint(command, "--help")
    assert proc.returncode == 0
    out = proc.stdout
    for heading in ("security options:", "output options:"):
        assert heading in out
    if command == "edge":
        assert "input options:" in out and "cloud link options:" in out and "[policy] table options:" in out
    assert re.search(r"--bundle BUNDLE\s+REQUIRED", out)
    assert not re.search(r"--log-level \S+\s+REQUIRED", out)
    examples = out.split("examples:", 1)[1].split("exit codes", 1)[0]
    assert len([ln for ln in examples.splitlines() if ln.strip().startswith("splitpoint ")]) >= 2


def test_the_top_level_help_says_the_usage_and_each_command_once() -> None:
    proc = splitpoint("--help")
    assert proc.returncode == 0
    out = proc.stdout
    assert out.count("usage:") == 1, out  # argparse's own usage line and COMMAND list are left out
    for command in COMMANDS:
        assert len(re.findall(rf"^  {command}\b", out, flags=re.M)) == 1, (command, out)
    assert "--verbose, -v" in out and "--version" in out


def test_a_policy_usage_error_names_the_subcommand_as_typed() -> None:
    proc = splitpoint("policy", "explain", "--rtt", "10ms")
    assert proc.returncode == 2
    assert error_line(proc) == ("splitpoint policy explain: error: the following arguments are required: --bundle, "
                                "--bandwidth (see splitpoint policy explain --help)")


@pytest.mark.parametrize(("flag", "value", "said"), [
    ("--bandwidth", "-5Mbps", '--bandwidth = "-5Mbps": expected a rate like 5Mbps'),
    ("--rtt", "-40ms", '--rtt = "-40ms": expected a duration like 40ms'),
])
def test_a_value_beginning_with_a_dash_gets_the_message_about_the_value(digits_bundle: Path, tmp_path: Path,
                                                                        flag: str, value: str, said: str) -> None:
    """Not argparse's "expected one argument", which `--bandwidth -5Mbps` got while
    `--bandwidth=-5Mbps` got this."""
    from scheduler.reference_profiles import write_reference_profiles
    from splitpoint.bundle import load_bundle

    edge, cloud, _ = write_reference_profiles(load_bundle(digits_bundle, verify=False).manifest, tmp_path)
    link = {"--bandwidth": "5Mbps", "--rtt": "40ms", flag: value}
    proc = splitpoint("policy", "explain", "--bundle", str(digits_bundle), "--edge-profile", str(edge),
                      "--cloud-profile", str(cloud), *(w for kv in link.items() for w in kv))
    assert proc.returncode == 2
    assert said in error_line(proc)


def test_policy_explain_names_its_own_flags_and_refuses_a_bare_sub_ms_rtt(digits_bundle: Path, tmp_path: Path) -> None:
    """It said `policy.edge_profile = ...` (the agent's config key, not a flag it has), and took
    `--rtt 0.04` as 0.04 ms."""
    from scheduler.reference_profiles import write_reference_profiles
    from splitpoint.bundle import load_bundle

    edge, cloud, _ = write_reference_profiles(load_bundle(digits_bundle, verify=False).manifest, tmp_path)
    (tmp_path / "broken.json").write_text("x")
    base = ("policy", "explain", "--bundle", str(digits_bundle), "--cloud-profile", str(cloud), "--bandwidth", "5Mbps")
    proc = splitpoint(*base, "--edge-profile", str(tmp_path / "broken.json"), "--rtt", "40ms")
    assert proc.returncode == 2 and error_line(proc).startswith(
        f'splitpoint policy: error: --edge-profile = "{tmp_path / "broken.json"}": unreadable'), error_line(proc)
    proc = splitpoint(*base, "--edge-profile", str(edge), "--rtt", "0.04")
    assert proc.returncode == 2 and "--rtt = \"0.04\": a number alone is milliseconds" in error_line(proc)
    proc = splitpoint(*base, "--edge-profile", str(edge), "--rtt", "40ms", "--margin", "-1")  # the policy's own checks
    assert proc.returncode == 2 and error_line(proc) == "splitpoint policy: error: --margin = -1: must be >= 0"
    proc = splitpoint("policy", "explain", "--bundle", str(digits_bundle), "--bandwidth", "5Mbps", "--rtt", "40ms")
    assert proc.returncode == 2 and "needs --edge-profile and --cloud-profile" in error_line(proc), error_line(proc)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in ("edge", "cloud")])
def test_every_other_command_has_examples(command: str) -> None:
    argv = [command, "explain", "--help"] if command == "policy" else [command, "--help"]
    proc = splitpoint(*argv)
    assert proc.returncode == 0
    assert "examples:" in proc.stdout and f"splitpoint {command}" in proc.stdout.split("examples:", 1)[1]


def test_a_partition_output_that_cannot_be_made_names_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file, not a directory")
    out = tmp_path / "file" / "bundle"
    proc = splitpoint("partition", "digits-cnn", "-o", str(out), timeout=180)
    assert proc.returncode == 2
    line = error_line(proc)
    assert f"-o = \"{out}\": cannot create the bundle there: Not a directory" in line


def test_a_file_no_command_foresaw_failing_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """What a command does not check itself (here certs' output directory) still ends in one
    line naming the file and the system's reason, exit 1."""
    (tmp_path / "file").write_text("a file, not a directory")
    out = tmp_path / "file" / "certs"
    proc = splitpoint("certs", "--out", str(out))
    assert proc.returncode == 1
    assert error_line(proc) == f"splitpoint certs: error: {out}: Not a directory"


@pytest.mark.parametrize(("argv", "said"), [
    (["--split", "99"], '--split = 99: not a split of digits-cnn; its splits: 0-7'),
    (["--workdir", "FILE"], 'is a file, not a directory'),
    (["--workdir", "FILE/sub"], 'cannot be created: Not a directory'),
    (["--workdir", ""], "--workdir: give a directory (or leave the flag out for the user's cache)"),  # was the cache
])
def test_a_demo_given_a_bad_split_or_workdir_says_so_before_a_server_starts(argv: list[str], said: str,
                                                                            tmp_path: Path) -> None:
    (tmp_path / "FILE").write_text("a file")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    if argv[0] == "--split":  # the demo's own bundle, made once for the session
        argv += ["--workdir", str(tmp_path / "work")]
    proc = splitpoint("demo", *argv, timeout=300)
    assert proc.returncode == 2
    assert said in error_line(proc)
    assert "cloud server" not in proc.stdout  # none started, none to stop


def test_the_detector_demo_does_not_reuse_another_models_bundle(digits_bundle: Path, tmp_path: Path) -> None:
    """A valid bundle of another model at WORKDIR/bundle-detector was reused: the demo then said
    '--split = 99: not a split of digits-cnn', or with a server up, 'outputs = [...]: a detector's
    answer is one tensor named 'detections'' (exit 1)."""
    import shutil

    shutil.copytree(digits_bundle, tmp_path / "bundle-detector")
    proc = splitpoint("demo", "--model", "digits-detector", "--workdir", str(tmp_path), "--split", "99", timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the bundle in {tmp_path / 'bundle-detector'} is of builtin:digits-cnn, not digits-detector" in proc.stdout
    assert "partitioning the bundled digits-detector" in proc.stdout
    assert "--split = 99: not a split of digits-detector" in error_line(proc)


def test_a_loadtest_against_nothing_says_so(digits_bundle: Path) -> None:
    proc = splitpoint("loadtest", "--bundle", str(digits_bundle), "--target", "127.0.0.1:1", "--agents", "2",
                      "--duration", "1", "--timeout-s", "2", "--insecure")
    assert proc.returncode == 1  # the run failed: nothing to measure
    line = error_line(proc)
    assert "no drone could open a stream to 127.0.0.1:1" in line and "UNAVAILABLE" in line
    assert "nothing listens there" in line  # what the agent says of the same error


def test_a_loadtest_without_the_token_is_told_so(digits_bundle: Path, tmp_path: Path) -> None:
    """It said "is the server running, and are the address and the TLS settings right?" of a
    server that had answered, refusing the token."""
    from helpers import running_server

    token = tmp_path / "token"
    token.write_text("a-token-of-more-than-16-characters\n")
    token.chmod(0o600)
    with running_server(digits_bundle, token_file=str(token), allow_plaintext_token=True) as server:
        proc = splitpoint("loadtest", "--bundle", str(digits_bundle), "--target", server.address, "--agents", "2",
                          "--duration", "1", "--timeout-s", "2", "--insecure")
    assert proc.returncode == 1
    line = error_line(proc)
    assert "(UNAUTHENTICATED: missing or invalid bearer token): the server refused the token: token_file must hold " \
           "the token the server expects" in line, line
    assert "is the server running" not in line


@pytest.mark.parametrize("where", ["missing-dir/x.json", ".", "notes.md"])
def test_a_loadtest_json_that_cannot_be_written_is_named_before_the_run(digits_bundle: Path, tmp_path: Path,
                                                                          where: str) -> None:
    (tmp_path / "notes.md").write_text("notes\n")
    proc = splitpoint("loadtest", "--bundle", str(digits_bundle), "--target", "127.0.0.1:1", "--agents", "1",
                      "--duration", "30", "--insecure", "--json", where, cwd=tmp_path)
    assert proc.returncode == 2  # at once: not after a 30 s run
    assert f'json = "{where}": ' in error_line(proc)
    assert (tmp_path / "notes.md").read_text() == "notes\n"  # not a loadtest report: not replaced


def test_profile_replaces_an_earlier_profile_and_nothing_else(digits_bundle: Path, tmp_path: Path) -> None:
    """`-o bundle/manifest.json` replaced the bundle's manifest with a profile, `-o notes.md` the notes."""
    manifest = tmp_path / "bundle" / "manifest.json"  # a copy: the session's bundle is not put at risk
    manifest.parent.mkdir()
    manifest.write_bytes((digits_bundle / "manifest.json").read_bytes())
    notes = tmp_path / "notes.md"
    notes.write_text("# field notes\n")
    for target in (manifest, notes):
        before = target.read_bytes()
        proc = splitpoint("profile", "edge", "--bundle", str(digits_bundle), "--runs", "2", "-o", str(target))
        assert proc.returncode == 2
        assert error_line(proc) == (f'splitpoint profile: error: -o = "{target}": exists and is not a splitpoint '
                                    "profile; it is left as it is: give another file name, or move the file away first")
        assert target.read_bytes() == before
    profile = tmp_path / "edge-profile.json"
    for _ in range(2):  # the second run replaces the first one's profile
        proc = splitpoint("profile", "edge", "--bundle", str(digits_bundle), "--runs", "2", "-o", str(profile))
        assert proc.returncode == 0, proc.stderr
    for _ in range(2):  # and `profile reference` its own three files
        proc = splitpoint("profile", "reference", "--bundle", str(digits_bundle), "-o", str(tmp_path / "ref"))
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "edge-profile.json", "notes.md", "ref"]


def test_profile_says_once_that_there_is_no_power_meter(digits_bundle: Path, tmp_path: Path) -> None:
    proc = splitpoint("profile", "edge", "--bundle", str(digits_bundle), "--runs", "2", "-o", str(tmp_path / "e.json"))
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "power meter" in ln]
    assert len(notes) <= 1, notes  # said once (or not at all where a meter exists), not twice
    from scheduler.profiles import cpu_name

    name = cpu_name(Path("/proc/cpuinfo").read_text())
    if name:  # the profile names the CPU as /proc/cpuinfo does, not by its model number
        assert name in proc.stdout, proc.stdout


def test_the_demo_works_outside_the_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from splitpoint.demo import default_workdir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_workdir() == tmp_path / "cache" / "splitpoint" / "demo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_workdir() == Path.home() / ".cache" / "splitpoint" / "demo"


def test_the_demo_leaves_a_bundle_of_the_users_own_model_as_it_is(digits_bundle: Path, tmp_path: Path) -> None:
    """A bundle of the user's model at WORKDIR/bundle was partitioned over, files beside it gone
    with it, though the README says the demo refuses a bundle it did not write."""
    import json
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model"]["source"] = "/home/me/good.keras"  # what `splitpoint partition good.keras` records
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (bundle / "notes.txt").write_text("mine")
    proc = splitpoint("demo", "--workdir", str(tmp_path), timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "bundle in it is a bundle of /home/me/good.keras, not one the demo wrote" in error_line(proc)
    assert "--rebuild to replace it" in error_line(proc)
    assert (bundle / "notes.txt").read_text() == "mine" and "partitioning" not in proc.stdout
    proc = splitpoint("demo", "--workdir", str(tmp_path), "--rebuild", timeout=300)  # was "is not a bundle"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "bundle in it is a bundle that also holds other files; the demo leaves it as it is" in error_line(proc)
    assert (bundle / "notes.txt").read_text() == "mine"
