"""Build the kiln demo app (examples/hello) for tests, through the Docker SDK.

The build context is laid out by ``examples/hello/render.sh`` (the one place that knows what the
image holds) and sent to the engine as an in-memory tar: no docker CLI, well under a second.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker

HELLO_DIR = Path(__file__).resolve().parents[2] / "examples" / "hello"
HELLO_REPOSITORY = "kiln-hello"


@dataclass(frozen=True)
class HelloImage:
    name: str  # the key in the session's ``hello_images``, and the tag: kiln-hello:<name>
    version: str  # shown by GET / ("hello from kiln demo <version> (instance ...)")
    variant: str

    @property
    def tag(self) -> str:
        return f"{HELLO_REPOSITORY}:{self.name}"


# What the session fixture ``hello_images`` builds. Versions differ between all of them, so a
# response body says which release answered.
HELLO_IMAGES = (
    HelloImage("v1", "v1", "healthy"),
    HelloImage("v2", "v2", "healthy"),
    HelloImage("v3", "v3", "healthy"),
    HelloImage("broken", "v4-broken", "broken"),
    HelloImage("flaky", "v5-flaky", "flaky"),
    HelloImage("crash", "v6-crash", "crash"),
)


class ImageBuildError(RuntimeError):
    pass


def render_context(version: str, variant: str) -> bytes:
    """The build context of one version and variant, as an uncompressed tar."""
    with tempfile.TemporaryDirectory(prefix="kiln-hello-") as tmp:
        result = subprocess.run(
            ["sh", str(HELLO_DIR / "render.sh"), version, variant, tmp],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ImageBuildError(f"render.sh {version} {variant}: {result.stderr.strip()}")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in sorted(Path(tmp).rglob("*")):
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(tmp)))
                # Fixed owner and time: the same inputs give the same layer, and so the same id.
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isfile():
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
        return buffer.getvalue()


def build_hello_image(
    client: docker.DockerClient, *, version: str, variant: str = "healthy", tag: str
) -> str:
    """Build the demo app for ``version``/``variant``, tag it ``tag``; return the image id."""
    context = render_context(version, variant)
    stream = client.api.build(
        fileobj=io.BytesIO(context),
        custom_context=True,
        tag=tag,
        labels={"org.opencontainers.image.version": version, "io.kiln.demo.variant": variant},
        rm=True,
        forcerm=True,
        decode=True,
    )
    for chunk in stream:
        if "error" in chunk:
            raise ImageBuildError(f"building {tag} failed: {chunk['error'].strip()}")
    image_id: str = client.api.inspect_image(tag)["Id"]
    return image_id
