"""Files a command writes by name replace only an earlier output of their kind (splitpoint/files.py).

`splitpoint profile -o bundle/manifest.json` replaced the bundle's manifest, `-o notes.md` the
notes; `bench --json/--markdown` and `loadtest --json` did the same. Each now refuses any file
that is not an earlier profile, result or report (or empty), names it, and leaves it as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scheduler.profiles import Profile, SplitProfile, StageStats, check_output, load_profile
from splitpoint.bench.report_tables import is_report, render_markdown
from splitpoint.bench.results import BenchResult, is_result
from splitpoint.errors import ConfigError, SplitpointError
from splitpoint.files import check_replaceable, write_replacing
from splitpoint.loadtest_report import LoadReport
from splitpoint.loadtest_report import is_report as is_loadtest_report

pytestmark = pytest.mark.edge_side  # no TensorFlow

MANIFEST = '{\n  "format": "splitpoint-bundle",\n  "schema_version": 3,\n  "model": {"name": "digits-cnn"}\n}\n'


def profile(median_ms: float = 1.0) -> Profile:
    return Profile("edge", "sha256:abc", "digits-cnn", {"cpu": "test"},
                   {0: SplitProfile(0, 100, StageStats.constant(median_ms))})


@pytest.mark.parametrize(("name", "text"), [
    ("manifest.json", MANIFEST),                      # a bundle's manifest: JSON, but not a profile
    ("notes.md", "# notes\nthe Pi at the north field runs hot\n"),
    ("other.json", '{"format": "splitpoint-bench", "schema_version": 2}'),  # another kind of ours
    ("list.json", "[1, 2, 3]\n"),
    ("binary.bin", "\x00\x01\x02 not text"),
])
def test_a_profile_does_not_replace_a_file_that_is_not_one(tmp_path: Path, name: str, text: str) -> None:
    target = tmp_path / name
    target.write_text(text)
    before = target.stat()
    for attempt in (lambda: check_output(target, "-o"), lambda: profile().save(target, "-o")):
        with pytest.raises(ConfigError) as exc:
            attempt()
        assert str(exc.value) == (f'-o = "{target}": exists and is not a splitpoint profile; it is left as it is: '
                                  "give another file name, or move the file away first")
    assert target.read_text() == text and target.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left beside it


def test_a_profile_replaces_an_earlier_profile_atomically(tmp_path: Path) -> None:
    target = tmp_path / "edge-profile.json"
    profile(1.0).save(target)
    old = json.loads(target.read_text())
    old["schema_version"] = 0  # one of an older schema is still a profile to replace
    target.write_text(json.dumps(old))
    inode = target.stat().st_ino
    check_output(target, "-o")
    profile(2.0).save(target, "-o")
    assert load_profile(target).latency_ms(0) == 2.0
    assert target.stat().st_ino != inode  # a new file renamed over the old one, not the old one rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge-profile.json"]


def test_an_empty_file_or_nothing_may_be_written(tmp_path: Path) -> None:
    (tmp_path / "empty.json").touch()  # mktemp's, say: nothing to lose
    for name in ("empty.json", "new.json", "sub/dir/new.json"):
        profile().save(tmp_path / name)
        assert load_profile(tmp_path / name).side == "edge"


def test_a_directory_pipe_or_device_is_named_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    for path, said in ((tmp_path, "is a directory; give the file name of a splitpoint profile"),
                       (fifo, "is a named pipe, not a regular file"), (Path("/dev/null"), "is a character device")):
        with pytest.raises(ConfigError) as exc:
            profile().save(path, "-o")
        assert said in str(exc.value), exc.value


def test_a_path_under_a_file_is_a_wrong_value_found_before_the_work(tmp_path: Path) -> None:
    # `profile cloud -o afile/x.json` said "afile/x.json: Not a directory", exit 1, as if a disk
    # had failed, and bench/loadtest found it after their run; --results and partition -o say exit 2
    (tmp_path / "afile").write_text("notes\n")
    for path in (tmp_path / "afile" / "x.json", tmp_path / "afile" / "sub" / "x.json"):
        for attempt in (lambda p=path: check_output(p, "-o"), lambda p=path: profile().save(p, "-o")):
            with pytest.raises(ConfigError) as exc:
                attempt()
            assert str(exc.value) == f'-o = "{path}": cannot be created: {tmp_path / "afile"} is a file, not a directory'
    assert (tmp_path / "afile").read_text() == "notes\n"


def test_a_symlink_to_a_file_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("notes\n")
    (tmp_path / "link.json").symlink_to(notes)
    with pytest.raises(ConfigError):
        profile().save(tmp_path / "link.json")
    assert notes.read_text() == "notes\n"


def test_a_failed_write_leaves_the_earlier_file_and_no_temporary_one(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "p.json"
    profile(1.0).save(target)

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SplitpointError, match=r'^profile = ".*p\.json": could not be written \(No space left on device\)'):
        profile(2.0).save(target)
    assert load_profile(target).latency_ms(0) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_reference_profiles_check_all_three_files_before_writing_any(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler import reference_profiles as ref

    table = {"source": f"{ref.TABLE_SOURCE} (scheduler/reference_profiles.py), not a measurement", "idle_w": 2.0}
    monkeypatch.setattr(ref, "reference_profiles", lambda m: (profile(), profile(), table))
    ref.write_reference_profiles(None, tmp_path)  # type: ignore[arg-type]
    ref.write_reference_profiles(None, tmp_path)  # type: ignore[arg-type]  # again: its own files are replaced
    (tmp_path / "edge-profile.json").unlink()
    (tmp_path / "power-table.json").write_text('{"idle_w": 2.4, "head_w": {"0": 2.4}}\n')  # one measured here
    with pytest.raises(ConfigError) as exc:
        ref.write_reference_profiles(None, tmp_path)  # type: ignore[arg-type]
    assert "power-table.json" in str(exc.value) and "reference power table" in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud-profile.json", "power-table.json"]  # none written
    assert json.loads((tmp_path / "power-table.json").read_text())["idle_w"] == 2.4


# ---------------------------------------------------------------- bench and loadtest


def test_bench_outputs_recognise_their_own_earlier_files() -> None:
    result = BenchResult(command=["splitpoint", "bench", "--smoke"])
    assert is_result(result.to_json().encode())
    assert is_report(render_markdown(result).encode())
    assert is_report(render_markdown(BenchResult()).encode())  # an old result without its command line
    for other in (MANIFEST, "# Benchmarks\n\nnotes\n", "## `x`: splitpoint bench\n\nsomeone's notes\n"):
        assert not is_result(other.encode()) and not is_report(other.encode())


def test_loadtest_json_recognises_its_reports_old_and_new() -> None:
    report = LoadReport(config={"agents": 2}, seconds=1.0, per_agent_answered=[1, 1])
    new = report.to_dict()
    assert new["format"] == "splitpoint-loadtest"
    assert is_loadtest_report(json.dumps(new).encode())
    old = {k: v for k, v in new.items() if k != "format"}  # written before reports said their format
    assert is_loadtest_report(json.dumps(old).encode())
    assert not is_loadtest_report(MANIFEST.encode()) and not is_loadtest_report(b"notes")


def test_one_rule_for_every_kind(tmp_path: Path) -> None:
    """write_replacing is check_replaceable, then an atomic write: the kind is the caller's."""
    target = tmp_path / "x.txt"
    target.write_text("mine\n")
    with pytest.raises(ConfigError) as exc:
        write_replacing(target, "new\n", "--out", "a thing", lambda data: data.startswith(b"thing"))
    assert str(exc.value).startswith(f'--out = "{target}": exists and is not a thing;')
    target.write_text("thing 1\n")
    check_replaceable(target, "--out", "a thing", lambda data: data.startswith(b"thing"))
    write_replacing(target, "thing 2\n", "--out", "a thing", lambda data: data.startswith(b"thing"))
    assert target.read_text() == "thing 2\n"


def _unwritable_dirs() -> list[str]:
    """Directories no file can be made in, even by root (access() says yes to root everywhere):
    /sys (EACCES, or EROFS in a container)."""
    try:
        fd = os.open("/sys/.splitpoint-probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return ["/sys"]
    os.close(fd)  # a machine that lets anyone write /sys: nothing here to test with
    os.unlink("/sys/.splitpoint-probe")
    return []


@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`profile cloud` with its bundle and measuring stubbed: what it measured is listed."""
    import scheduler.profiles
    import splitpoint.bundle

    measured: list[str] = []

    def measure(bundle: object, runs: int) -> Profile:
        measured.append("cloud")
        return profile()

    monkeypatch.setattr(splitpoint.bundle, "load_bundle", lambda *a, **k: object())
    monkeypatch.setattr(scheduler.profiles, "profile_cloud", measure)
    return measured


@pytest.mark.parametrize("where", _unwritable_dirs())
def test_profile_refuses_an_output_it_cannot_write_before_measuring(where: str, tmp_path: Path, no_measuring: list[str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`profile -o` into a directory no file can be made in measured every split (minutes on a
    real model) and only then failed to write (exit 1). Now it is refused at once, exit 2, naming it."""
    from splitpoint.cli import main

    for out in (f"{where}/profile.json", f"{where}/new/dir/profile.json"):
        assert main(["profile", "cloud", "--bundle", str(tmp_path), "-o", out]) == 2
        err = capsys.readouterr().err
        assert f'-o = "{out}": cannot be written: a file could not be made and removed in {where} (' in err, err
    assert no_measuring == []


def test_a_read_only_medium_is_refused_before_measuring(tmp_path: Path, no_measuring: list[str],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The same on a read-only mount (EROFS), which no test can make without privileges: the probe
    file's creation fails as it would there."""
    import tempfile

    from splitpoint.cli import main

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    out = tmp_path / "p.json"
    assert main(["profile", "cloud", "--bundle", str(tmp_path), "-o", str(out)]) == 2
    assert (f'-o = "{out}": cannot be written: a file could not be made and removed in {tmp_path} '
            "(Read-only file system)") in capsys.readouterr().err
    assert no_measuring == [] and not out.exists()


def test_a_writable_directory_is_probed_without_a_trace(tmp_path: Path, no_measuring: list[str]) -> None:
    from splitpoint.cli import main

    for name in ("p.json", "sub/dir/p.json"):  # directories still to be made are made, as before
        assert main(["profile", "cloud", "--bundle", str(tmp_path), "-o", str(tmp_path / name)]) == 0
        assert load_profile(tmp_path / name).side == "edge"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "sub"]
    assert sorted(p.name for p in (tmp_path / "sub" / "dir").iterdir()) == ["p.json"]
    assert no_measuring == ["cloud", "cloud"]
