"""The OCI distribution HTTP API (``/v2/…``) over httpx, and ``RemoteRegistry`` on top of it.

Only the few calls kiln needs: ping, HEAD/GET a manifest, DELETE a manifest. Errors are mapped
here: no answer → ``RegistryUnavailable``; 401/403 → ``RegistryUnavailable`` saying to check the
credentials; other unexpected statuses → ``TemporaryFailure`` with the registry's own words.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from kiln.errors import InvalidInput, PermanentFailure, RegistryUnavailable, TemporaryFailure
from kiln.registry.base import Credentials

# Every manifest kind a push by Docker, Podman or BuildKit can leave behind.
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)


class RegistryClient:
    def __init__(
        self, base_url: str, *, credentials: Credentials | None = None, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = (
            httpx.BasicAuth(credentials.username, credentials.password) if credentials else None
        )
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, auth=self._auth, timeout=self._timeout
            )
            self._loop = loop
        return self._client

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http().request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"the registry at {self.base_url} does not answer ({exc.__class__.__name__}:"
                f" {exc}); check that it runs (`kiln up` starts the embedded one)"
            ) from exc
        if response.status_code in (401, 403):
            raise RegistryUnavailable(
                f"the registry at {self.base_url} refused kiln ({response.status_code}); check"
                " registry.username and registry.password_file in the settings file"
            )
        return response

    async def ping(self) -> bool:
        try:
            response = await self._request("GET", "/v2/")
        except RegistryUnavailable:
            return False
        return response.status_code == 200

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        response = await self._request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}
        )
        if response.status_code == 404:
            return None
        _expect(response, 200, f"HEAD manifest {repository}:{reference}")
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise TemporaryFailure(
                f"the registry at {self.base_url} sent no Docker-Content-Digest for"
                f" {repository}:{reference}"
            )
        return str(digest)

    async def manifest(self, repository: str, digest: str) -> dict[str, Any] | None:
        response = await self._request(
            "GET", f"/v2/{repository}/manifests/{digest}", headers={"Accept": MANIFEST_TYPES}
        )
        if response.status_code == 404:
            return None
        _expect(response, 200, f"GET manifest {repository}@{digest}")
        try:
            body: dict[str, Any] = json.loads(response.content)
        except ValueError as exc:
            raise TemporaryFailure(f"manifest {repository}@{digest} is not JSON") from exc
        return body

    async def image_size(self, repository: str, digest: str) -> int | None:
        manifest = await self.manifest(repository, digest)
        if manifest is None:
            return None
        parts = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
        return sum(int(part.get("size", 0)) for part in parts)

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        response = await self._request("DELETE", f"/v2/{repository}/manifests/{digest}")
        if response.status_code == 404:
            return False
        if response.status_code == 405:
            raise PermanentFailure(
                f"the registry at {self.base_url} does not allow deletes"
                " (distribution: storage.delete.enabled: true)"
            )
        _expect(response, 202, f"DELETE manifest {repository}@{digest}")
        return True

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


def _expect(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code != status:
        raise TemporaryFailure(
            f"{what}: the registry answered {response.status_code}: {response.text[:300]}"
        )


class RemoteRegistry:
    """A registry kiln does not run (``registry.url`` in the settings file)."""

    embedded = False

    def __init__(self, url: str, *, credentials: Credentials | None = None) -> None:
        parsed = httpx.URL(url if "://" in url else f"https://{url}")
        if not parsed.host or parsed.path not in ("", "/"):
            raise InvalidInput(
                f"registry.url must be a registry's address like https://registry.example.com"
                f" or 127.0.0.1:5000, got {url!r}"
            )
        self.host = f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host
        self.credentials = credentials
        self.client = RegistryClient(f"{parsed.scheme}://{self.host}", credentials=credentials)
        self._never = asyncio.Event()

    async def start(self) -> None:
        if not await self.client.ping():
            raise RegistryUnavailable(
                f"the registry at {self.client.base_url} does not answer GET /v2/; check"
                " registry.url in the settings file"
            )

    async def ensure_running(self) -> bool:
        return False  # not kiln's to start

    async def is_running(self) -> bool:
        return await self.client.ping()

    async def wait_exited(self) -> None:
        await self._never.wait()

    async def stop(self) -> None:
        return None

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        return await self.client.manifest_digest(repository, reference)

    async def image_size(self, repository: str, digest: str) -> int | None:
        return await self.client.image_size(repository, digest)

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        return await self.client.delete_manifest(repository, digest)

    async def garbage_collect(self) -> str:
        return f"the registry at {self.host} is not kiln's: its owner runs garbage collection"

    async def close(self) -> None:
        await self.client.close()
