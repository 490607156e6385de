"""Generate the Python stubs in splitpoint/v1 from proto/splitpoint/v1/*.proto.

The protos sit at a package path (splitpoint/v1/...) so the generated modules
import each other as `splitpoint.v1.tensor_pb2` without any rewriting.

    python scripts/gen_protos.py            # write the stubs
    python scripts/gen_protos.py --out DIR  # write them under DIR (the staleness test)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def generate(out_root: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc  # dev extra: grpcio-tools

    protos = sorted(PROTO_ROOT.glob("splitpoint/v1/*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    (out_root / "splitpoint" / "v1").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / "splitpoint" / "v1").glob("*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository)")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out), file=sys.stderr)


if __name__ == "__main__":
    main()
