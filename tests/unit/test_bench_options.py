"""`splitpoint bench` options: flags, the --config TOML file and --print-config from one declaration."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path

import pytest

from splitpoint import cli
from splitpoint.bench.options import SMOKE_VALUES, BenchOptions, load_options
from splitpoint.config import to_toml
from splitpoint.errors import ConfigError

pytestmark = pytest.mark.edge_side  # no TensorFlow needed

#: the flags docs/benchmarks.md, docs/bench-runs.toml and the CI smoke test use: documented contracts
DOCUMENTED_FLAGS = (
    "--bundle", "--smoke", "--splits", "--skip", "--frames", "--warmup", "--adaptive-frames", "--max-frame-s",
    "--bandwidths", "--rtts", "--step-fps", "--step-frames", "--tp-frames", "--overhead-frames", "--traces-dir",
    "--traces", "--trace-seconds", "--trace-fps", "--trace-rtt", "--deadline-ms", "--edge-cpu", "--edge-slowdown",
    "--edge-device", "--peer-nominal-mbps", "--power-table", "--radio-link", "--profile-runs", "--reprofile", "--warm-tails", "--json", "--markdown",
    "--plots", "--cache-dir", "--keep-runs", "--plan-log",
)


def options(*argv: str) -> BenchOptions:
    return load_options(cli.build_parser().parse_args(["bench", *argv]))


def test_every_field_is_a_flag_and_every_documented_flag_exists(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    flags = set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))
    for f in dataclasses.fields(BenchOptions):
        assert "--" + f.name.replace("_", "-") in flags, f.name
    missing = [f for f in DOCUMENTED_FLAGS if f not in flags]
    assert not missing


def test_flags_parse_into_the_declared_types() -> None:
    o = options("--bandwidths", "1,2.5", "--rtts", "10", "--splits", "0,4,8-10", "--skip", "step,overhead",
                "--frames", "7", "--trace-rtt", "20", "--edge-slowdown", "75", "--reprofile", "--json", "out.json")
    assert o.bandwidths == [1.0, 2.5] and o.rtts == [10.0] and o.condition_list() == [(1.0, 10.0), (2.5, 10.0)]
    assert o.split_list() == [0, 4, 8, 9, 10] and o.skip == ["step", "overhead"]
    assert o.frames == 7 and o.trace_rtt == [20.0] and o.edge_slowdown == 75.0 and o.reprofile is True
    assert o.json == "out.json"


def test_smoke_sets_small_defaults_that_flags_and_the_file_override(tmp_path: Path) -> None:
    o = options("--smoke")
    assert o.smoke and o.frames == SMOKE_VALUES["frames"] and o.condition_list() == [(50.0, 50.0), (2.0, 50.0)]
    # an explicit axis replaces the smoke one; the other keeps the smoke values
    o = options("--smoke", "--bandwidths", "5", "--frames", "9")
    assert o.condition_list() == [(5.0, 50.0)] and o.frames == 9 and o.warmup == SMOKE_VALUES["warmup"]
    conf = tmp_path / "bench.toml"
    conf.write_text("smoke = true\nframes = 4\n")
    o = options("--config", str(conf))
    assert o.smoke and o.frames == 4 and o.adaptive_frames == SMOKE_VALUES["adaptive_frames"]
    assert options("--config", str(conf), "--frames", "5").frames == 5  # flags win over the file


def test_the_toml_file_sets_every_kind_of_key(tmp_path: Path) -> None:
    conf = tmp_path / "bench.toml"
    conf.write_text('bandwidths = [1, 10]\nsplits = [0, "4-5"]\ntraces = ["a.up"]\ntrace_fps = 5\n'
                    'radio_link = "lte"\ndeadline_ms = 250.0\n')
    o = options("--config", str(conf))
    assert o.bandwidths == [1.0, 10.0] and o.split_list() == [0, 4, 5] and o.traces == ["a.up"]
    assert o.trace_fps == 5.0 and o.radio_link == "lte" and o.deadline_ms == 250.0


def test_print_config_round_trips_through_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--smoke", "--trace-rtt", "10", "--splits", "0,3", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "# camera rate of the trace runs" in text and "trace_rtt = [10.0]" in text
    conf = tmp_path / "printed.toml"
    conf.write_text(text)
    tomllib.loads(text)  # valid TOML
    again = options("--config", str(conf))
    assert again == options("--smoke", "--trace-rtt", "10", "--splits", "0,3")
    assert to_toml(again) == text


@pytest.mark.parametrize(("argv", "key"), [
    (["--skip", "conditions,nonsense"], "skip"),
    (["--bandwidths", "0,5"], "bandwidths"),
    (["--edge-slowdown", "0.5"], "edge_slowdown"),
    (["--frames", "0"], "frames"),
    (["--splits", "3-x"], "splits"),
    (["--peer-nominal-mbps", "0"], "peer_nominal_mbps"),
    (["--plan-log"], "plan_log"),  # its log would go to a temporary directory, removed at the end
    # no upper bound: a run that never ends, or a list of 2e9 slice rates
    (["--rtts", "1e9"], "rtts"),
    (["--trace-rtt", "60001"], "trace_rtt"),
    (["--trace-slices", "1000000"], "trace_slices"),
    (["--trace-seconds", "1e9"], "trace_seconds"),
    (["--trace-fps", "1e6"], "trace_fps"),
    (["--step-fps", "1001"], "step_fps"),
    # frame counts: --frames 10**12 was a run of every split that never ended
    (["--frames", "100001"], "frames = 100001: must be at most 100000 frames (a run of every split at every"),
    (["--frames", "1000000000000"], "frames = 1000000000000: must be at most 100000"),
    (["--warmup", "100001"], "warmup = 100001: must be at most 100000"),
    (["--adaptive-frames", "100001"], "adaptive_frames = 100001: must be at most 100000"),
    (["--step-frames", "100001"], "step_frames = 100001: must be at most 100000"),
    (["--tp-frames", "100001"], "tp_frames = 100001: must be at most 100000"),
    (["--tp-window", "1025"], "tp_window = 1025: must be at most 1024 frames in flight (it is the agent's --window)"),
    (["--overhead-frames", "100001"], "overhead_frames = 100001: must be at most 100000"),
    (["--profile-runs", "100001"], "profile_runs = 100001: must be at most 100000 runs"),
    # rates: 1e308 Mbps passed --print-config, then the stage failed with a traceback (uplink = inf)
    (["--bandwidths", "5,1e308"], "1e+308]: expected rates above 0 and at most 10000 Mbps"),
    (["--step-rates", "50,10001"], "step_rates"),
    (["--tp-bandwidth", "1e308"], "tp_bandwidth = 1e+308: expected a rate above 0 and at most 10000 Mbps"),
    (["--peer-nominal-mbps", "1e308"], "peer_nominal_mbps"),
    # cameras so slow the bench waited 10,000 s a frame
    (["--trace-fps", "0.0001"], "trace_fps = 0.0001: must be at least 0.1 frames per second"),
    (["--step-fps", "0.05"], "step_fps = 0.05: must be at least 0.1"),
    (["--trace-fps", "0.5", "--trace-seconds", "3"], "trace_fps = 0.5: gives 1.5 frames in --trace-seconds 3"),
    # named the wrong key: "frames = 5: need ...", "warm_tails = 0: ..."
    (["--warmup", "-1"], "warmup = -1"),
    (["--adaptive-frames", "1"], "adaptive_frames = 1"),
    (["--step-rtt", "-1"], "step_rtt = -1"),
    (["--step-rtt", "70000"], "step_rtt = 70000"),
    # the step stage hands it to the policy, which refused it there: an hour at most, as there
    (["--deadline-ms", "3600001"], "deadline_ms = 3600001: expected a positive number of ms, at most 3600000"),
])
def test_bad_values_name_the_key(argv: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        options(*argv)
    assert key in str(exc.value)


def test_the_limits_themselves_are_accepted() -> None:
    options("--bandwidths", "10000", "--step-rates", "10000,0.001", "--tp-bandwidth", "10000",
            "--peer-nominal-mbps", "10000", "--step-fps", "0.1", "--trace-fps", "0.1", "--trace-seconds", "20",
            "--deadline-ms", "3600000", "--frames", "100000", "--warmup", "100000", "--adaptive-frames", "100000",
            "--step-frames", "100000", "--tp-frames", "100000", "--overhead-frames", "100000",
            "--profile-runs", "100000")


@pytest.mark.parametrize("flag", ["--json", "--markdown", "--bundle", "--traces", "--traces-dir", "--splits",
                                  "--skip", "--keep-runs", "--cache-dir", "--plots", "--edge-device", "--power-table"])
def test_an_empty_value_is_refused_naming_the_flag(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json ""` ran the whole bench and saved nothing (exit 0); `--traces ""` replayed every trace."""
    assert cli.main(["bench", flag, "", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert f'{flag}: is empty (an unset variable?): give a value, or leave the flag out' in err
    assert cli.main(["bench", flag, " , ", "--print-config"]) == 2


def test_an_empty_key_in_the_config_file_is_refused_but_edge_device_may_be_empty(tmp_path: Path) -> None:
    conf = tmp_path / "b.toml"
    conf.write_text('json = ""\n')
    with pytest.raises(ConfigError, match='json: is empty .* leave the key out'):
        options("--config", str(conf))
    conf.write_text('edge_device = ""\n')  # its default, as --print-config writes it
    assert options("--config", str(conf)).edge_device == ""


def test_unknown_stages_are_named_as_written() -> None:
    with pytest.raises(ConfigError) as exc:
        options("--skip", "conditions,nonsense,traces,bogus")
    assert "unknown stage(s) bogus, nonsense; stages: conditions, step, traces, throughput, overhead" in str(exc.value)


def test_a_bad_value_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = tmp_path / "bench.toml"
    conf.write_text('frames = "many"\n')
    assert cli.main(["bench", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert "frames" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:  # argparse: not a number
        cli.main(["bench", "--trace-fps", "fast"])
    assert exc.value.code == 2


def test_edge_device_and_edge_slowdown_exclude_each_other() -> None:
    with pytest.raises(ConfigError) as exc:
        options("--edge-device", "mobilenetv2-96-documented.json", "--edge-slowdown", "75")
    assert "--edge-device" in str(exc.value) and "--edge-slowdown 75" in str(exc.value)
    assert options("--edge-device", "mobilenetv2-96-slow125.toml").edge_slowdown == 1.0  # alone: fine


def test_edge_device_is_a_path_or_a_shipped_name(tmp_path: Path) -> None:
    from splitpoint.bench.device import DEVICES_DIR

    assert options().device_path() is None
    assert options("--edge-device", "mobilenetv2-96-slow125.toml").device_path() == DEVICES_DIR / "mobilenetv2-96-slow125.toml"
    own = tmp_path / "mine.toml"
    own.write_text(f'all_edge_ms = 50.0\nshape = "{DEVICES_DIR / "mobilenetv2-96-documented.json"}"\n')
    o = options("--edge-device", str(own), "--skip", "traces")  # no traces beside an installed wheel
    assert o.device_path() == own
    o.check_inputs()  # loads: a good file
    with pytest.raises(ConfigError) as exc:
        options("--edge-device", "pi9.toml").device_path()
    assert "pi9.toml" in str(exc.value) and "mobilenetv2-96-documented.json" in str(exc.value)  # lists the shipped
    own.write_text("all_edge_ms = 50.0\n")  # no shape: the file's error, before anything starts
    with pytest.raises(ConfigError, match="shape"):
        options("--edge-device", str(own), "--skip", "traces").check_inputs()


def test_a_bad_edge_device_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--edge-device", "pi9.toml", "--skip", "traces"]) == 2
    err = capsys.readouterr().err
    assert "--edge-device" in err and "pi9.toml" in err and "Traceback" not in err


def test_energy_defaults_to_the_reference_power_table_with_the_lte_radio(tmp_path: Path) -> None:
    from splitpoint.bench.device import REFERENCE_POWER_TABLE

    assert options().power_table_path() == (REFERENCE_POWER_TABLE, "lte", True)
    table = tmp_path / "board.toml"
    assert options("--power-table", str(table)).power_table_path() == (table, "wifi", False)
    assert options("--power-table", str(table), "--radio-link", "lte").power_table_path() == (table, "lte", False)
    assert options("--radio-link", "wifi").power_table_path() == (REFERENCE_POWER_TABLE, "wifi", True)
    with pytest.raises(ConfigError, match="power-table"):  # a missing table: before anything starts
        options("--power-table", str(table), "--skip", "traces").check_inputs()


def test_a_device_file_is_checked_against_the_bundle_before_the_worker_starts(tmp_path: Path) -> None:
    from splitpoint.bench.device import DEVICES_DIR
    from splitpoint.bench.emulation import check_device, profile_suffix

    doc = DEVICES_DIR / "mobilenetv2-96-documented.json"
    check_device(doc, "mobilenetv2", [0, 1, 155])  # k = 0 runs no head: never missing
    with pytest.raises(ConfigError) as exc:
        check_device(doc, "vgg16", [0, 5])
    assert "--edge-device" in str(exc.value) and "mobilenetv2" in str(exc.value) and "vgg16" in str(exc.value)
    with pytest.raises(ConfigError, match=r"\[9999\]"):
        check_device(doc, "mobilenetv2", [0, 1, 9999])
    # the cached edge profile follows the device file's content, not its name
    copy = tmp_path / "renamed.json"
    copy.write_bytes(doc.read_bytes())
    assert profile_suffix(copy, 1.0) == profile_suffix(doc, 1.0) != profile_suffix(DEVICES_DIR / "mobilenetv2-96-slow125.toml", 1.0)
    assert profile_suffix(None, 75.0) == "-x75" and profile_suffix(None, 1.0) == ""


def test_a_trace_that_is_not_there_is_an_error_before_anything_starts(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.up").write_text("0\n5\n")
    (tmp_path / "b.up").write_text("0\n7\n")
    options("--traces-dir", str(tmp_path), "--traces", "a.up,b.up").check_inputs()  # both load
    with pytest.raises(ConfigError) as exc:
        options("--traces-dir", str(tmp_path), "--traces", "a.up,Verizon.up").check_inputs()
    assert "Verizon.up" in str(exc.value) and "there: a.up, b.up" in str(exc.value)
    options("--traces-dir", str(tmp_path), "--traces", "nope.up", "--skip", "traces").check_inputs()  # not replayed
    (tmp_path / "bad.up").write_text("0\nten\n")
    with pytest.raises(ConfigError, match="bad.up"):  # a malformed file names itself
        options("--traces-dir", str(tmp_path), "--traces", "bad.up").check_inputs()
    # listed as "there" by the message saying it was not found
    (tmp_path / "dir.up").mkdir()
    os.mkfifo(tmp_path / "fifo.up")
    for name, kind in (("dir.up", "a directory"), ("fifo.up", "a named pipe")):
        with pytest.raises(ConfigError) as exc:
            options("--traces-dir", str(tmp_path), "--traces", name).check_inputs()
        assert str(exc.value) == f'--traces = "{name}": is {kind} in {tmp_path}, not a trace file'
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no \\*.up traces"):
        options("--traces-dir", str(empty)).check_inputs()
    # from the command line: exit 2, one line naming it, before the bundle is even opened
    assert cli.main(["bench", "--traces-dir", str(tmp_path), "--traces", "Verizon.up"]) == 2
    err = capsys.readouterr().err
    assert '--traces = "Verizon.up": not found in' in err and "Traceback" not in err


@pytest.mark.parametrize(("key", "value", "said"), [
    ("--json", "FILE/x.json", "cannot be created: {tmp}/FILE is a file, not a directory"),
    ("--json", "DIR", "is a directory"),
    ("--markdown", "FILE/r.md", "cannot be created"),
    ("--keep-runs", "FILE", "is a file, not a directory"),
    ("--keep-runs", "FULL", "is not empty: give a new or empty directory"),
    ("--plots", "FILE", "is a file, not a directory"),
    ("--plots", "FILE/img", "cannot be created: {tmp}/FILE is a file, not a directory"),
    ("--cache-dir", "FILE", "is a file, not a directory"),  # exit 1 after the set-up, mkdir's "File exists"
])
def test_outputs_that_cannot_be_written_are_named_before_the_run(key: str, value: str, said: str,
                                                                 tmp_path: Path) -> None:
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FULL").mkdir()
    (tmp_path / "FULL" / "0001-k=0.jsonl").write_text("{}\n")  # an earlier run's, which would be overwritten
    o = options(key, str(tmp_path / value), "--skip", "traces")
    with pytest.raises(ConfigError) as exc:
        o.check_inputs()  # before any profiling: the JSON was written only after minutes of it
    assert said.format(tmp=tmp_path) in str(exc.value) and exc.value.key == key.lstrip("-").replace("-", "_")


@pytest.mark.parametrize(("first", "second", "same"), [
    ("--json", "--markdown", "new.json"),  # ran the whole bench, then refused the markdown over the JSON
    ("--markdown", "--plots", "./out"),
    ("--keep-runs", "--plots", "LINK"),  # a symlink to the same directory
    ("--cache-dir", "--markdown", "o.md"),  # made o.md the cache, then lost the markdown after the run
])
def test_two_outputs_at_one_path_are_refused_before_the_run(first: str, second: str, same: str,
                                                            tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "LINK").symlink_to(tmp_path / "out")
    a = str(tmp_path / ("out" if same == "LINK" else same))
    b = str(tmp_path / same)
    with pytest.raises(ConfigError) as exc:
        options(first, a, second, b, "--skip", "traces").check_inputs()
    assert exc.value.key == second.lstrip("-").replace("-", "_")
    assert f"is the same file as {first.lstrip('-').replace('-', '_')} = {a}" in str(exc.value)
    assert not (tmp_path / "new.json").exists()
    options("--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"), "--plots", str(tmp_path / "img"),
            "--skip", "traces").check_inputs()  # different files: fine


def test_a_power_table_that_is_a_directory_is_named_as_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:  # it said "file not found"
        options("--power-table", str(tmp_path), "--skip", "traces").check_inputs()
    assert str(exc.value) == f'--power-table = "{tmp_path}": is a directory, not a regular file'


@pytest.mark.parametrize("key", ["--json", "--markdown"])
def test_outputs_replace_only_an_earlier_result_or_report(key: str, tmp_path: Path) -> None:
    """`--json notes.md` or `--markdown README.md` replaced the file after the run; now refused
    before it, naming the file. An earlier result or report, or an empty file, is replaced."""
    from splitpoint.bench.report_tables import render_markdown
    from splitpoint.bench.results import BenchResult

    notes = tmp_path / "notes.md"
    notes.write_text("# notes\nthe north field\n")
    with pytest.raises(ConfigError) as exc:
        options(key, str(notes), "--skip", "traces").check_inputs()
    assert str(exc.value).startswith(f'{key[2:]} = "{notes}": exists and is not a splitpoint bench')
    assert notes.read_text() == "# notes\nthe north field\n"
    earlier = tmp_path / "earlier"
    result = BenchResult(command=["splitpoint", "bench", "--smoke"])
    earlier.write_text(result.to_json() if key == "--json" else render_markdown(result))
    (tmp_path / "empty").touch()
    for path in (earlier, tmp_path / "empty", tmp_path / "new"):
        options(key, str(path), "--skip", "traces").check_inputs()
