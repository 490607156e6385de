"""A detector of one's own: its decoder settings, from a TOML/JSON file and flags, checked
against the model before anything is written.

`splitpoint partition my_detector.keras -o B --detection decoder.toml` reads

    kind = "centernet"            # the only kind so far (splitpoint/detection.py)
    heatmap = 0                   # which model output is the class heatmap ...
    size = 1                      # ... and which the box size map
    stride = 4                    # input pixels per heatmap cell
    box_format = "size_pixels"    # or "size_cells", "size_normalized"
    score_threshold = 0.3
    nms_iou = 0.5
    max_detections = 20           # 1 to 10000 (detection.MAX_DETECTIONS)
    class_agnostic_nms = false
    labels = ["car", "person", "cow"]   # one per heatmap class, in class order

(top level, or under a [detection] table, with `labels` in it or beside it; a .json file
holds the same object). The
flags --detection-kind, --score-threshold, --nms-iou, --max-detections, --box-format
and --labels override the file, or make a detector without one. The block goes into
the manifest's `detection`, the labels into `model.labels`.

Every bad value is a ConfigError naming where it came from (the file's key or the
flag), the value and why: the CLI exits 2 with that line.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any

from splitpoint import detection
from splitpoint.errors import ConfigError
from splitpoint.files import open_regular, parse_json

#: the partition flags that set a detection key (argparse dest -> key)
FLAG_KEYS = {"detection_kind": "kind", "score_threshold": "score_threshold", "nms_iou": "nms_iou",
             "max_detections": "max_detections", "box_format": "box_format"}
FLAG_NAMES = {key: "--" + dest.replace("_", "-") for dest, key in FLAG_KEYS.items()}
#: --labels VALUE is a file's name, never one label, when it ends so (or holds a /): a missing
#: labels.txt is "no such file", not a model with the one class "labels.txt"
LABEL_FILE_SUFFIXES = (".txt", ".names", ".labels")


def _text(key: str, path: str) -> str:
    """A settings or labels file's text (a UTF-8 byte-order mark, as Windows editors write, dropped);
    a directory, a named pipe or a device is named as such (files.open_regular), never read."""
    try:
        with os.fdopen(open_regular(path, key), "rb") as fh:
            return fh.read().decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(key, path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(key, path, f"cannot read it: {exc}") from None


def read_file(path: str) -> dict[str, Any]:
    """The decoder settings in a .toml or .json file (keys as in the module docstring)."""
    key = "--detection"
    text = _text(key, path)
    is_json = Path(path).suffix.lower() == ".json"
    try:
        data = parse_json(text) if is_json else tomllib.loads(text)
    except RecursionError:  # tomllib's parser recurses (parse_json says so for JSON)
        raise ConfigError(key, path, "not valid TOML (nested too deeply to be read)") from None
    except ValueError as exc:  # JSONDecodeError, TOMLDecodeError, JSON nested too deeply
        kind = "JSON" if is_json else "TOML (give a .json file for JSON)"
        raise ConfigError(key, path, f"not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(key, path, "must hold a table (TOML) or an object (JSON) of decoder settings")
    table = data.get("detection")
    if isinstance(table, dict):  # the keys under [detection]; `labels` may sit beside the table
        outside = sorted(set(data) - {"detection", "labels"})
        if outside:
            raise ConfigError(f"{key} {path}: {outside[0]}", data[outside[0]],
                              "is outside the [detection] table; put every setting in it (labels may be either side)")
        if "labels" in data and "labels" in table:
            raise ConfigError(f"{key} {path}: labels", data["labels"], "given both in and beside [detection]; give it once")
        data = dict(table, **{k: v for k, v in data.items() if k == "labels"})
    return data


def parse_labels(text: str) -> list[str]:
    """--labels: a file with one label per line, or labels separated by commas."""
    if not text.strip():  # "" is the current directory to Path: "no such file" named nothing given
        raise ConfigError("--labels", text, "give a file with one label per line, or labels separated by commas")
    p = Path(text)
    if p.exists() or ("," not in text and (p.suffix.lower() in LABEL_FILE_SUFFIXES or "/" in text)):
        labels = [line.strip() for line in _text("--labels", text).splitlines() if line.strip()]
        if not labels:
            raise ConfigError("--labels", text, "the file holds no labels; give one label per line")
    else:
        labels = [item.strip() for item in text.split(",")]
    if not labels or any(not label for label in labels):
        raise ConfigError("--labels", text, "give a file with one label per line or labels separated by commas, "
                                            "none of them empty")
    check_distinct("--labels", text, labels)
    return labels


def check_distinct(key: str, value: Any, labels: list[str]) -> None:
    """One class, one label: two classes of one name would be counted and shown as one."""
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ConfigError(key, value, f"{label!r} is given twice; each class needs a label of its own")
        seen.add(label)


def build(file: str | None, flags: dict[str, Any], labels: list[str] | None, base: dict | None = None
          ) -> tuple[dict | None, list[str] | None, dict[str, str]]:
    """(detection block or None, labels or None, origins) from --detection FILE, the individual
    flags (dest -> value, None when not given) and --labels; ConfigError naming the bad value.
    `origins` names where each key and the labels came from, for check_against_model. Without a
    file the flags adjust `base` (a built-in detector's own block) when given, else the defaults."""
    given = {key: flags[dest] for dest, key in FLAG_KEYS.items() if flags.get(dest) is not None}
    where = {key: f"{key} (the default; a --detection file sets it)" for key in detection.DEFAULTS}
    where["labels"] = "--labels"
    settings: dict[str, Any] = dict(base or {}) if file is None else {}
    if file is not None:
        data = read_file(file)
        file_labels = data.pop("labels", None)
        if file_labels is not None:
            if (not isinstance(file_labels, list) or not file_labels
                    or not all(isinstance(x, str) and x.strip() for x in file_labels)):
                raise ConfigError(f"--detection {file}: labels", file_labels, "must be a list of non-empty strings")
            check_distinct(f"--detection {file}: labels", file_labels, file_labels)
            if labels is None:
                labels, where["labels"] = [str(x) for x in file_labels], f"--detection {file}: labels"
        settings.update(data)
        where.update({k: f"--detection {file}: {k}" for k in [*detection.DEFAULTS, *data]})  # given or left out
    where.update({key: FLAG_NAMES[key] for key in given})
    if file is None and not given:
        return None, labels, where
    settings.update(given)
    try:
        return detection.config(**settings), labels, where
    except detection.DetectionConfigError as exc:
        raise ConfigError(where.get(exc.key, f"detection.{exc.key}"), exc.value, exc.reason) from None


def check_against_model(cfg: dict, labels: list[str] | None, output_shapes: list[tuple],
                        input_hw: tuple[int, int], origins: dict[str, str] | None = None) -> None:
    """The block must fit the model: its heatmap and size outputs exist and are maps of one grid,
    `stride` times that grid is the input, and there is one label per heatmap class. A ConfigError
    names the key as `origins` says where it came from (build's), else as `detection.KEY`."""
    def name(key: str) -> str:
        return (origins or {}).get(key, "labels" if key == "labels" else f"detection.{key}")

    n = len(output_shapes)
    for key in ("heatmap", "size"):
        if cfg[key] >= n:
            raise ConfigError(name(key), cfg[key], f"the model has {n} output(s), numbered 0 to {n - 1}")
    heat, size = (tuple(output_shapes[cfg[k]]) for k in ("heatmap", "size"))
    if len(heat) != 4:
        raise ConfigError(name("heatmap"), cfg["heatmap"],
                          f"output {cfg['heatmap']} has shape {list(heat)}, not a map (N, H, W, classes)")
    if len(size) != 4 or size[-1] != 2 or size[1:3] != heat[1:3]:
        raise ConfigError(name("size"), cfg["size"],
                          f"output {cfg['size']} has shape {list(size)}; the size map must be (N, {heat[1]}, "
                          f"{heat[2]}, 2) like the heatmap's grid")
    grid = (heat[1] * cfg["stride"], heat[2] * cfg["stride"])
    if grid != tuple(input_hw):
        raise ConfigError(name("stride"), cfg["stride"],
                          f"a {heat[1]}x{heat[2]} heatmap at stride {cfg['stride']} covers {grid[0]}x{grid[1]} "
                          f"pixels, but the input is {input_hw[0]}x{input_hw[1]}")
    if labels is not None and len(labels) != heat[3]:
        raise ConfigError(name("labels"), labels, f"the heatmap has {heat[3]} classes; give one label per class")


def check_outputs(name: str, shapes: list[tuple], input_hw: tuple[int, int], detection: dict | None,
                  labels: list[str] | None, origins: dict[str, str] | None) -> None:
    """A detection block and labels that do not fit the model `name` (its outputs' `shapes`,
    batch first, and its input's height and width) are refused before anything is written."""
    if detection is not None and len(shapes) < 2:
        # said before check_against_model blames 'size = 1' on --detection, which the user of
        # --score-threshold on a classifier never gave
        raise ConfigError("detection settings", None,
                          f"{name} has one output, a classifier's; --detection and the detection flags "
                          "(--score-threshold, --nms-iou, ...) are for a detector, with heatmap and size outputs")
    if detection is not None:
        check_against_model(detection, labels, shapes, input_hw, origins)
    elif labels is not None:
        # several outputs: the first is what the records' label and score are taken from (its argmax)
        dims = shapes[0][1:]
        origin = (origins or {}).get("labels", "labels")
        if len(shapes) > 1 and len(dims) != 1:
            # an 8x8x3 map took '--labels a,b': records then said label 47, named "47"
            raise ConfigError(origin, labels,
                              f"{name}'s first output is {'x'.join(map(str, dims))}, not one score per class, "
                              "so it has no classes to name (records would label a position in it); leave the "
                              "labels out, or give --detection for a detector")
        # one output is flattened (the manifest's output, what records index): one label per value
        classes = math.prod(dims) if all(isinstance(d, int) for d in dims) else None
        if classes == 1 and len(shapes) == 1 and len(labels) == 2:
            return  # a binary classifier's one sigmoid score: labels[1] from 0.5 up (checked on its values later)
        if classes == 1 and len(shapes) == 1:
            raise ConfigError(origin, labels, f"{name} puts out one value per frame; give two labels for a binary "
                                              "classifier's sigmoid score (the second names it from 0.5 up), or none")
        if classes is not None and len(labels) != classes:
            first = " in its first output" if len(shapes) > 1 else ""
            raise ConfigError(origin, labels, f"{name} has {classes} classes{first}; give one label per class")


def check_binary_scores(name: str, scores: Any, labels: list[str], origin: str | None) -> None:
    """Two labels on a one-value output name a sigmoid's two sides (records: labels[1] when the
    score is >= 0.5). The float model's scores on the held-out frames must then be probabilities:
    a logit or a regressor's value has no 0.5 to decide at, and every record would say one side."""
    from splitpoint.verify import DECISION_THRESHOLD, is_probability

    if not is_probability(scores):
        lo, hi = float(scores.min()), float(scores.max())
        raise ConfigError(origin or "labels", labels,
                          f"{name}'s one value per frame ranges over {lo:.4g}..{hi:.4g} on the held-out frames, not "
                          f"a probability in [0, 1], so two labels have no {DECISION_THRESHOLD} to decide at; end the "
                          "model in a sigmoid, or leave the labels out")
