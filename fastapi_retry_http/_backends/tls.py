"""TLS contexts for the backends: shared by clients with the same settings, a caller's own left alone."""

from __future__ import annotations

import os
import ssl
from functools import lru_cache

import httpx

from ..exceptions import ConfigurationError

__all__ = ["tls_context"]


def tls_context(verify: bool | str | ssl.SSLContext, http2: bool) -> ssl.SSLContext:
    """
    The TLS context for `verify`: a caller's own context as is, otherwise a shared one.

    Raises:
        ConfigurationError: `verify` is a CA bundle path where there is no file or directory,
            or a caller's own context with `http2=True`.
    """
    if isinstance(verify, ssl.SSLContext):
        if http2:
            # httpcore sets the ALPN protocols on the context it is given, at every connection:
            # with http2 it would offer h2 on the caller's context, for every other client of it
            # too (an aiohttp-backend client then gets an h2 answer it cannot read). An
            # SSLContext can be neither copied nor asked for its ALPN, so it is refused here.
            raise ConfigurationError(
                "verify: an ssl.SSLContext cannot be used with http2=True (httpx would set its ALPN "
                "protocols on your context, which every other user of it would then offer); pass "
                "verify=True or a CA bundle path instead."
            )
        return verify
    if isinstance(verify, bool):
        return _shared_context(verify, http2, None)
    try:
        found = os.stat(verify)
    except (FileNotFoundError, NotADirectoryError):
        # The path is not shown: it says where the secrets of the deployment are kept.
        raise ConfigurationError("verify: CA bundle not found (no such file or directory)") from None
    # A bundle rotated at the same path (a new file, a renamed one or a swapped symlink) has
    # another inode, size or mtime, and so gets a context of its own.
    version = (found.st_mtime_ns, found.st_size, found.st_ino, found.st_dev)
    return _shared_context(verify, http2, version)


@lru_cache(maxsize=32)
def _shared_context(verify: bool | str, http2: bool, version: tuple[int, ...] | None) -> ssl.SSLContext:
    # httpx builds a new SSLContext per client (about 48 ms, mostly loading the CA store).
    # Clients with the same TLS settings share one; http2 is part of the key because httpcore
    # sets the ALPN protocols on the context it is given, and `version` is the CA bundle's
    # stat so that a bundle replaced on disk is read again (contexts of old versions fall out
    # of the cache as new ones come in).
    if isinstance(verify, bool):
        return httpx.create_ssl_context(verify=verify)
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=verify)
