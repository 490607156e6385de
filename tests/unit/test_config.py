"""Config: defaults < TOML < flags, and every bad value named with its key."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from cloud_server.config import CloudConfig
from edge_node.config import EdgeConfig
from splitpoint import config as cfg
from splitpoint.errors import ConfigError, SplitpointError, show_value

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13


def parse(cls: type, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cfg.add_arguments(p, cls)
    return p.parse_args(["--insecure", *argv])  # plaintext must be asked for


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.toml"
    path.write_text(text)
    return path


def test_flags_override_file_and_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, 'bundle = "b"\nsource = "synthetic:5"\nwindow = 8\nmode = "latency"\n')
    conf = cfg.load(EdgeConfig, parse(EdgeConfig, ["--window", "2"]), path)
    assert conf.window == 2  # flag
    assert conf.mode == "latency"  # file
    assert conf.frame_deadline_ms == 2000  # default
    assert conf.window_size == 1  # latency mode keeps one frame in flight


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ('window = "x"', "window", "x"),
        ('mode = "fast"', "mode", "fast"),
        ('cloud = "nohostport"', "cloud", "nohostport"),
        ("colour = 3", "colour", 3),
        ('device = "tpu"', "device", "tpu"),
        ("fps = -1", "fps", -1),
        ("window = 0", "window", 0),
        ("split = 1.5", "split", 1.5),
        ("cpu_fallback = 3", "cpu_fallback", 3),
        ('window = "4"', "window", "4"),  # a number written as a string is refused, not guessed
        ('fps = "10"', "fps", "10"),
        ('cpu_fallback = "yes"', "cpu_fallback", "yes"),
        ('policy.margin = "0.2"', "policy.margin", "0.2"),
        # TOML's nan and inf pass every `x < bound` check unless refused as numbers
        ("grace_s = nan", "grace_s", "nan"),
        ("keepalive_s = inf", "keepalive_s", "inf"),
        ("policy.deadline_ms = -inf", "policy.deadline_ms", "-inf"),
        ('agent_name = "dröhne"', "agent_name", "dröhne"),  # gRPC metadata: printable ASCII
        ("threads = 100000", "threads", 100000),
        ("window = 1025", "window", 1025),  # frames held in memory: each its image and input
        ("max_frames = 1000000001", "max_frames", 1000000001),  # past a billion: leave it out for no limit
        ("live_buffer = 1000000000", "live_buffer", 1000000000),
        ("camera_reopen_s = -1", "camera_reopen_s", -1),
        ("results_rotate_h = -24", "results_rotate_h", -24),
        # past 32-bit milliseconds: OverflowError tracebacks in gRPC once running, or a sleep()
        ("keepalive_s = 3e6", "keepalive_s", 3e6),
        ("stream_lifetime_s = 1e12", "stream_lifetime_s", 1e12),
        ("policy.deadline_ms = 3e12", "policy.deadline_ms", 3e12),
        ("policy.deadline_ms = 3600001", "policy.deadline_ms", 3600001),  # past an hour, a profile's longest time
        ("policy.energy_budget_mj = 3600000001", "policy.energy_budget_mj", 3600000001),  # past 1 kWh a frame
        ("fps = 1e-300", "fps", 1e-300),
        (f'agent_name = "{"a" * 129}"', "agent_name", "a" * 40 + "..."),
    ],
)
def test_bad_values_name_key_and_value(tmp_path: Path, text: str, key: str, value: object) -> None:
    if text.startswith("policy."):
        text = "[policy]\n" + text.removeprefix("policy.")
    path = write(tmp_path, f'bundle = "b"\nsource = "synthetic:5"\n{text}\n')
    with pytest.raises(ConfigError) as info:
        cfg.load(EdgeConfig, parse(EdgeConfig, []), path)
    assert info.value.key == key
    if value in ("nan", "inf", "-inf"):
        assert str(info.value) == f"{key} = {value}: expected a finite number"
        return
    assert info.value.value == value
    # the value as the user wrote it in TOML, never a Python repr
    assert f"{key} = {show_value(value)}:" in str(info.value)
    if isinstance(value, str) and key in ("window", "fps", "cpu_fallback", "policy.margin"):
        assert "without quotes" in str(info.value)


@pytest.mark.parametrize(("cls", "text", "key", "shown"), [
    (EdgeConfig, 'bundle = 5\nsource = "synthetic:5"', "bundle", 'bundle = 5: expected a string, not a number: '
                                                                   'write it in quotes ("5")'),  # was taken as "5"
    (CloudConfig, "bundle = 5", "bundle", None),
    # said "tls_key: tls_cert and tls_key go together", of a key the file never named
    (CloudConfig, 'bundle = "b"\ntls_cert = 7\ntls_key = "k"', "tls_cert", None),
    (EdgeConfig, 'bundle = "b"\nsource = "synthetic:5"\nagent_name = 2.5', "agent_name", None),
    (EdgeConfig, 'bundle = "b"\nsource = "synthetic:5"\n[policy]\nedge_profile = 3', "policy.edge_profile", None),
])
def test_a_number_for_a_string_key_is_refused_naming_it(tmp_path: Path, cls: type, text: str, key: str,
                                                        shown: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.load(cls, parse(cls, []), write(tmp_path, text + "\n"))
    assert info.value.key == key and 'not a number: write it in quotes ("' in str(info.value), info.value
    assert shown is None or str(info.value) == shown


def test_a_flag_that_reads_as_a_number_is_still_a_string() -> None:
    conf = cfg.load(EdgeConfig, parse(EdgeConfig, ["--bundle", "5", "--source", "synthetic:5", "--agent-name", "7"]))
    assert (conf.bundle, conf.agent_name) == ("5", "7")
    assert cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "5"])).bundle == "5"


def test_messages_never_show_python_values() -> None:
    assert str(ConfigError("bundle", None, "is required")) == "bundle: is required"
    assert str(ConfigError("insecure", False, "x")) == "insecure = false: x"
    assert str(ConfigError("tls_key", "", "goes with tls_cert")) == "tls_key: goes with tls_cert"


def test_flags_are_typed_by_argparse() -> None:
    args = parse(EdgeConfig, ["--bundle", "b", "--source", "s", "--window", "3", "--fps", "2.5"])
    assert args.window == 3 and args.fps == 2.5
    with pytest.raises(SystemExit):
        parse(EdgeConfig, ["--window", "three"])


def test_missing_required_key_says_how_to_give_it() -> None:
    with pytest.raises(ConfigError, match="--bundle"):
        cfg.load(CloudConfig, parse(CloudConfig, []))


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfg.load(CloudConfig, parse(CloudConfig, []), write(tmp_path, "bundle = \n"))
    with pytest.raises(ConfigError, match="file not found"):
        cfg.load(CloudConfig, parse(CloudConfig, []), tmp_path / "nope.toml")


def test_flags_refuse_non_finite_numbers_too() -> None:
    with pytest.raises(ConfigError, match=r"^hedge_margin = nan: expected a finite number$"):
        cfg.load(EdgeConfig, parse(EdgeConfig, ["--bundle", "b", "--source", "s", "--hedge-margin", "nan"]))


@pytest.mark.parametrize("cls", [EdgeConfig, CloudConfig])
def test_an_empty_bundle_is_refused_by_its_key(cls: type) -> None:
    """--bundle "" looked for manifest.json in the working directory and named no key."""
    with pytest.raises(ConfigError, match=r'^bundle = " ": give the bundle directory'):
        cfg.load(cls, parse(cls, ["--bundle", " ", "--source", "s"] if cls is EdgeConfig else ["--bundle", " "]))


def test_any_required_key_given_blank_is_refused_by_its_key() -> None:
    """The rule is the config mechanism's: loadtest's bundle and target had no check of their own."""
    from splitpoint.loadtest import LoadtestConfig

    with pytest.raises(ConfigError, match=r"^bundle: give the bundle directory \(the server's\)"):
        cfg.load(LoadtestConfig, parse(LoadtestConfig, ["--bundle", "", "--target", "127.0.0.1:1"]))
    with pytest.raises(ConfigError, match=r'^target = " ": give the gRPC target'):
        cfg.load(LoadtestConfig, parse(LoadtestConfig, ["--bundle", "b", "--target", " "]))


def test_an_empty_results_name_is_refused_not_opened_as_a_directory() -> None:
    with pytest.raises(ConfigError, match=r"^results = \" \": give the results log's file name$"):
        cfg.load(EdgeConfig, parse(EdgeConfig, ["--bundle", "b", "--source", "s", "--results", " "]))


def test_a_config_file_saved_with_a_byte_order_mark_says_so(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_bytes(b'\xef\xbb\xbfbundle = "b"\n')  # Notepad's "UTF-8": TOML allows no BOM
    with pytest.raises(ConfigError, match="starts with a byte-order mark .*: save it as UTF-8 without one$"):
        cfg.load(EdgeConfig, parse(EdgeConfig, ["--source", "s"]), path)


def test_a_config_file_that_is_not_text_is_named(tmp_path: Path) -> None:
    path = tmp_path / "conf.toml"
    path.write_bytes(b"bundle = \"b\"\n\xff\xfe")
    with pytest.raises(ConfigError, match=r"not UTF-8 text, so not TOML"):
        cfg.load(CloudConfig, parse(CloudConfig, []), path)


def test_print_config_round_trips_strings_with_quotes_and_control_characters(tmp_path: Path) -> None:
    conf = cfg.load(EdgeConfig, parse(EdgeConfig, ["--bundle", 'dir "x"\\y', "--source", "a\tb\nc\x7f"]))
    again = cfg.load(EdgeConfig, parse(EdgeConfig, []), write(tmp_path, cfg.to_toml(conf)))
    assert (again.bundle, again.source) == ('dir "x"\\y', "a\tb\nc\x7f")


def test_print_config_round_trips(tmp_path: Path) -> None:
    conf = cfg.load(EdgeConfig, parse(EdgeConfig, ["--bundle", "b", "--source", "camera:0", "--fps", "15"]))
    text = cfg.to_toml(conf)
    again = cfg.load(EdgeConfig, parse(EdgeConfig, []), write(tmp_path, text))
    assert again == conf


@pytest.mark.parametrize(("flag", "value"), [("--max-connection-age-s", "3000000"),
                                             ("--max-connection-age-grace-s", "1e300"), ("--grace-s", "1e300")])
def test_a_server_time_past_32_bit_milliseconds_is_refused_before_the_tails_load(flag: str, value: str) -> None:
    """30 days of connection age was an OverflowError traceback once TensorFlow and every tail had
    loaded; grace_s = 1e300 a SIGTERM that never ended the server."""
    with pytest.raises(ConfigError, match=r"must be at most 2147483 s \(24\.8 days"):
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", flag, value]))
    assert cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--max-connection-age-s", "2147483"]))


def test_a_stream_window_past_2_gib_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^stream_window_kb = 2097152: must be at most 2097151 \(2 GiB\)$"):
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--stream-window-kb", "2097152"]))


def test_a_huge_float_is_shown_as_written_not_as_300_digits() -> None:
    assert show_value(1e300) == "1e+300" and show_value(-3.0) == "-3" and show_value(2147483.0) == "2147483"


def test_a_nul_byte_in_a_string_is_refused_and_shown_as_toml_writes_it(tmp_path: Path) -> None:
    """results = "a\\u0000b.jsonl" was an os.stat ValueError traceback (agent, server, doctor)."""
    path = write(tmp_path, 'bundle = "b"\nsource = "synthetic:5"\nresults = "a\\u0000b.jsonl"\n')
    with pytest.raises(ConfigError, match=r'^results = "a\\u0000b\.jsonl": contains a NUL byte$'):
        cfg.load(EdgeConfig, parse(EdgeConfig, []), path)


def test_cloud_limits_validated() -> None:
    with pytest.raises(ConfigError) as info:
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--listen", "127.0.0.1:99999"]))
    assert info.value.key == "listen"
    with pytest.raises(ConfigError) as info:
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--workers", "0"]))
    assert info.value.key == "workers"


@pytest.mark.parametrize("workers", ["257", "30000", "99999999999999999999"])
def test_workers_past_the_cap_are_refused_before_any_thread_starts(workers: str) -> None:
    """--workers 30000 was a 'can't start new thread' traceback 50 s in, after the tails loaded;
    workers = 99999999999999999999 in TOML got the server OOM-killed."""
    with pytest.raises(ConfigError, match=r"^workers = \d+: must be at most 256 ") as info:
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--workers", workers]))
    assert info.value.key == "workers"


def test_workers_from_toml_past_the_cap_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'bundle = "b"\nworkers = 99999999999999999999\n')
    with pytest.raises(ConfigError) as info:
        cfg.load(CloudConfig, parse(CloudConfig, []), path)
    assert info.value.key == "workers"
    cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--workers", "256"]))  # the cap itself is fine


@pytest.mark.parametrize(("key", "most"), [("max_batch", 1024), ("max_queue", 100_000), ("max_queue_per_agent", 100_000),
                                         ("max_streams", 10_000), ("max_streams_per_agent", 10_000)])
def test_server_counts_past_their_cap_are_refused(tmp_path: Path, key: str, most: int) -> None:
    """max_streams = 10**12 sized the gRPC thread pool for two threads a stream, and a queue or batch
    of 10**12 frames held frames until the memory was gone: each count has a generous cap."""
    flag = "--" + key.replace("_", "-")
    with pytest.raises(ConfigError, match=rf"^{key} = {most + 1}: must be at most {most} \(") as info:
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", flag, str(most + 1)]))
    assert info.value.key == key
    with pytest.raises(ConfigError, match=rf"^{key} = 1000000000000: must be at most {most} "):
        cfg.load(CloudConfig, parse(CloudConfig, []), write(tmp_path, f'bundle = "b"\n{key} = 1_000_000_000_000\n'))
    assert getattr(cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", flag, str(most)])), key) == most


@pytest.mark.parametrize("age", ["0.0001", "0.5", "0.999"])
def test_a_connection_age_under_a_second_is_refused(age: str) -> None:
    """max_connection_age_s = 0.0001 was 0 ms to gRPC (int(0.0001 * 1000)): every connection closed
    at once; under a second none lives through an agent's handshake and first frames."""
    with pytest.raises(ConfigError, match=r"must be 0 \(never\) or at least 1 s") as info:
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--max-connection-age-s", age]))
    assert info.value.key == "max_connection_age_s"
    for fine in ("0", "1", "600"):
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--max-connection-age-s", fine]))


def test_a_metrics_address_in_use_is_named() -> None:
    import socket

    from prometheus_client import CollectorRegistry

    from splitpoint.metrics import serve_metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(SplitpointError) as info:
            serve_metrics(listen, CollectorRegistry())
    assert str(info.value) == f'metrics_listen = "{listen}": cannot listen there: Address already in use'
    # a port in use is not a wrong value: exit 1, as for listen and health_listen (docs/configuration.md)
    assert not isinstance(info.value, ConfigError)


def test_a_token_file_others_can_read_is_warned_about_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # read by the file check, then for the channel (and the server's credentials): said three times
    from splitpoint.security import read_token

    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    token.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="splitpoint.security"):
        for _ in range(3):
            assert read_token("token_file", str(token)) == "0123456789abcdef0123"
    assert [r.getMessage() for r in caplog.records] == [f"token file {token} is readable by other users: chmod 600 it"]


def test_every_key_is_in_the_reference() -> None:
    """docs/configuration.md's reference lists every key: a key added without it is one users never
    learn of. (deploy/*.toml.example: tests/functional/test_doctor.py, test_deploy_examples_...)"""
    import dataclasses
    import re

    from scheduler.objectives import PolicyConfig

    reference = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for cls in (EdgeConfig, PolicyConfig, CloudConfig):
        keys = [f.name for f in dataclasses.fields(cls) if f.name != "policy"]
        # set in one of its examples (`split = 5`, or commented out) or named in its text
        missing = [k for k in keys if not re.search(rf"^#? ?{k} = ", reference, re.M) and f"`{k}`" not in reference]
        assert not missing, (cls.__name__, missing)


@pytest.mark.parametrize(("flags", "key", "said"), [
    (["--health-listen", "127.0.0.1:30711", "--metrics-listen", "127.0.0.1:30711"], "metrics_listen",
     'metrics_listen = "127.0.0.1:30711": is also this server\'s health_listen (127.0.0.1:30711)'),
    (["--listen", "127.0.0.1:30710", "--health-listen", "0.0.0.0:30710"], "health_listen",
     'health_listen = "0.0.0.0:30710": is also this server\'s listen (127.0.0.1:30710)'),
    (["--listen", "[::]:30710", "--metrics-listen", "[::1]:30710"], "metrics_listen", None),
    # one host by two names: compared as written, it was taken, and failed after every tail loaded
    (["--listen", "localhost:30710", "--metrics-listen", "127.0.0.1:30710"], "metrics_listen",
     'metrics_listen = "127.0.0.1:30710": is also this server\'s listen (localhost:30710)'),
])
def test_two_listeners_on_one_port_are_refused_before_anything_loads(flags: list[str], key: str,
                                                                      said: str | None) -> None:
    """The second bind failed after TensorFlow and every tail had loaded, "Address already in use"
    with no word that this server itself held the port."""
    with pytest.raises(ConfigError) as info:
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--insecure", *flags]))
    assert info.value.key == key and "give each its own port" in str(info.value)
    assert said is None or str(info.value).startswith(said)


def test_listeners_on_port_0_or_on_other_ports_or_hosts_are_taken() -> None:
    for flags in (["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
                  ["--listen", "127.0.0.1:5", "--health-listen", "127.0.0.2:5"],
                  ["--listen", "127.0.0.1:5", "--health-listen", "127.0.0.1:6", "--metrics-listen", "127.0.0.1:7"]):
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--insecure", *flags]))  # validated: no error


@pytest.mark.parametrize(("text", "said"), [
    ("stream_lifetime_s = 2", "stream_lifetime_s = 2: must be more than twice frame_deadline_ms (2000 ms): above 4 s, "
                              "or lower frame_deadline_ms"),
    ("stream_lifetime_s = 1\nframe_deadline_ms = 750", "stream_lifetime_s = 1: must be more than twice "
                                                       "frame_deadline_ms (750 ms): above 1.5 s, or lower frame_deadline_ms"),
])
def test_a_stream_lifetime_too_short_gives_the_bound(tmp_path: Path, text: str, said: str) -> None:
    """It said "must be more than twice frame_deadline_ms" and left the user to find that key's value."""
    path = write(tmp_path, f'bundle = "b"\nsource = "synthetic:5"\n{text}\n')
    with pytest.raises(ConfigError) as info:
        cfg.load(EdgeConfig, parse(EdgeConfig, []), path)
    assert str(info.value) == said
