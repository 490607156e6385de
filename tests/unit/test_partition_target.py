"""What --force may replace, and -o checked again at the move (splitpoint/partition_target.py,
splitpoint/partition_output.py): a hostile tester's cases, each once a deleted file or a lost run."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import BinaryIO

import pytest

from splitpoint import partition_output
from splitpoint.errors import PartitionError
from splitpoint.partition_output import staged_output


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def bundle_at(root: Path, tag: str = "old") -> Path:
    """What partition writes, small: a splitpoint manifest, a head, a tail, validation data."""
    for sub, name in (("edge", "head_3.tflite"), ("cloud", "tail_3.keras"), ("data", "validation.npz")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / name).write_text(f"{tag} {name}")
    (root / "manifest.json").write_text(json.dumps({"format": "splitpoint-bundle", "schema_version": 1, "tag": tag}))
    return root


def build_into(build: Path, tag: str = "new") -> None:
    bundle_at(build, tag)


def refused(out: Path, force: bool, inputs: tuple[Path, ...] = ()) -> str:
    """The refusal of a run to `out`, which must come before anything was built or removed."""
    with pytest.raises(PartitionError) as info, staged_output(out, force, inputs) as build:
        build_into(build)
    assert info.value.exit_code == 2
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name or ".verified-" in p.name]
    return str(info.value)


# ---------------------------------------------------------------- what --force replaces


def test_force_leaves_a_directory_with_someone_elses_manifest_json(tmp_path: Path) -> None:
    """An npm package: it has a manifest.json (and --force deleted its src/app.js, exit 0)."""
    web = tmp_path / "webapp"
    (web / "src").mkdir(parents=True)
    (web / "manifest.json").write_text('{"name": "ext"}')
    (web / "src" / "app.js").write_text("x")
    before = tree(web)
    err = refused(web, force=True)
    assert err.startswith(f'-o = "{web}": directory is not empty and not a splitpoint bundle')
    assert "choose another -o" in err
    assert tree(web) == before


def test_force_leaves_an_edge_directory_without_a_manifest(tmp_path: Path) -> None:
    out = tmp_path / "o"
    (out / "edge").mkdir(parents=True)
    (out / "edge" / "mine.txt").write_text("mine")
    refused(out, force=True)
    assert (out / "edge" / "mine.txt").read_text() == "mine"


def test_force_leaves_a_bundle_that_holds_anything_else_and_names_it(tmp_path: Path) -> None:
    out = bundle_at(tmp_path / "b")
    (out / "notes.txt").write_text("mine")
    (out / "frames").mkdir()
    (out / "edge" / "mine.tflite").write_text("mine")
    (out / "cloud" / "keep").mkdir()
    before = tree(out)
    err = refused(out, force=True)
    assert ("the bundle there also holds what a bundle does not (cloud/keep/, edge/mine.tflite, frames/, notes.txt); "
            "--force replaces only a bundle: move those out, or choose another -o") in err
    assert tree(out) == before


def test_force_leaves_a_bundle_whose_manifest_is_a_symlink(tmp_path: Path) -> None:
    out = bundle_at(tmp_path / "b")
    real = tmp_path / "elsewhere.json"
    (out / "manifest.json").rename(real)
    (out / "manifest.json").symlink_to(real)
    refused(out, force=True)
    assert (out / "manifest.json").is_symlink()


def test_a_list_of_many_foreign_entries_is_cut_short(tmp_path: Path) -> None:
    out = bundle_at(tmp_path / "b")
    for i in range(8):
        (out / f"f{i}").write_text("x")
    assert "(f0, f1, f2, f3, f4 and 3 more)" in refused(out, force=True)


def test_force_replaces_a_bundle_that_holds_only_what_partition_writes(tmp_path: Path) -> None:
    out = bundle_at(tmp_path / "b")
    (out / "edge" / "head_3_edgetpu.tflite").write_text("compiled")
    (out / "edge" / "head_3_edgetpu.log").write_text("the compiler's log")
    with staged_output(out, force=True) as build:
        build_into(build)
    assert json.loads((out / "manifest.json").read_text())["tag"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


# ---------------------------------------------------------------- the run's own inputs


@pytest.mark.parametrize("force", [False, True])
def test_an_o_that_holds_the_model_is_refused_with_or_without_force(tmp_path: Path, force: bool) -> None:
    """`partition proj/model.keras -o proj --force` deleted the model it was given."""
    proj = bundle_at(tmp_path / "proj")
    (proj / "model.keras").write_text("model")
    before = tree(proj)
    err = refused(proj, force, (proj / "model.keras",))
    assert err == (f'-o = "{proj}": holds {proj / "model.keras"}, an input of this run, which the bundle would '
                   "replace; choose another -o")
    assert tree(proj) == before


def test_an_o_that_is_the_calibration_directory_is_refused(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "a.npy").write_text("frame")
    link = tmp_path / "link"
    link.symlink_to(frames)
    assert f"is {frames}, an input of this run" in refused(link, force=True, inputs=(frames,))
    assert (frames / "a.npy").read_text() == "frame"


# ---------------------------------------------------------------- -o changed during the run


def test_a_directory_made_at_o_during_the_run_is_left_and_the_bundle_kept(tmp_path: Path) -> None:
    """Two runs to one new -o both said "bundle written": the second replaced the first's."""
    out = tmp_path / "b"
    with pytest.raises(PartitionError) as info, staged_output(out, force=False) as build:
        build_into(build)
        out.mkdir()  # another run, or a user, while this one builds
        (out / "mine.txt").write_text("mine")
    assert (out / "mine.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".b.verified-")]
    assert len(kept) == 1 and json.loads((kept[0] / "manifest.json").read_text())["tag"] == "new"
    assert str(info.value) == (f'-o = "{out}": something was put there while the bundle was built (another run, '
                               f"or by hand), and it is left as it is; the new, verified bundle is in {kept[0]}")


def test_force_does_not_replace_a_bundle_written_during_the_run(tmp_path: Path) -> None:
    out = bundle_at(tmp_path / "b")
    with pytest.raises(PartitionError) as info, staged_output(out, force=True) as build:
        build_into(build)
        shutil.rmtree(out)  # another --force run swapped its own bundle in
        bundle_at(out, "theirs")
    assert json.loads((out / "manifest.json").read_text())["tag"] == "theirs"
    assert "the bundle there changed while this one was built" in str(info.value)
    assert "so it is not replaced; the old one is back, and the new, verified bundle is in" in str(info.value)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".b.verified-")]) == 1
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name]


def test_force_does_not_replace_a_bundle_someone_put_a_file_in_during_the_run(tmp_path: Path) -> None:
    out = bundle_at(tmp_path / "b")
    with pytest.raises(PartitionError, match="changed while this one was built"), \
            staged_output(out, force=True) as build:
        build_into(build)
        (out / "notes.txt").write_text("mine")
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "manifest.json").read_text())["tag"] == "old"


# ---------------------------------------------------------------- another file system (a mount point)


def no_rename_onto(out: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Renames onto `out` fail as onto a mount point (the build is on the parent's file system)."""
    real_rename = os.rename

    def rename(src: object, dst: object) -> None:
        if Path(str(dst)) == out:
            raise OSError(code, os.strerror(code))
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(partition_output.os, "rename", rename)


def test_an_o_that_cannot_be_renamed_onto_is_filled_manifest_last(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "mnt"
    out.mkdir()
    no_rename_onto(out, monkeypatch, errno.EBUSY)
    with staged_output(out, force=False) as build:
        build_into(build)
    assert tree(out) == tree(bundle_at(tmp_path / "want", "new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnt", "want"]


def test_a_full_o_keeps_no_manifest_and_nothing_it_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 MB tmpfs at -o: a manifest.json and a 0-byte tail were left, and the error was a Python list."""
    out = tmp_path / "mnt"
    out.mkdir()
    no_rename_onto(out, monkeypatch, errno.EXDEV)
    real_copy = shutil.copyfileobj

    def copy(fin: BinaryIO, fout: BinaryIO, length: int = 0) -> None:
        if Path(fin.name).name == "tail_3.keras":
            fout.write(b"half a tail")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_copy(fin, fout, length)

    monkeypatch.setattr(partition_output.shutil, "copyfileobj", copy)
    with pytest.raises(PartitionError) as info, staged_output(out, force=False) as build:
        build_into(build)
    assert list(out.iterdir()) == []
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".mnt.verified-")]
    assert len(kept) == 1 and (kept[0] / "manifest.json").is_file()
    assert str(info.value) == (f'-o = "{out}": No space left on device while writing cloud/tail_3.keras; free space '
                               f"or choose another -o (nothing of it was left there; the new, verified bundle is in "
                               f"{kept[0]})")


def test_force_onto_a_mount_point_is_refused_before_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = bundle_at(tmp_path / "mnt")
    monkeypatch.setattr(partition_output.os.path, "ismount", lambda p: Path(p) == out)
    err = refused(out, force=True)
    assert "is a mount point, which cannot be moved aside" in err and f"-o {out}/bundle" in err


def test_the_current_directory_as_o_is_filled_not_swapped_out(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o .` in an empty directory renamed the bundle onto it: the shell was left in a deleted one."""
    monkeypatch.chdir(tmp_path)
    inode = tmp_path.stat().st_ino
    with staged_output(Path("."), force=False) as build:
        build_into(build)
    assert tmp_path.stat().st_ino == inode and Path.cwd().samefile(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["tag"] == "new"
    assert sorted(p.name for p in tmp_path.parent.iterdir() if tmp_path.name in p.name) == [tmp_path.name]


# ---------------------------------------------------------------- names and disks


def test_a_long_legal_o_name_is_built_beside_it(tmp_path: Path) -> None:
    """A 240-character -o was refused "File name too long": the build's name carried it whole."""
    out = tmp_path / ("b" * 240)
    with staged_output(out, force=False) as build:
        assert len(build.name) < 100
        build_into(build)
    assert json.loads((out / "manifest.json").read_text())["tag"] == "new"


def test_a_disk_that_fills_during_the_build_is_named(tmp_path: Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(PartitionError) as info, staged_output(out, force=False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as TensorFlow's save raises it, no file named
    assert str(info.value) == (f'-o = "{out}": No space left on device while building the bundle in {tmp_path} '
                               "(it is built there, beside -o); free space or choose another -o")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_o_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`-o "$OUT"`, OUT unset, in an empty directory: the current directory was swapped out."""
    from splitpoint.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["partition", "digits-cnn", "-o", ""]) == 2
    assert "splitpoint partition: error: -o: give a directory for the bundle" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", [".", "edge"])
def test_force_onto_the_directory_the_shell_is_in_is_refused(tmp_path: Path, where: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`cd bundle; partition ... -o . --force` (or `-o ..` from edge/) renamed the current directory
    aside and removed it: exit 0, 'bundle written to .', and the shell in a deleted directory."""
    out = bundle_at(tmp_path / "b")
    before = tree(out)
    monkeypatch.chdir(out / where)
    err = refused(Path("." if where == "." else ".."), force=True)
    assert "holds the current directory, which --force would remove with the old bundle" in err
    assert tree(out) == before


def test_an_o_that_is_a_symlink_loop_is_refused_before_the_build(tmp_path: Path) -> None:
    """It built the whole bundle, then said 'something was put there while the bundle was built'."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    err = refused(tmp_path / "a", force=False)
    assert err == f'-o = "{tmp_path / "a"}": cannot be used (Too many levels of symbolic links); choose another -o'


def test_an_o_whose_name_is_too_long_is_refused_naming_it(tmp_path: Path) -> None:
    """A name over NAME_MAX was a bare "File name too long", exit 1, after the model had loaded."""
    out = tmp_path / ("a" * 256)
    assert refused(out, force=False) == f'-o = "{out}": cannot be used (File name too long); choose another -o'
