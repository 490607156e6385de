"""A head or tail checked against the manifest's shapes when it is loaded.

The sha256 in the manifest says a file is the one the manifest lists, not that it is the model
the manifest describes: a tail swapped for another split's, its digest rewritten, loaded and
warmed, then failed every frame of its split (and TensorFlow keeps a lock when a tf.function
is called with the wrong shapes, so a second tail worker hung on it for good); a head swapped
for another split's failed every frame on the agent. So every runner's inputs and outputs are
compared with the manifest's at load: the number of tensors and each shape, the batch
dimension aside (a tail's is None, a head's 1). A mismatch is a BundleError naming the file,
the split and both shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

from splitpoint.bundle import Bundle, Manifest, TensorSpec
from splitpoint.errors import BundleError

Shape = Sequence[int | None]

_AGAIN = "the file belongs to another split or bundle; partition again"


def _show(shapes: Sequence[Shape]) -> str:
    """(1, 8, 8, 16) for one tensor; [(1, 4), (1, 2)] for several; no tensor: []."""
    shown = [str(tuple(s)) for s in shapes]
    return shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"


def _same(got: Sequence[Shape], want: Sequence[Shape]) -> bool:
    return len(got) == len(want) and all(tuple(g)[1:] == tuple(w)[1:] and len(g) == len(w)
                                         for g, w in zip(got, want, strict=True))


def _check(file: str, verb: str, got: Sequence[Shape], what: str, want: Sequence[TensorSpec]) -> None:
    shapes = [t.shape for t in want]
    if not _same(got, shapes):
        raise BundleError(f"{file} {verb} {_show(got)}, the manifest's {what} {_show(shapes)}: {_AGAIN}")


def check_tail(file: str, manifest: Manifest, split: int, inputs: Sequence[Shape], outputs: Sequence[Shape]) -> None:
    """The tail of `split` (its inputs' and outputs' shapes, batch first) against the manifest:
    it takes the split's cut tensors and makes the model's outputs, in order."""
    _check(file, "takes", inputs, f"split {split} cuts", manifest.split(split).cut)
    _check(file, "outputs", outputs, "model outputs", manifest.outputs)


def check_head(file: str, manifest: Manifest, split: int, inputs: Sequence[Shape], outputs: Sequence[Shape]) -> None:
    """The head of `split` against the manifest: it takes the model's input and makes the split's
    cut tensors (at k = K, the model's outputs), in order."""
    _check(file, "takes", inputs, "model input is", [manifest.input_wire])
    if split == manifest.num_layers:
        _check(file, "outputs", outputs, f"split {split} (the whole model) outputs", manifest.outputs)
    else:
        _check(file, "outputs", outputs, f"split {split} cuts", manifest.split(split).cut)


def check_head_files(bundle: Bundle) -> int:
    """Every head file of `bundle`, CPU and Edge TPU, against the manifest's shapes, read from
    the files without running them (inspect, doctor: a head swapped for another split's, its
    digest rewritten, matched its sha256 and was 'ok' there until the agent refused it). The
    number of files checked; a mismatch or an unreadable head is a BundleError, no LiteRT a
    BackendUnavailableError."""
    from splitpoint.runtime.litert import head_file_shapes

    checked = 0
    for spec in bundle.manifest.splits:
        for head in (spec.head, spec.edgetpu_head):
            if head is None:
                continue
            inputs, outputs = head_file_shapes(bundle.path(head))
            check_head(head.path, bundle.manifest, spec.split, inputs, outputs)
            checked += 1
    return checked
