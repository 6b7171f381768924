"""A stock grpcio client over the agent's Unix socket, with no channel options.

    python stock_grpcio.py SOCKET PROTO_DIR

grpc-core sends the socket's path as :authority; the agent must serve it anyway
(third_party/README.md). It calls Capabilities with stubs compiled from PROTO_DIR, then asks
reflection v1alpha (grpcio-reflection's client, as grpcurl before 1.9, grpcui and Evans do)
for the services and for the file that defines FaultService. Prints one JSON object.
"""

import importlib
import importlib.resources
import json
import sys
import tempfile
from pathlib import Path

import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_tools import protoc


def stubs(proto_dir: Path):
    out = tempfile.mkdtemp()
    files = sorted(str(p.relative_to(proto_dir)) for p in (proto_dir / "faultline/v1").glob("*.proto"))
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = ["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + files) != 0:
        sys.exit(f"protoc failed on {files}")
    sys.path.insert(0, out)
    return (
        importlib.import_module("faultline.v1.service_pb2"),
        importlib.import_module("faultline.v1.service_pb2_grpc"),
    )


def main() -> None:
    socket, proto_dir = sys.argv[1], Path(sys.argv[2])
    pb2, pb2_grpc = stubs(proto_dir)
    channel = grpc.insecure_channel(f"unix://{socket}")
    caps = pb2_grpc.FaultServiceStub(channel).Capabilities(pb2.CapabilitiesRequest(), timeout=30)
    db = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(db.get_services())
    file = db.FindFileContainingSymbol("faultline.v1.FaultService")
    print(
        json.dumps(
            {
                "kernel_release": caps.kernel_release,
                "faults": len(caps.faults),
                "v1alpha_services": services,
                "v1alpha_file": file.name,
                "v1alpha_methods": [m.name for s in file.service for m in s.method],
            }
        )
    )


if __name__ == "__main__":
    main()
