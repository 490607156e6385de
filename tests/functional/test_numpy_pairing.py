"""32-bit Raspberry Pi OS: tflite-runtime 2.14 under NumPy 2 is refused in plain words, never a traceback.

A fake `tflite_runtime` placed first on the path fails to import the way the real one does
under NumPy 2 (NumPy prints its own traceback, then the import fails with _ARRAY_API not
found); LiteRT and TensorFlow are hidden, as on a 32-bit Pi.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(int(np.__version__.split(".")[0]) < 2, reason="needs NumPy 2 installed")

# What importing the real tflite_runtime.interpreter does under NumPy 2: NumPy's notice with a
# traceback on stderr, then the wrapper's import fails.
FAKE_INTERPRETER = (
    "import sys\n"
    "sys.stderr.write('A module that was compiled using NumPy 1.x cannot be run in NumPy 2 as it may crash.\\n'\n"
    "                 'Traceback (most recent call last):\\n  File \"interpreter.py\"\\n'\n"
    "                 'AttributeError: _ARRAY_API not found\\n')\n"
    "raise SystemError('initialization of _pywrap_tensorflow_interpreter_wrapper raised unreported exception: '\n"
    "                  '_ARRAY_API not found')\n"
)

# Run the CLI as on a 32-bit Pi: no LiteRT wheel exists there and TensorFlow is not installed.
HIDE_LITERT_AND_TF = (
    "import sys\n"
    "for name in ('ai_edge_litert', 'tensorflow', 'keras'):\n"
    "    sys.modules[name] = None\n"
    "from splitpoint.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "assert 'tflite_runtime.interpreter' not in sys.modules, 'imported tflite_runtime under NumPy 2'\n"
    "sys.exit(code)\n"
)


@pytest.fixture
def fake_tflite(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    pkg = site / "tflite_runtime"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "interpreter.py").write_text(FAKE_INTERPRETER)
    dist = site / "tflite_runtime-2.14.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tflite-runtime\nVersion: 2.14.0\n")
    return site


def _run(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    return subprocess.run([sys.executable, "-c", HIDE_LITERT_AND_TF, *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def _the_message(text: str) -> str:
    start = text.index("tflite-runtime 2.14.0 cannot load models under NumPy")
    return text[start:].splitlines()[0]


def test_agent_doctor_and_profile_refuse_tflite_runtime_under_numpy2(fake_tflite: Path, digits_bundle: Path,
                                                             tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    edge = _run(fake_tflite, "edge", "--insecure", "--bundle", str(digits_bundle), "--cloud", "127.0.0.1:9",
                "--source", "synthetic:2", "--split", "3", "--results", str(results))
    assert edge.returncode == 1, edge.stderr[-3000:]
    assert "Traceback" not in edge.stderr + edge.stdout
    agent_says = _the_message(edge.stderr)
    assert "pip install 'numpy<2'" in agent_says and "edge-32bit" in agent_says

    doctor = _run(fake_tflite, "doctor")
    assert doctor.returncode == 1, doctor.stdout[-3000:] + doctor.stderr[-3000:]
    assert "Traceback" not in doctor.stderr + doctor.stdout
    assert "[FAIL] tflite-runtime + NumPy 2: " in doctor.stdout
    assert _the_message(doctor.stdout) == agent_says  # one check, one wording

    # any other command that loads a head says the same
    profile = _run(fake_tflite, "profile", "edge", "--bundle", str(digits_bundle), "--runs", "2",
                   "-o", str(tmp_path / "edge.json"))
    assert profile.returncode == 1, profile.stderr[-3000:]
    assert "Traceback" not in profile.stderr + profile.stdout
    assert _the_message(profile.stderr) == agent_says


def test_numpy1_pairing_check_leaves_litert_alone() -> None:
    from splitpoint.runtime.litert import numpy_pairing_problem

    # where LiteRT imports (this environment), tflite_runtime is never the one chosen
    pytest.importorskip("ai_edge_litert.interpreter")
    assert numpy_pairing_problem() is None


def test_no_interpreter_at_all_names_both_install_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    from splitpoint.errors import BackendUnavailableError
    from splitpoint.runtime.litert import interpreter_module

    for name in ("ai_edge_litert", "tflite_runtime", "tensorflow", "keras"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailableError, match=r"ai-edge-litert.*\[edge\].*tflite-runtime 2\.14.*\[edge-32bit\]"):
        interpreter_module()
