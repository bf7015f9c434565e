"""Outbound proxy selection for every call the gateway makes to the outside world.

Which proxy a URL goes through, first match wins:

1. the provider's ``config.proxy`` (a URL; ``""`` or ``null`` means *direct*, ignoring 2 and 3);
2. ``LW_GATEWAY_OUTBOUND_PROXY`` (``outbound.proxy``): one proxy for every outbound call;
3. the standard ``HTTPS_PROXY`` / ``HTTP_PROXY`` (by the URL's scheme; lower-case names too, the
   lower-case one winning when both are set), unless ``NO_PROXY`` names the host;
4. direct.

``NO_PROXY`` is read as Python's :mod:`urllib` (and so aiohttp and requests) reads it: host
names and domain suffixes, ``*`` for everything; it applies to the standard variables only.

A proxy URL may carry credentials (``http://user:pass@proxy:3128``): they are secrets, so
whatever this module renders for logs, errors and ``config show`` goes through
:func:`mask_url`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

# Not in typeshed's stubs, but CPython's (and aiohttp's, via urllib) reading of NO_PROXY.
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import attrs

__all__ = [
    "DIRECT",
    "PROVIDER_KEY",
    "Egress",
    "ProxyChoice",
    "mask_url",
    "proxy_problem",
    "redact",
    "standard_from_env",
]

#: ``config.proxy`` value meaning "no proxy for this provider".
DIRECT: Final = ""
#: Key of the per-provider override in a provider's ``config``.
PROVIDER_KEY: Final = "proxy"
_SCHEMES = ("http", "https")


def mask_url(url: str) -> str:
    """``http://user:secret@proxy:3128`` → ``http://user:****@proxy:3128`` (no password: the user
    name alone is masked too, since some proxies take a token there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "****"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:****" if parts.password is not None else "****"
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


def redact(text: str, *urls: str | None) -> str:
    """``text`` with the credentials of each of ``urls`` masked wherever they appear."""
    for url in urls:
        if not url:
            continue
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        if parts.password:
            text = text.replace(parts.password, "****")
        if parts.username and parts.password is None:
            text = text.replace(parts.username, "****")
    return text


def proxy_problem(value: Any) -> str | None:
    """What is wrong with a proxy setting (``None``: usable). ``""``/``None`` are fine (direct)."""
    if value is None or value == DIRECT:
        return None
    if not isinstance(value, str):
        return (
            'must be a proxy URL such as http://proxy.internal:3128 (or "" for direct), '
            f"not {type(value).__name__}"
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as exc:
        return f"{mask_url(value)!r} is not a URL ({exc})"
    if parts.scheme not in _SCHEMES or not parts.hostname:
        return (
            f"{mask_url(value)!r} is not an http:// or https:// proxy URL (e.g. "
            "http://proxy.internal:3128; SOCKS proxies are not supported)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{mask_url(value)!r}: a proxy URL has no path, query or fragment"
    return None


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


@attrs.frozen
class ProxyChoice:
    """The proxy a call goes through (``url`` None: direct) and which setting chose it."""

    url: str | None
    #: ``provider config.proxy``, ``LW_GATEWAY_OUTBOUND_PROXY``, ``HTTPS_PROXY``, … or ``""``.
    source: str = ""

    @property
    def masked(self) -> str:
        return mask_url(self.url) if self.url else "direct"

    def hostport(self) -> tuple[str, int] | None:
        """The proxy's host and port (None: direct)."""
        if not self.url:
            return None
        return urlsplit(self.url).hostname or "", _port(self.url)

    def describe(self) -> str:
        """``http://user:****@proxy:3128 (LW_GATEWAY_OUTBOUND_PROXY)``."""
        return f"{self.masked} ({self.source})" if self.url else "direct"


_NO_PROXY: Final = ProxyChoice(None)
_UNSET: Final[Any] = object()


@attrs.frozen
class Egress:
    """The proxy settings of one gateway (see the module docstring for the precedence)."""

    #: ``LW_GATEWAY_OUTBOUND_PROXY``.
    proxy: str | None = None
    https_proxy: str | None = None
    http_proxy: str | None = None
    no_proxy: str | None = None
    #: The environment variable names the standard settings came from (for messages).
    https_var: str = "HTTPS_PROXY"
    http_var: str = "HTTP_PROXY"

    @property
    def any(self) -> bool:
        """Whether any gateway-wide proxy is configured."""
        return bool(self.proxy or self.https_proxy or self.http_proxy)

    def choose(self, url: str, override: Any = _UNSET) -> ProxyChoice:
        """The proxy for ``url``. ``override`` is a provider's ``config.proxy`` when it has the
        key (``""``/``None``: direct); leave it out when the provider does not set one."""
        if override is not _UNSET:
            if override is None or override == DIRECT:
                return _NO_PROXY
            return ProxyChoice(str(override), "provider config.proxy")
        if self.proxy:
            return ProxyChoice(self.proxy, "LW_GATEWAY_OUTBOUND_PROXY")
        if not (self.https_proxy or self.http_proxy):
            return _NO_PROXY
        parts = urlsplit(url)
        if parts.scheme == "https":
            chosen, var = self.https_proxy, self.https_var
        else:
            chosen, var = self.http_proxy, self.http_var
        if not chosen:
            return _NO_PROXY
        host = parts.hostname or ""
        if self.no_proxy and proxy_bypass_environment(host, {"no": self.no_proxy}):
            return _NO_PROXY
        return ProxyChoice(chosen, var)

    def for_provider(self, url: str, config: Mapping[str, Any]) -> ProxyChoice:
        """:meth:`choose` for a provider whose ``config`` may carry ``proxy``."""
        if PROVIDER_KEY in config:
            return self.choose(url, config[PROVIDER_KEY])
        return self.choose(url)

    def summary(self) -> str:
        """One line for the start-up log, credentials masked."""
        parts = []
        if self.proxy:
            parts.append(f"outbound_proxy={mask_url(self.proxy)}")
        if self.https_proxy:
            parts.append(f"https_proxy={mask_url(self.https_proxy)}")
        if self.http_proxy:
            parts.append(f"http_proxy={mask_url(self.http_proxy)}")
        if self.no_proxy:
            parts.append(f"no_proxy={self.no_proxy}")
        return " ".join(parts) or "outbound_proxy=direct"


_STANDARD = (("https_proxy", "HTTPS_PROXY"), ("http_proxy", "HTTP_PROXY"), ("no_proxy", "NO_PROXY"))


def standard_from_env(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The standard proxy variables set in ``env``: field → (value, variable name). As
    :func:`urllib.request.getproxies_environment`, the lower-case name wins when both are set."""
    out: dict[str, tuple[str, str]] = {}
    for field, upper in _STANDARD:
        for name in (field, upper):
            value = env.get(name, "").strip()
            if value:
                out[field] = (value, name)
                break
    return out
