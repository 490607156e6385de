"""python -m splitpoint.models [all | digits-cnn | digits-detector]: rebuild the shipped models.

digits-cnn also re-exports data/digits.npz (needs scikit-learn); digits-detector retrains
the detector from that file in a few minutes (run it under `nice` on a shared machine).
"""

import sys

from splitpoint.models import regenerate_digits_assets, regenerate_digits_detector

which = sys.argv[1] if len(sys.argv) > 1 else "all"
if which not in ("all", "digits-cnn", "digits-detector"):
    sys.stderr.write(f"python -m splitpoint.models: {which!r} is not all, digits-cnn or digits-detector\n")
    sys.exit(2)
if which in ("all", "digits-cnn"):
    print(f"digits-cnn held-out accuracy {regenerate_digits_assets():.4f}")
if which in ("all", "digits-detector"):
    print(f"digits-detector on held-out canvases: {regenerate_digits_detector()}")
