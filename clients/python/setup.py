"""Build hook: compiles the faultline protos into the package while the wheel is built.

The protos are read from FAULTLINE_PROTO_DIR, else from the repository's proto/ two levels
up (pip builds ./clients/python in place), else from a proto/ beside this file. The
generated modules land in the build directory only (faultline/v1/*_pb2*.py), never in the
source tree; their imports (`from faultline.v1 import fault_pb2`) resolve inside this
package because its top-level name is the protos' package, `faultline`.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def proto_dir() -> Path:
    candidates = [Path(p) for p in [os.environ.get("FAULTLINE_PROTO_DIR", "")] if p]
    candidates += [HERE.parent.parent / "proto", HERE / "proto"]
    for c in candidates:
        if (c / "faultline" / "v1").is_dir():
            return c
    raise SystemExit(f"faultline protos not found in any of {[str(c) for c in candidates]}")


class BuildWithStubs(build_py):
    def run(self) -> None:
        super().run()
        import importlib.resources

        from grpc_tools import protoc

        protos = proto_dir()
        files = sorted(
            str(p.relative_to(protos)) for p in (protos / "faultline/v1").glob("*.proto")
        )
        out = Path(self.build_lib)
        (out / "faultline" / "v1").mkdir(parents=True, exist_ok=True)
        well_known = importlib.resources.files("grpc_tools") / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{protos}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {files} from {protos}")
        (out / "faultline" / "v1" / "__init__.py").write_text(
            f'"""Generated at build time from {len(files)} protos: {", ".join(files)}."""\n'
        )


setup(cmdclass={"build_py": BuildWithStubs})
