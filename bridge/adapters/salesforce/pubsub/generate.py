"""Regenerate the Pub/Sub API stubs from the unmodified proto (``proto/pubsub_api.proto``).

``uv run python -m bridge.adapters.salesforce.pubsub.generate`` writes
``pubsub_api_pb2.py`` (with its ``.pyi``) and ``pubsub_api_pb2_grpc.py`` beside this file;
``tests/unit/test_pubsub_stubs.py`` checks that the committed stubs are what it makes.
They are committed so that the wheel and the image need no code generator.
"""

from __future__ import annotations

import importlib.resources
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE.parents[3] / "proto" / "pubsub_api.proto"
OUTPUTS = ("pubsub_api_pb2.py", "pubsub_api_pb2.pyi", "pubsub_api_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    """Run grpc_tools.protoc on the proto; the grpc stub imports its messages relatively."""
    from grpc_tools import protoc  # noqa: PLC0415 - a dev-only dependency

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO.parent}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")
    grpc_file = out_dir / "pubsub_api_pb2_grpc.py"
    text = grpc_file.read_text()
    # protoc writes an absolute import; the stubs live inside this package.
    text = re.sub(r"^import pubsub_api_pb2 as", "from . import pubsub_api_pb2 as", text, flags=re.M)
    grpc_file.write_text(text)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for name in OUTPUTS:
            (HERE / name).write_text((Path(tmp) / name).read_text())
    print(f"wrote {', '.join(OUTPUTS)} from {PROTO}", file=sys.stderr)


if __name__ == "__main__":
    main()
