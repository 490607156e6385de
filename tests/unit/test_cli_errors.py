"""What reaches the CLI that no command turned into a SplitpointError: one line, never a traceback."""

from __future__ import annotations

import argparse

import pytest

from splitpoint import cli, cli_parser


def _failing(exc: BaseException):  # type: ignore[no-untyped-def]
    def command(args: argparse.Namespace) -> int:
        raise exc

    return command


@pytest.mark.parametrize(("exc", "line"), [
    (FileNotFoundError(2, "No such file or directory", "/x/y"), "splitpoint inspect: error: /x/y: No such file or directory"),
    (OSError(28, "No space left on device"), "splitpoint inspect: error: No space left on device"),
    (MemoryError(), "splitpoint inspect: error: out of memory: a size or count given is too large for this machine"),
])
def test_an_error_no_command_foresaw_is_one_line_exit_1(exc: BaseException, line: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli.COMMANDS, "inspect", _failing(exc))
    assert cli.main(["inspect", "somewhere"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [line]


# ---------------------------------------------------------------- values that begin with '-'
# edge_side: also run on Python 3.13 (scripts/ci_edge_py313.sh), whose argparse differs inside


def _parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


@pytest.mark.edge_side
@pytest.mark.parametrize(("argv", "key", "value"), [
    (["policy", "explain", "--bundle", "b", "--bandwidth", "-5Mbps", "--rtt", "10ms"], "bandwidth", "-5Mbps"),
    (["policy", "explain", "--bundle", "b", "--bandwidth", "5Mbps", "--rtt", "-1.5e3ms"], "rtt", "-1.5e3ms"),
    (["policy", "explain", "--bundle", "b", "--band", "-5Mbps", "--rtt", "10ms"], "bandwidth", "-5Mbps"),  # abbreviated
    (["edge", "--bundle", "b", "--source", "-frames-"], "source", "-frames-"),
    (["profile", "edge", "--bundle", "b", "-o", "-p.json"], "output", "-p.json"),
    (["edge", "--bundle", "b", "--policy-margin", "-0.5"], "policy.margin", -0.5),  # a plain number, as before
])
def test_a_value_that_begins_with_a_dash_is_the_options_value(argv: list[str], key: str, value: object) -> None:
    """`--bandwidth -5Mbps` failed with "expected one argument" (argparse takes any word that
    begins with '-' for an option, unless it is a plain negative number), where
    `--bandwidth=-5Mbps` reached the message about the value."""
    assert getattr(_parse(*argv), key) == value


@pytest.mark.edge_side
@pytest.mark.parametrize("argv", [
    ["edge", "--bundle", "--insecure"],   # a forgotten value before the next option
    ["edge", "--bundle", "--insec"],      # ... given abbreviated
    ["edge", "--bundle", "-h"],
    ["profile", "edge", "--bundle", "-ob.json"],  # -o with its value attached
])
def test_an_option_after_an_option_that_wants_a_value_is_still_an_option(argv: list[str],
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parse(*argv)
    assert exit_.value.code == 2
    assert "argument --bundle: expected one argument" in capsys.readouterr().err


@pytest.mark.edge_side
def test_words_after_double_dash_are_left_alone() -> None:
    assert _parse("profile", "show", "--", "-x.json").file == "-x.json"



# ---------------------------------------------------------------- help that a user copies


def _subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def test_the_demo_usage_line_names_every_option() -> None:
    demo = _subparser(cli.build_parser(), "demo")
    usage = cli_parser.COMMANDS["demo"][1]
    flags = [a.option_strings[-1] for a in demo._actions if a.option_strings and a.dest != "help"]
    assert [f for f in flags if f not in usage] == []


def test_policy_explain_examples_run_and_its_help_gives_its_own_defaults() -> None:
    # the first example had no profiles, which every policy needs: it could only fail (exit 2)
    for example in cli_parser.COMMANDS["policy"][2]:
        assert "--edge-profile" in example and "--cloud-profile" in example, example
    explain = _subparser(cli.build_parser(), "policy", "explain")
    name = next(a for a in explain._actions if "--name" in a.option_strings)
    assert "(default: min-latency" in (name.help or "")  # not the agent's "(default: fixed)"


@pytest.mark.parametrize(("argv", "line"), [
    (["edge", "--bogus", "1"], "splitpoint edge: error: unrecognized arguments: --bogus 1 (see splitpoint edge --help)"),
    (["policy", "explain", "--bundle", "b", "--bandwidth", "1Mbps", "--rtt", "1ms", "--bogus"],
     "splitpoint policy explain: error: unrecognized arguments: --bogus (see splitpoint policy explain --help)"),
    (["--bogus"], "splitpoint: error: unrecognized arguments: --bogus (see splitpoint --help)"),
])
def test_an_unknown_flag_is_reported_by_the_command_it_was_given_to(argv: list[str], line: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # it was "splitpoint: error: ... (see splitpoint --help)", which does not list the command's options
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == line


def test_policy_explain_takes_one_policy_by_either_flag(capsys: pytest.CaptureFixture[str]) -> None:
    # --policy min-latency --name min-energy explained min-energy without a word, and --policy
    # refused "fixed", which --name (its documented twin) takes
    explain = ["policy", "explain", "--bundle", "b", "--bandwidth", "5Mbps", "--rtt", "40ms"]
    assert cli.main([*explain, "--policy", "min-latency", "--name", "min-energy"]) == 2
    assert ('--policy = "min-latency": and --name min-energy name two policies: give one'
            in capsys.readouterr().err)
    assert _parse(*explain, "--policy", "fixed").policy_alias == "fixed"
    assert cli.main([*explain, "--policy", "min-energy", "--name", "min-energy"]) == 2  # agrees: on to the bundle
    assert '--policy' not in capsys.readouterr().err


@pytest.mark.edge_side
@pytest.mark.parametrize(("flag", "value", "most"), [("--threads", "100000", 256), ("--runs", "100000000000", 100000)])
def test_profile_refuses_more_threads_or_runs_than_it_can_use(flag: str, value: str, most: int,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """--threads 100000 wrote the profile and then died by SIGSEGV in LiteRT; --runs 1e11 ran on for ever."""
    with pytest.raises(SystemExit) as info:
        _parse("profile", "edge", "--bundle", "b", "-o", "p.json", flag, value)
    assert info.value.code == 2
    assert f"argument {flag}: {value} must be at most {most}" in capsys.readouterr().err
    assert getattr(_parse("profile", "edge", "--bundle", "b", "-o", "p.json", flag, str(most)), flag[2:]) == most


@pytest.mark.edge_side
@pytest.mark.parametrize("argv", [[], ["--help"], ["edge", "--help"]])
def test_help_into_a_reader_that_is_gone_is_no_traceback(argv: list[str]) -> None:
    """`splitpoint | head -2` (or `--help | head`) with the reader gone before the text is written
    ended in a BrokenPipeError traceback: the commands' own output was handled, the help's not."""
    import os
    import subprocess
    import sys

    from helpers import cli_env

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "splitpoint", *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, env=cli_env(), timeout=60)
    finally:
        os.close(write_end)
    assert proc.stderr == "", proc.stderr[-2000:]
    # as a process a closed pipe ends (SIGPIPE); --help's exit 0 came from argparse dropping the error
    assert proc.returncode == 141


@pytest.mark.parametrize("argv", [
    ["edge", "--bundle", "/nonexistent", "--source", "synthetic:1"],
    ["cloud", "--bundle", "/nonexistent"],
    ["doctor", "--bundle", "/nonexistent"],
    ["loadtest"],
    ["bench", "--frames", "0"],
])
def test_an_empty_config_is_refused_naming_the_flag(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`--config ""` (a variable left empty) ran edge and cloud on their defaults without a word."""
    assert cli.main([*argv, "--config", ""]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"splitpoint {argv[0]}: error: --config: give a file, or leave the flag out"]


@pytest.mark.parametrize(("value", "said"), [
    ("127.0.0.1:41001,127.0.0.1:41004x", "127.0.0.1:41004x: port '41004x' is not a number"),
    ("127.0.0.1:41001,127.0.0.1:41001", "lists the server 127.0.0.1:41001 twice"),
    ("dns://127.0.0.1/localhost:41001", "names a DNS server (127.0.0.1)"),
])
@pytest.mark.parametrize("command", [["edge", "--cloud"], ["doctor", "--cloud"], ["loadtest", "--target"]])
def test_a_bad_server_target_is_the_same_usage_error_for_every_command(command: list[str], value: str, said: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """doctor reported `[FAIL] cloud: cannot set up the connection: ...` and exited 1 where edge and
    loadtest exited 2 for the same --cloud/--target: a bad value is a usage error, said the same way."""
    key = command[1].removeprefix("--")
    argv = [*command, value, "--bundle", "/nonexistent", "--insecure"]
    if command[0] == "edge":
        argv += ["--source", "synthetic:1", "--split", "3"]
    assert cli.main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f'splitpoint {command[0]}: error: {key} = "{value}": {said}'), line


def test_doctor_refuses_an_empty_cloud_as_edge_does(capsys: pytest.CaptureFixture[str]) -> None:
    """`--cloud ""` was taken as no --cloud: no cloud check and "no problems found"."""
    assert cli.main(["doctor", "--bundle", "/nonexistent", "--cloud", ""]) == 2
    assert capsys.readouterr().err.startswith("splitpoint doctor: error: cloud: give HOST:PORT")


@pytest.mark.edge_side
def test_demo_refuses_more_frames_than_a_demo_shows(capsys: pytest.CaptureFixture[str]) -> None:
    """--frames had no ceiling: 10**12 printed a line and wrote a record a frame for ever (the
    detector demo also kept every frame's detections in memory)."""
    for value in ("100001", "1000000000000"):
        with pytest.raises(SystemExit) as info:
            _parse("demo", "--frames", value)
        assert info.value.code == 2
        assert f"argument --frames: {value} must be at most 100000" in capsys.readouterr().err
    assert _parse("demo", "--frames", "100000").frames == 100_000


@pytest.mark.edge_side
@pytest.mark.parametrize(("argv", "flag", "value"), [
    (["profile", "edge", "--bundle", "b", "-o", "p.json", "--runs", "\uff15"], "--runs", "\uff15"),  # full-width 5
    (["demo", "--frames", "\u0665"], "--frames", "\u0665"),  # Arabic-Indic 5
    (["demo", "--split", "\uff13"], "--split", "\uff13"),
    (["partition", "m.keras", "-o", "b", "--max-detections", "\uff15"], "--max-detections", "\uff15"),
    (["cloud", "--bundle", "b", "--max-batch", "\uff18"], "--max-batch", "\uff18"),  # config keys' flags
    (["cloud", "--bundle", "b", "--splits", "3,\uff17"], "--splits", "\uff17"),
    (["bench", "--frames", "\uff13\uff10"], "--frames", "\uff13\uff10"),
    (["cloud", "--bundle", "b", "--grace-s", "\uff15"], "--grace-s", "\uff15"),  # numbers too
    (["partition", "m.keras", "-o", "b", "--nms-iou", "\uff10.5"], "--nms-iou", "\uff10.5"),
])
def test_digits_of_other_scripts_are_refused_naming_the_flag(argv: list[str], flag: str, value: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Python's int() and float() read any script's digits: `--runs ５` ran 5 runs."""
    with pytest.raises(SystemExit) as info:
        _parse(*argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {value!r} is not " in err and "(digits 0-9 only)" in err and err.count("\n") == 1, err


@pytest.mark.edge_side
def test_integers_are_ascii_digits_with_a_sign_at_most() -> None:
    from splitpoint.config import parse_float, parse_int

    assert [parse_int(t) for t in ("5", "-3", "+7", " 12 ", "007")] == [5, -3, 7, 12, 7]
    for text in ("\uff15", "\u0665", "1_000", "5.0", "", "-", "0x10", "1e3"):
        with pytest.raises(ValueError, match="is not an integer"):
            parse_int(text)
    assert parse_int("0" * 40 + "9" * 30) == int("9" * 30)
    with pytest.raises(ValueError, match=r"^'999999999999'\.\.\. \(5000 characters\) is far too large$"):
        parse_int("9" * 5000)  # not Python's "Exceeds the limit (4300 digits) ... set_int_max_str_digits()"
    assert parse_float("2.5e3") == 2500.0
    with pytest.raises(ValueError, match=r"^'1_0' is not a number$"):
        parse_float("1_0")  # float() reads 10, where parse_int refuses "1_000"
    with pytest.raises(ValueError, match=r"digits 0-9 only"):
        parse_float("\uff12.5")
