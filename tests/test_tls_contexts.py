"""
The TLS contexts clients get: a caller's own context is never changed for other clients, a
CA bundle rotated on disk is read again, a missing one is a configuration error.

Against real TLS servers on loopback, with certificates from throwaway `trustme` CAs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from pathlib import Path

import httpx
import pytest
import trustme

from fastapi_retry_http import Client
from fastapi_retry_http.exceptions import ConfigurationError
from tests.servers import RawServer, ok, response_bytes

pytestmark = pytest.mark.anyio

#: An HTTP/2 SETTINGS frame: what an h2 server sends first, and what an HTTP/1.1 client
#: fails to read as a status line.
H2_SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


class AlpnServer(RawServer):
    """A TLS server offering h2 and http/1.1 that records what each request negotiated."""

    def __init__(self, ca: trustme.CA) -> None:
        super().__init__(self._answer, ssl=server_context(ca, ["h2", "http/1.1"]))
        self.negotiated: list[str | None] = []

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        protocol = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        self.negotiated.append(protocol)
        if protocol == "h2":
            # As a real h2 server would: frames, not an HTTP/1.1 status line. This one speaks no
            # further h2, so it hangs up rather than leave an h2 client waiting for an answer.
            writer.write(H2_SETTINGS_FRAME)
            await writer.drain()
            writer.close()
            return
        writer.write(response_bytes())
        await writer.drain()


class TestCallersOwnContext:
    async def test_an_http2_client_leaves_it_unchanged_for_an_aiohttp_client(self, ca: trustme.CA) -> None:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        server = AlpnServer(ca)
        async with server:
            # Before: the httpx pool set ALPN ["http/1.1", "h2"] on the context at connect, and
            # the aiohttp client, on the same context, then got h2 and "Bad status line".
            with contextlib.suppress(ConfigurationError):
                async with Client(server.url, verify=context, http2=True) as h2:
                    with contextlib.suppress(httpx.HTTPError):
                        await h2.get("/x")
            async with Client(server.url, verify=context, backend="aiohttp") as c:
                assert (await c.get("/x")).text == "ok"
            # The aiohttp client offered what the context offered to begin with: nothing.
            assert server.negotiated[-1] is None

    @pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
    def test_http2_with_it_is_refused_naming_verify(self, backend: str) -> None:
        with pytest.raises(
            ConfigurationError, match=r"^Client 'a': verify: an ssl.SSLContext cannot be used with http2=True"
        ):
            Client("https://a.internal", name="a", verify=ssl.create_default_context(), http2=True, backend=backend)  # type: ignore[arg-type]

    @pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
    async def test_http1_clients_on_either_backend_use_it(self, ca: trustme.CA, backend: str) -> None:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        server = AlpnServer(ca)
        async with (
            server,
            Client(server.url, verify=context, backend=backend) as c,  # type: ignore[arg-type]
        ):
            assert (await c.get("/x")).text == "ok"
        # httpx's pool restricts the context to http/1.1 at connect, which an HTTP/1.1-only
        # aiohttp client on the same context is fine with.
        assert server.negotiated == [None if backend == "aiohttp" else "http/1.1"]

    async def test_shared_library_contexts_still_give_http2_to_http2_clients(
        self, ca: trustme.CA, tmp_path: Path
    ) -> None:
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        server = AlpnServer(ca)
        async with server:
            async with Client(server.url, verify=str(bundle), http2=True) as h2:
                with contextlib.suppress(httpx.HTTPError):
                    await h2.get("/x")
            async with Client(server.url, verify=str(bundle), backend="aiohttp") as c:
                assert (await c.get("/x")).text == "ok"
        assert server.negotiated[0] == "h2"
        assert server.negotiated[-1] is None


class TestCaBundle:
    async def test_a_bundle_rotated_at_the_same_path_is_read_by_new_clients(self, tmp_path: Path) -> None:
        old_ca, new_ca = trustme.CA(), trustme.CA()
        bundle = tmp_path / "ca.pem"
        old_ca.cert_pem.write_to_path(str(bundle))
        async with RawServer(lambda r, w, n: ok(r, w), ssl=server_context(new_ca)) as server:
            async with Client(server.url, verify=str(bundle)) as before:
                with pytest.raises(httpx.ConnectError):
                    await before.get("/x")
            new_ca.cert_pem.write_to_path(str(bundle))  # rotated in place: same path, same inode
            # Some file systems keep coarse timestamps, and two trustme PEMs may have one size:
            # a rotation that happens later than the first read, as it does in life.
            stat = bundle.stat()
            os.utime(bundle, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
            async with Client(server.url, verify=str(bundle)) as after:
                assert (await after.get("/x")).text == "ok"

    async def test_an_unchanged_bundle_is_loaded_once(self, ca: trustme.CA, tmp_path: Path) -> None:
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        a, b = Client("https://a.internal", verify=str(bundle)), Client("https://b.internal", verify=str(bundle))
        assert a.transport.inner._ssl_context is b.transport.inner._ssl_context  # type: ignore[attr-defined]
        await a.aclose()
        await b.aclose()

    async def test_a_directory_of_ca_certificates_is_a_bundle_too(self, tmp_path: Path) -> None:
        (tmp_path / "certs").mkdir()
        async with Client("https://a.internal", verify=str(tmp_path / "certs"), backend="aiohttp") as c:
            assert isinstance(c.transport.inner._ssl_context, ssl.SSLContext)  # type: ignore[attr-defined]

    @pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
    @pytest.mark.parametrize("http2", [False, True])
    def test_a_missing_bundle_is_a_configuration_error_naming_verify(
        self, tmp_path: Path, backend: str, http2: bool
    ) -> None:
        missing = tmp_path / "s3cret-place" / "ca.pem"
        with pytest.raises(ConfigurationError) as caught:
            Client("https://a.internal", name="a", verify=str(missing), backend=backend, http2=http2)  # type: ignore[arg-type]
        assert str(caught.value) == "Client 'a': verify: CA bundle not found (no such file or directory)"
        assert caught.value.__cause__ is None

    def test_a_path_through_a_file_is_a_missing_bundle_too(self, tmp_path: Path) -> None:
        not_a_directory = tmp_path / "ca.pem"
        not_a_directory.write_text("")
        with pytest.raises(ConfigurationError, match=r"^Client 'a': verify: CA bundle not found"):
            Client("https://a.internal", name="a", verify=str(not_a_directory / "ca.pem"))
