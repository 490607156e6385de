"""Frame sources: directories, .npy, synthetic, pacing, bad specs, cameras and video files."""

from __future__ import annotations

import glob
import itertools
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import fake_cv2, png_declaring
from numpy.lib import format as npy_format
from PIL import Image

from edge_node import video_sources
from edge_node.source_spec import open_source
from edge_node.sources import Frame, FrameReadError, FrameSource
from splitpoint import images
from splitpoint.bundle import Preprocessing
from splitpoint.errors import BackendUnavailableError, ConfigError, show_value

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13

GRAY8 = Preprocessing(height=8, width=8, channels=1, scale=1 / 255, offset=0.0)
RGB8 = Preprocessing(height=8, width=8, channels=3, scale=1 / 255, offset=0.0)


class FakeBundle:
    """Duck-typed Bundle: only validation_data(), read from a validation.npz like the real one."""

    def __init__(self, npz: Path):
        self.npz = npz

    def validation_data(self) -> tuple[np.ndarray, np.ndarray | None]:
        with np.load(self.npz) as z:
            return z["inputs"], (z["labels"] if "labels" in z.files else None)


def make_bundle(tmp_path: Path, n: int = 3, labels: bool = True) -> FakeBundle:
    inputs = np.stack([np.full((8, 8), 10 * (i + 1), np.uint8) for i in range(n)])
    if labels:
        np.savez(
            tmp_path / "validation.npz", inputs=inputs, labels=np.arange(7, 7 + n, dtype=np.int64)
        )
    else:
        np.savez(tmp_path / "validation.npz", inputs=inputs)
    return FakeBundle(tmp_path / "validation.npz")


def drain(source: FrameSource) -> list[Frame]:
    with source:
        return list(source)


# -- directories -----------------------------------------------------------


def test_directory_rgb_images_become_gray_8x8(tmp_path: Path) -> None:
    Image.new("RGB", (30, 20), (255, 0, 0)).save(tmp_path / "b.png")
    Image.new("RGBA", (8, 8), (0, 0, 255, 128)).save(tmp_path / "a.png")
    Image.new("P", (5, 7), 0).save(tmp_path / "c.gif")
    (tmp_path / "notes.txt").write_text("not a frame")  # ignored: not an image suffix
    source = open_source(str(tmp_path), GRAY8)
    assert isinstance(source, FrameSource)
    frames = drain(source)
    assert [f.origin for f in frames] == ["a.png", "b.png", "c.gif"]  # sorted by name
    assert [f.index for f in frames] == [0, 1, 2]
    for f in frames:
        assert f.raw.shape == (8, 8, 1) and f.raw.dtype == np.uint8
        assert f.label is None
    assert np.all(frames[1].raw == 76)  # PIL L of pure red: 299/1000 * 255
    assert np.all(frames[0].raw == 29)  # pure blue: 114/1000 * 255


def test_directory_gray_images_become_rgb_8x8(tmp_path: Path) -> None:
    Image.new("L", (5, 7), 100).save(tmp_path / "g.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "h.png")
    before = time.time_ns()
    frames = drain(open_source(str(tmp_path), RGB8))
    after = time.time_ns()
    assert [f.raw.shape for f in frames] == [(8, 8, 3)] * 2
    assert np.all(frames[0].raw == 100)
    assert (frames[1].raw == np.array([1, 2, 3], np.uint8)).all()
    assert before <= frames[0].capture_time_ns <= frames[1].capture_time_ns <= after


def test_directory_of_npy_arrays(tmp_path: Path) -> None:
    np.save(tmp_path / "0.npy", np.full((8, 8), 5, np.uint8))
    np.save(tmp_path / "1.npy", np.full((16, 16, 3), 200, np.uint8))
    source = open_source(str(tmp_path), GRAY8)
    # what a resumed run checks a log's records against: the origin a frame will have, before it is read
    assert [source.origin_of(i) for i in (-1, 0, 1, 2)] == [None, "0.npy", "1.npy", None]  # type: ignore[attr-defined]
    frames = drain(source)
    assert [f.origin for f in frames] == ["0.npy", "1.npy"]
    assert np.all(frames[0].raw == 5) and frames[0].raw.shape == (8, 8, 1)
    assert np.all(frames[1].raw == 200) and frames[1].raw.shape == (8, 8, 1)


def test_unreadable_file_raises_frame_read_error_and_iteration_resumes(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 1).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"this is not a png")
    np.save(tmp_path / "c.npy", np.zeros((8, 8), np.float32))  # not uint8: unreadable as a frame
    Image.new("L", (8, 8), 4).save(tmp_path / "d.png")
    with open_source(str(tmp_path), GRAY8) as source:
        frames = iter(source)
        assert next(frames).origin == "a.png"
        with pytest.raises(FrameReadError) as info:
            next(frames)
        err = info.value
        assert isinstance(err, ConfigError)
        assert (err.index, err.origin) == (1, "b.png")
        assert "b.png" in str(err)
        with pytest.raises(FrameReadError) as info:
            next(frames)
        assert (info.value.index, info.value.origin) == (2, "c.npy")
        assert "uint8" in str(info.value)
        last = next(frames)
        assert (last.index, last.origin) == (3, "d.png")
        assert np.all(last.raw == 4)
        with pytest.raises(StopIteration):
            next(frames)


@pytest.mark.parametrize("shape", [(0, 8), (8, 0, 3), (0, 0)])
def test_an_array_with_no_pixels_is_that_frames_error_not_a_result(tmp_path: Path, shape: tuple[int, ...]) -> None:
    """A (0, 8) uint8 array was resized into a frame and recorded as a classification."""
    np.save(tmp_path / "a.npy", np.zeros(shape, np.uint8))
    with open_source(str(tmp_path), GRAY8) as source, pytest.raises(FrameReadError) as info:
        next(iter(source))
    assert info.value.origin == "a.npy" and "an empty image: it has no pixels" in str(info.value)


def test_for_loop_resumes_after_frame_read_error(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 1).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    Image.new("L", (8, 8), 3).save(tmp_path / "c.png")
    seen: list[str] = []
    failed: list[int] = []
    with open_source(str(tmp_path), GRAY8) as source:
        while True:
            try:
                for frame in source:
                    seen.append(frame.origin)
                break
            except FrameReadError as exc:
                failed.append(exc.index)
    assert seen == ["a.png", "c.png"] and failed == [1]


def test_a_decompression_bomb_is_that_frames_read_error(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 1).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(png_declaring(30000, 30000))  # 900 Mpixel: Pillow's bomb error
    Image.new("L", (8, 8), 3).save(tmp_path / "c.png")
    with open_source(str(tmp_path), GRAY8) as source:
        frames = iter(source)
        assert next(frames).origin == "a.png"
        with pytest.raises(FrameReadError) as info:
            next(frames)
        assert (info.value.index, info.value.origin) == (1, "b.png")
        assert "too large" in str(info.value) and "900000000 pixels" in str(info.value)
        assert next(frames).origin == "c.png"


def test_a_file_pillow_cannot_identify_is_said_without_its_file_handle(tmp_path: Path) -> None:
    """The reason read 'not a readable image (cannot identify image file <_io.BufferedReader name=19>)'."""
    (tmp_path / "a.png").write_bytes(b"this is not a png")
    with open_source(str(tmp_path), GRAY8) as source, pytest.raises(FrameReadError) as info:
        next(iter(source))
    assert info.value.reason == "frame 0 (a.png): not a readable image: not an image file Pillow can read"
    assert "BufferedReader" not in str(info.value) and "name=" not in str(info.value)


def save_16bit(path: Path, pixels: np.ndarray) -> None:
    """`pixels` widened to 16 bits as image tools do (x257: 255 -> 65535)."""
    wide = pixels.astype(np.uint16) * 257
    if path.suffix == ".pgm":  # Pillow opens a 16-bit PGM as mode I, not I;16
        path.write_bytes(b"P5 %d %d 65535\n" % (wide.shape[1], wide.shape[0]) + wide.astype(">u2").tobytes())
    else:
        Image.fromarray(wide).save(path)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".pgm"])
@pytest.mark.parametrize("pre", [GRAY8, RGB8], ids=["gray", "rgb"])
def test_a_16_bit_image_gives_the_frame_of_its_8_bit_twin(tmp_path: Path, suffix: str, pre: Preprocessing) -> None:
    """Pillow's convert('L') clipped every 16-bit value over 255: each frame came out all 255 (one
    label for all of them), recorded ok."""
    rng = np.random.default_rng(1)
    twins = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(3)]
    for i, pixels in enumerate(twins):
        save_16bit(tmp_path / f"{i}{suffix}", pixels)
    with Image.open(tmp_path / f"0{suffix}") as opened:
        assert opened.mode in ("I;16", "I") and opened.mode == ("I" if suffix == ".pgm" else "I;16")
    frames = drain(open_source(str(tmp_path), pre))
    assert len(frames) == 3
    for frame, pixels in zip(frames, twins, strict=True):
        assert frame.raw.shape == (8, 8, pre.channels)
        assert (frame.raw == pixels[..., None]).all()


def test_16_bit_values_are_rounded_to_8_bits() -> None:
    wide = np.array([[0, 128, 129, 385, 386, 32896, 65534, 65535]], np.uint16)
    for arr in (wide, wide.astype(">u2")):  # a .npy written on a big-endian machine too
        assert images.fit_frame(arr, Preprocessing(height=1, width=8, channels=1, scale=1.0, offset=0.0))[0, :, 0].tolist() \
            == [0, 0, 1, 1, 2, 128, 255, 255]


@pytest.mark.parametrize(("make", "said"), [
    (lambda p: Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(p),
     "an image of floating-point pixels (Pillow mode F): the range of its values cannot be known"),
    (lambda p: Image.fromarray(np.full((8, 8), 70000, np.int32)).save(p),
     "an image of 32-bit integer pixels (Pillow mode I): the range of its values cannot be known"),
], ids=["float", "int32"])
def test_an_image_whose_range_cannot_be_known_is_that_frames_error(tmp_path: Path, make: Any, said: str) -> None:
    """A 0..1 float TIFF was clipped to black and classified, recorded ok."""
    make(tmp_path / "a.tif")
    Image.new("L", (8, 8), 3).save(tmp_path / "b.png")
    with open_source(str(tmp_path), GRAY8) as source:
        frames = iter(source)
        with pytest.raises(FrameReadError) as info:
            next(frames)
        assert info.value.origin == "a.tif"
        assert said in info.value.reason and info.value.reason.endswith("; convert it to an 8-bit image")
        assert np.all(next(frames).raw == 3)


def test_a_uint16_npy_is_scaled_and_other_wide_arrays_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    np.save(tmp_path / "0.npy", pixels.astype(np.uint16) * 257)
    np.save(tmp_path / "1.npy", np.full((8, 8), 0.5, np.float32))
    np.save(tmp_path / "2.npy", np.full((8, 8), 7, np.int32))
    np.save(tmp_path / "3.npy", pixels)  # uint8 as before: unchanged
    with open_source(str(tmp_path), GRAY8) as source:
        frames = iter(source)
        assert (next(frames).raw[..., 0] == pixels).all()
        for dtype in ("float32", "int32"):
            with pytest.raises(FrameReadError) as info:
                next(frames)
            assert (f"the range of a {dtype} array's values cannot be known: convert it to an 8-bit image (uint8)"
                    in info.value.reason)
        assert (next(frames).raw[..., 0] == pixels).all()


def npy_declaring(path: Path, shape: tuple[int, ...]) -> None:
    """A uint8 .npy of `shape` whose data is a hole: a few KB on disk however large it says it is."""
    with path.open("wb") as fh:
        npy_format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
        fh.truncate(fh.tell() + int(np.prod(shape)))


def test_a_npy_declaring_more_pixels_than_an_image_may_have_is_refused_before_it_is_loaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse (20000, 20000, 3) .npy was loaded (3.2 GB of memory) and recorded ok, where an image
    of that size is refused as a decompression bomb."""
    npy_declaring(tmp_path / "a.npy", (20000, 20000, 3))
    np.save(tmp_path / "b.npy", np.full((8, 8), 4, np.uint8))
    loaded: list[object] = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
    with open_source(str(tmp_path), GRAY8) as source:
        frames = iter(source)
        with pytest.raises(FrameReadError) as info:
            next(frames)
        assert info.value.reason == (
            "frame 0 (a.npy): too large: its header says a uint8 array of shape (20000, 20000, 3), 400000000 pixels, "
            f"over the limit of {2 * Image.MAX_IMAGE_PIXELS} pixels a frame may have (Pillow's "  # type: ignore[operator]
            "decompression-bomb limit, which images have too)")
        assert loaded == []
        assert np.all(next(frames).raw == 4)


def test_the_npy_pixel_limit_follows_pillows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # refused above 2000 pixels, as images are
    np.save(tmp_path / "a.npy", np.zeros((40, 50, 3), np.uint8))  # 2000: allowed
    np.save(tmp_path / "b.npy", np.zeros((40, 51, 3), np.uint8))
    Image.new("L", (51, 40)).save(tmp_path / "c.png")
    with open_source(str(tmp_path), GRAY8) as source:
        frames = iter(source)
        assert next(frames).origin == "a.npy"
        for name in ("b.npy", "c.png"):
            with pytest.raises(FrameReadError) as info:
                next(frames)
            assert info.value.origin == name and "too large" in info.value.reason and "2000 pixels" in info.value.reason


def drain_within(source: FrameSource, timeout_s: float = 30.0) -> list[Frame | FrameReadError]:
    """Every frame and read error of `source`, from a thread: a read that blocks fails the test."""
    out: list[Frame | FrameReadError] = []

    def run() -> None:
        with source:
            frames = iter(source)
            while True:
                try:
                    out.append(next(frames))
                except StopIteration:
                    return
                except FrameReadError as exc:
                    out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), f"reading the source blocked; read so far: {out}"
    return out


def test_entries_that_are_not_regular_files_are_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Image.new("L", (8, 8), 1).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")  # open() of a pipe waits for a writer: it would hang the agent
    (tmp_path / "c.png").mkdir()
    (tmp_path / "d.png").symlink_to(tmp_path / "a.png")  # a link to a file is that file
    (tmp_path / "e.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "f.png").symlink_to(tmp_path / "f.png")  # a loop was "a broken symlink"
    out = drain_within(open_source(str(tmp_path), GRAY8))
    assert [(f.index, f.origin) for f in out if isinstance(f, Frame)] == [(0, "a.png"), (1, "d.png")], out
    (warning,) = [r.getMessage() for r in caplog.records if "not regular files" in r.getMessage()]
    assert "4 entries left out" in warning and "b.png (a named pipe)" in warning and "c.png (a directory)" in warning
    assert "e.png (a broken symlink)" in warning and "f.png (a symlink loop)" in warning


def test_a_file_swapped_for_a_named_pipe_after_listing_is_that_frames_error(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        Image.new("L", (8, 8), 1).save(tmp_path / name)
    source = open_source(str(tmp_path), GRAY8)
    (tmp_path / "b.png").unlink()
    os.mkfifo(tmp_path / "b.png")
    out = drain_within(source)
    assert [type(f).__name__ for f in out] == ["Frame", "FrameReadError", "Frame"], out
    assert "is a named pipe, not a regular file" in str(out[1])


def test_a_directory_of_only_pipes_says_so(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "a.png")
    with pytest.raises(ConfigError, match="in it; 1 entry named like one is not a regular file"):
        open_source(str(tmp_path), GRAY8)


def test_empty_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no image files"):
        open_source(str(tmp_path), GRAY8)


def test_close_is_idempotent_and_ends_iteration(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("L", (8, 8), i).save(tmp_path / f"{i}.png")
    source = open_source(str(tmp_path), GRAY8)
    assert next(iter(source)).index == 0
    source.close()
    source.close()
    assert list(source) == []


# -- synthetic -----------------------------------------------------------


def test_synthetic_cycles_validation_inputs_with_labels(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, n=3)
    frames = drain(open_source("synthetic:7", GRAY8, bundle=bundle))  # type: ignore[arg-type]
    assert [f.index for f in frames] == list(range(7))
    assert [f.label for f in frames] == [7, 8, 9, 7, 8, 9, 7]
    assert [f.origin for f in frames] == [f"synthetic#{i}" for i in range(7)]
    for f in frames:
        assert f.raw.shape == (8, 8, 1) and f.raw.dtype == np.uint8
        assert np.all(f.raw == 10 * (f.index % 3 + 1))


def test_synthetic_frames_do_not_share_memory_with_the_cycle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, n=2)
    with open_source("synthetic:3", GRAY8, bundle=bundle) as source:  # type: ignore[arg-type]
        frames = iter(source)
        first = next(frames)
        first.raw[...] = 255  # a consumer scribbling on its frame
        next(frames)
        third = next(frames)
    assert np.all(third.raw == 10)


def test_synthetic_without_labels_and_resized(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, n=2, labels=False)
    pre = Preprocessing(height=4, width=6, channels=3, scale=1.0, offset=0.0)
    frames = drain(open_source("synthetic:2", pre, bundle=bundle))  # type: ignore[arg-type]
    assert [f.label for f in frames] == [None, None]
    assert frames[0].raw.shape == (4, 6, 3) and np.all(frames[0].raw == 10)


def test_synthetic_needs_a_bundle() -> None:
    with pytest.raises(ConfigError, match="synthetic:3") as info:
        open_source("synthetic:3", GRAY8)
    assert "bundle" in str(info.value)


# -- pacing -----------------------------------------------------------


def test_fps_paces_frames(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    assert not open_source("synthetic:5", GRAY8, bundle=bundle).paced  # type: ignore[arg-type]
    source = open_source("synthetic:5", GRAY8, bundle=bundle, fps=50)  # type: ignore[arg-type]
    assert "50 fps" in source.description and source.paced
    t0 = time.monotonic()
    frames = drain(source)
    elapsed = time.monotonic() - t0
    assert len(frames) == 5
    assert elapsed >= 4 / 50 - 1e-3  # frame 4 is due 80 ms after frame 0; lower bound only
    gaps = np.diff([f.capture_time_ns for f in frames])
    assert (gaps >= 0).all()


def test_a_late_read_frame_keeps_its_due_time_as_capture_time(tmp_path: Path) -> None:
    """A camera does not wait for the agent: frame i exists at start + i/fps, however late it is read."""
    bundle = make_bundle(tmp_path)
    source = open_source("synthetic:4", GRAY8, bundle=bundle, fps=20)  # type: ignore[arg-type]
    it = iter(source)
    first = next(it)
    time.sleep(0.3)  # a busy agent: frames 1..3 were due at 50, 100, 150 ms
    rest = [next(it) for _ in range(3)]
    source.close()
    offsets_ms = [(f.capture_time_ns - first.capture_time_ns) / 1e6 for f in rest]
    assert offsets_ms == pytest.approx([50, 100, 150], abs=2), offsets_ms
    assert time.time_ns() - rest[-1].capture_time_ns > 0.14e9  # the wait is in the frame's age


def test_a_paced_wait_ends_when_the_reader_stops(tmp_path: Path) -> None:
    """At --fps 0.01 the next frame is due in 100 s, and the agent heard SIGTERM only then (94 s
    late, after running that frame): the wait now ends the stream as soon as the stop is set."""
    import threading

    bundle = make_bundle(tmp_path)
    source = open_source("synthetic:5", GRAY8, bundle=bundle, fps=0.01)  # type: ignore[arg-type]
    stop = threading.Event()
    source.stop_when(stop.is_set)
    it = iter(source)
    next(it)  # due at once
    waiting, ended = threading.Event(), threading.Event()
    got: list[object] = []

    def read_second() -> None:
        waiting.set()
        try:
            got.append(next(it))
        except StopIteration:
            ended.set()

    reader = threading.Thread(target=read_second, daemon=True)
    reader.start()
    assert waiting.wait(5)
    stop.set()
    assert ended.wait(5), "the paced wait did not end at the stop"
    assert got == []  # no frame handed out after the stop
    with pytest.raises(StopIteration):  # and the stream stays ended
        next(it)


def test_no_fps_means_no_pacing_delay_floor(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    frames = drain(open_source("synthetic:50", GRAY8, bundle=bundle))  # type: ignore[arg-type]
    assert len(frames) == 50


@pytest.mark.parametrize("fps", [0, -1, -0.5, float("nan"), float("inf")])
def test_bad_fps_is_a_config_error(tmp_path: Path, fps: float) -> None:
    bundle = make_bundle(tmp_path)
    with pytest.raises(ConfigError) as info:
        open_source("synthetic:2", GRAY8, bundle=bundle, fps=fps)  # type: ignore[arg-type]
    assert info.value.key == "fps"
    assert show_value(fps) in str(info.value)


# -- bad specs -----------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "synthetic:0",
        "synthetic:x",
        "synthetic:",
        "synthetic:-2",
        "camera:-1",
        "camera:x",
        "camera:",
        "camera:1.5",
        "camera:2147483648",  # past a C int: cv2.VideoCapture raised a traceback
        "camera:99999999999999999999",
        "synthetic:1000000001",  # past a billion frames: any count was taken
        "synthetic:\uff15",  # a full-width 5: the pattern took it, as int() does, for 5 frames
        "camera:\u0661",  # an Arabic-Indic 1
        "webcam:0",
        "rtsp://example.invalid/stream",
        "definitely/not/here",
        "missing_clip.mp4",
    ],
)
def test_bad_spec_is_a_config_error_naming_it(tmp_path: Path, spec: str) -> None:
    bundle = make_bundle(tmp_path)
    with pytest.raises(ConfigError) as info:
        open_source(spec, GRAY8, bundle=bundle, key="--source")  # type: ignore[arg-type]
    err = info.value
    assert err.key == "--source"
    assert err.value == spec
    if spec:  # an empty value is not shown: "--source: empty; ..."
        assert f"--source = {show_value(spec)}:" in str(err)
        assert "synthetic:N" in err.reason and "camera:N" in err.reason  # lists the accepted forms
    else:
        assert str(err).startswith("--source: ")


def test_synthetic_frames_are_bounded_at_a_billion(tmp_path: Path) -> None:
    """Any count was taken, and one of 4300 digits or more was a ValueError traceback from int():
    refused past a billion, the spec shown in a few digits."""
    from edge_node.source_spec import MAX_SYNTHETIC_FRAMES

    bundle = make_bundle(tmp_path)
    assert MAX_SYNTHETIC_FRAMES == 10**9
    with pytest.raises(ConfigError, match=r'^--source = "synthetic:1000000001": the number of synthetic frames '
                                          r"must be at most 1000000000 \(a billion: over three years at 10 fps\); "):
        open_source("synthetic:1000000001", GRAY8, bundle=bundle, key="--source")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        open_source("synthetic:" + "9" * 5000, GRAY8, bundle=bundle, key="--source")  # type: ignore[arg-type]
    assert str(info.value).startswith('--source = "synthetic:99999999... (5000 digits)": the number of synthetic '
                                      "frames must be at most 1000000000")
    with pytest.raises(ConfigError, match=r"camera number must be at most 2147483647"):
        open_source("camera:" + "9" * 5000, GRAY8, key="--source")  # type: ignore[arg-type]
    assert open_source("synthetic:1000000000", GRAY8, bundle=bundle).description.startswith("synthetic:1000000000 ")
    assert open_source("synthetic:007", GRAY8, bundle=bundle).description.startswith("synthetic:7 ")


def test_single_image_file_is_not_a_source(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 1).save(tmp_path / "one.png")
    with pytest.raises(ConfigError, match="one.png"):
        open_source(str(tmp_path / "one.png"), GRAY8)


# -- cameras -----------------------------------------------------------


def test_camera_frames_bgr_to_rgb_then_error_then_end(monkeypatch: pytest.MonkeyPatch) -> None:
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 2] = 250  # red in BGR order
    cv2 = fake_cv2([bgr, bgr])
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    source = open_source("camera:2", RGB8, fps=100)
    assert cv2.captures[0].what == 2 and source.paced
    camera = open_source("camera:3", RGB8)
    assert camera.paced  # a camera paces itself, fps or not
    camera.close()
    frames = iter(source)
    got = [next(frames), next(frames)]
    assert [f.origin for f in got] == ["camera:2#0", "camera:2#1"]
    assert (got[0].raw[..., 0] == 250).all() and (got[0].raw[..., 1:] == 0).all()
    with pytest.raises(FrameReadError, match="stopped delivering") as info:
        next(frames)
    assert info.value.index == 2
    with pytest.raises(StopIteration):  # a dead camera ends the stream instead of failing forever
        next(frames)
    source.close()
    source.close()
    assert cv2.captures[0].released == 1


def camera_that_comes_back(sessions: list[list[np.ndarray] | None]) -> Any:
    """A cv2 whose VideoCapture number i opens when sessions[i] is a list (its frames, then a
    failed read), and does not when it is None (unplugged); past the list, none opens."""
    mod = fake_cv2([])
    opened_at: list[int] = []  # monotonic ns of each successful open after the first
    plain = mod.VideoCapture

    class VideoCapture(plain):  # type: ignore[misc, valid-type]
        def __init__(self, what: object) -> None:
            super().__init__(what)
            i = len(mod.captures) - 1
            frames = sessions[i] if i < len(sessions) else None
            self.opens, self.left = frames is not None, list(frames or [])
            if self.opens and i:
                opened_at.append(time.monotonic_ns())

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return self.opens

    mod.VideoCapture = VideoCapture
    mod.opened_at = opened_at
    return mod


def test_a_camera_that_stops_delivering_is_opened_again_and_numbering_goes_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A USB camera that reset (unplugged, a V4L2 select() timeout) ended the run: the agent
    lost its frames until systemd had restarted it. Now its failed frame gets its record and the
    camera is opened again until it delivers; frames go on numbered after it, and are due from
    the moment it is back: stamped with the old schedule, every later latency counted the gap."""
    monkeypatch.setattr(video_sources, "REOPEN_EVERY_S", 0.05)
    frame = np.zeros((8, 8, 3), np.uint8)
    cv2 = camera_that_comes_back([[frame, frame], None, None, [frame]])
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    with caplog.at_level(logging.INFO, logger="edge_node.sources"):
        with open_source("camera:1", GRAY8, fps=100, camera_reopen_s=30) as source:
            frames = iter(source)
            got = [next(frames).index, next(frames).index]
            with pytest.raises(FrameReadError, match="camera 1 stopped delivering frames; opening it again") as info:
                next(frames)
            assert info.value.index == 2
            back = next(frames)  # opened on the third try
            with pytest.raises(FrameReadError):
                next(frames)
    assert got == [0, 1] and back.index == 3 and back.origin == "camera:1#3"
    assert len(cv2.captures) == 4 and all(c.released == 1 for c in cv2.captures), [c.released for c in cv2.captures]
    assert back.capture_mono_ns >= cv2.opened_at[0], "stamped with a due time from before the gap"
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("camera 1 ")]
    assert said[0] == ("WARNING", "camera 1 stopped delivering frames at frame 2; opening it again for up to 30 s "
                                  "(camera_reopen_s)"), said
    assert said[1][0] == "INFO" and said[1][1].startswith("camera 1 delivers frames again after "), said
    assert said[1][1].endswith(" s (from frame 3)"), said
    assert said[2] == ("WARNING", "camera 1 stopped delivering frames at frame 4; opening it again for up to 30 s "
                                  "(camera_reopen_s)"), said


def test_a_camera_that_does_not_come_back_ends_its_stream_within_camera_reopen_s(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The window counts from the last frame delivered: a camera that opens and fails again at
    once (half there) does not restart it, it ends the stream as one that never opens does."""
    monkeypatch.setattr(video_sources, "REOPEN_EVERY_S", 0.02)
    frame = np.zeros((8, 8, 3), np.uint8)
    for sessions in ([[frame]], [[frame]] + [[]] * 1000):
        cv2 = camera_that_comes_back(sessions)
        monkeypatch.setitem(sys.modules, "cv2", cv2)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edge_node.sources"):
            with open_source("camera:0", GRAY8, camera_reopen_s=0.3) as source:
                frames = iter(source)
                assert next(frames).index == 0
                failed = []
                while True:
                    try:
                        next(frames)
                    except FrameReadError as err:
                        failed.append(err.index)
                    except StopIteration:
                        break
        assert failed == [1], "one failed frame for the outage, not one per attempt"
        assert 3 < len(cv2.captures) < 40, "opened again far more often than every REOPEN_EVERY_S"
        assert caplog.records[-1].getMessage() == ("camera 0 did not deliver again within camera_reopen_s = 0.3 s; "
                                                   "the stream ends here")
        assert all(c.released == 1 for c in cv2.captures)


def test_a_camera_being_opened_again_gives_up_when_the_reader_stops(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM (or a fatal error) while the camera is away: the stream ends at the next try, not
    after camera_reopen_s (an hour here), and without saying the camera did not come back."""
    monkeypatch.setattr(video_sources, "REOPEN_EVERY_S", 0.01)
    cv2 = camera_that_comes_back([[np.zeros((8, 8, 3), np.uint8)]])
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    asked = itertools.count()
    with caplog.at_level(logging.WARNING, logger="edge_node.sources"):
        with open_source("camera:0", GRAY8, camera_reopen_s=3600) as source:
            source.stop_when(lambda: next(asked) >= 20)  # the reader stops while the camera is tried again
            frames = iter(source)
            next(frames)
            with pytest.raises(FrameReadError):
                next(frames)
            with pytest.raises(StopIteration):
                next(frames)
    assert 2 < len(cv2.captures) < 20
    assert not [r for r in caplog.records if "did not deliver again" in r.getMessage()]


def test_camera_gray_preprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", fake_cv2([np.full((8, 8, 3), 90, np.uint8)]))
    with open_source("camera:0", GRAY8) as source:
        frame = next(iter(source))
    assert frame.raw.shape == (8, 8, 1) and np.all(frame.raw == 90)


def test_a_camera_that_does_not_open_says_why_from_its_device_node(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """"no such device, busy, or no permission" left the user to find out which; /dev/videoN as
    this user sees it tells."""
    real = Path
    node = tmp_path / "video5"
    node.write_text("")
    monkeypatch.setattr(video_sources, "Path", lambda p: node if p == "/dev/video5" else real(p))
    assert video_sources.why_camera_did_not_open(5).endswith("may be held by another program (a running agent?) "
                                                             "or not be a capture device")
    monkeypatch.setattr(video_sources.os, "access", lambda p, mode: False)
    assert video_sources.why_camera_did_not_open(5) == (f"this user may not open {node}: add it to the video group "
                                                        "(sudo usermod -aG video USER)")
    assert video_sources.why_camera_did_not_open(6).startswith("there is no /dev/video6: is the camera plugged in?")


def test_camera_that_does_not_open(monkeypatch: pytest.MonkeyPatch) -> None:
    cv2 = fake_cv2([], opens=False)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    with pytest.raises(ConfigError, match="camera 3 did not open") as info:
        open_source("camera:3", GRAY8)
    assert info.value.value == "camera:3"
    assert cv2.captures[0].released == 1


def test_camera_and_video_without_opencv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` fail
    with pytest.raises(BackendUnavailableError, match=r"pip install '\.\[video\]' from a splitpoint checkout"):
        open_source("camera:0", GRAY8)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 16)
    with pytest.raises(BackendUnavailableError, match="opencv-python-headless"):
        open_source(str(clip), GRAY8)


def test_real_camera_0_without_a_camera() -> None:
    try:
        import cv2  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match=r"pip install '\.\[video\]' from a splitpoint checkout"):
            open_source("camera:0", GRAY8)
        return
    if not sys.platform.startswith("linux") or glob.glob("/dev/video*"):
        pytest.skip("a camera may be present (or opening one may prompt and hang) on this machine")
    with pytest.raises(ConfigError, match="camera 0 did not open"):
        open_source("camera:0", GRAY8)


# -- video files -----------------------------------------------------------


def write_video(
    path: Path, colours_bgr: list[tuple[int, int, int]], size: tuple[int, int] = (32, 24)
) -> None:
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, size)
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG")
    for colour in colours_bgr:
        writer.write(np.full((size[1], size[0], 3), colour, np.uint8))
    writer.release()


def test_video_file_decoded_rgb(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0)] * 2  # BGR: red, green, blue
    write_video(clip, colours)
    source = open_source(str(clip), RGB8)
    assert "clip.avi" in source.description
    frames = drain(source)
    assert [f.index for f in frames] == list(range(6))
    assert [f.origin for f in frames] == [f"clip.avi#{i}" for i in range(6)]
    for f, bgr in zip(frames, colours, strict=True):
        assert f.raw.shape == (8, 8, 3) and f.raw.dtype == np.uint8 and f.label is None
        rgb = np.array(bgr[::-1], dtype=int)
        assert np.abs(f.raw.astype(int).mean(axis=(0, 1)) - rgb).max() < 20  # MJPG is lossy


def test_video_file_gray_and_unusual_suffix(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_video(clip, [(200, 200, 200)] * 3)
    # an existing file that is not an image is tried as a video, whatever its suffix
    renamed = clip.rename(tmp_path / "recording.bin")
    frames = drain(open_source(str(renamed), GRAY8))
    assert len(frames) == 3
    assert frames[0].raw.shape == (8, 8, 1)
    assert abs(int(frames[0].raw.mean()) - 200) < 20


def test_video_close_mid_stream(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_video(clip, [(0, 0, 0)] * 5)
    source = open_source(str(clip), GRAY8)
    frames = iter(source)
    next(frames)
    source.close()
    source.close()
    assert list(source) == []


def test_file_opencv_cannot_open_is_a_config_error(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, not a video")
    with pytest.raises(ConfigError, match="notes.txt") as info:
        open_source(str(junk), GRAY8)
    assert "cannot open it as a video" in info.value.reason


# -- the source image's size (a detector's boxes are mapped back to it) ------


def test_every_kind_of_source_keeps_the_size_it_read_before_fitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    Image.new("RGB", (30, 20), (255, 0, 0)).save(frames_dir / "a.png")  # larger, wide
    Image.new("L", (5, 7), 0).save(frames_dir / "b.png")  # smaller, tall
    np.save(frames_dir / "c.npy", np.zeros((3, 11), np.uint8))
    np.save(frames_dir / "d.npy", np.zeros((8, 8, 1), np.uint8))  # already the input size
    got = drain(open_source(str(frames_dir), GRAY8))
    assert [f.source_size for f in got] == [(30, 20), (5, 7), (11, 3), (8, 8)]
    assert all(f.raw.shape == (8, 8, 1) for f in got)

    # synthetic: the validation inputs' own size, not the preprocessing's
    pre = Preprocessing(height=4, width=6, channels=1, scale=1.0, offset=0.0)
    synth = drain(open_source("synthetic:2", pre, bundle=make_bundle(tmp_path)))  # type: ignore[arg-type]
    assert [f.source_size for f in synth] == [(8, 8), (8, 8)] and synth[0].raw.shape == (4, 6, 1)

    # camera: the capture's size
    monkeypatch.setitem(sys.modules, "cv2", fake_cv2([np.zeros((48, 64, 3), np.uint8)]))
    with open_source("camera:0", GRAY8) as source:
        frame = next(iter(source))
    assert frame.source_size == (64, 48) and frame.raw.shape == (8, 8, 1)

    # a Frame made without a size (older callers, tests) reports its raw size
    assert Frame(0, np.zeros((4, 6, 1), np.uint8), None, "x", 0).source_size == (6, 4)


def test_video_frames_keep_the_decoded_size(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_video(clip, [(10, 10, 10)] * 2, size=(40, 24))
    frames = drain(open_source(str(clip), GRAY8))
    assert [f.source_size for f in frames] == [(40, 24), (40, 24)]
