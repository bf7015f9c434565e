"""The outbound-URL policy: the SSRF guard of every request the gateway and control plane make.

Provider base URLs (from the config file and from control-plane bundles), guardrail webhooks,
OTLP endpoints and token endpoints all go through one :class:`OutboundPolicy`:

- a URL must be ``http``/``https`` with a host, and carry no user info (``user:pass@``: the
  credential belongs in ``api_key`` or a header, where it is masked and encrypted);
- outside ``ENVIRONMENT=local`` its host must not be a loopback, private, link-local, unique-local,
  multicast, reserved or unspecified address, in any spelling a resolver or URL parser accepts:
  ``127.1``, ``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``[::ffff:127.0.0.1]``, ``localhost.``,
  ``LOCALHOST``, full-width digits, … (:func:`normalise_host` turns each into the address it
  denotes), nor a ``localhost`` name;
- host *names* are checked when the connection is made (:meth:`OutboundPolicy.refused_address`
  on every address they resolve to), so a DNS record pointing inside is no way around it.

The ways through, in production: ``GATEWAY_OUTBOUND_ALLOW_CIDRS`` (:data:`ALLOW_CIDRS_ENV`, the
operator's list of networks that may be called, for every outbound URL), and a config-file
provider's ``allow_private_network = true`` (``allow_private=True`` here).

Checks are made once per configuration object (at start-up, when the control plane stores a
value, when the gateway builds a bundle provider's adapter or compiles a key's guardrails), never
per request; :func:`functools.lru_cache`-backed :meth:`OutboundPolicy.url_problem` makes a
repeated check a dictionary lookup.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import unicodedata
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

import attrs

__all__ = [
    "ALLOW_CIDRS_ENV",
    "IPAddress",
    "IPNetwork",
    "OutboundPolicy",
    "OutboundRefused",
    "guarded_address",
    "normalise_host",
    "parse_cidrs",
    "redact_userinfo",
]

#: The operator's allowlist: comma-separated CIDRs (``10.0.0.0/8,fd00::/8``) whose addresses
#: every outbound URL may reach even outside ``ENVIRONMENT=local``.
ALLOW_CIDRS_ENV = "GATEWAY_OUTBOUND_ALLOW_CIDRS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Names that always mean this machine (or a cloud's metadata service), whatever DNS says.
_LOCAL_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "ip6-localhost",
        "ip6-loopback",
        "metadata.google.internal",
    }
)
#: Dots IDNA maps to ``.`` (ideographic, full-width, half-width ideographic).
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_MULTICAST_V4 = ipaddress.IPv4Network("224.0.0.0/4")
_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


class OutboundRefused(ValueError):
    """An outbound URL the policy refuses. The message names the field and what to do."""


def _ipv4_number(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of a host in any form ``inet_aton`` and the WHATWG URL parser accept
    (1 to 4 parts, each decimal, ``0x`` hex or ``0``-prefixed octal), else ``None``."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        if not part:
            return None
        try:
            if part[:2] in ("0x", "0X"):
                value = int(part[2:], 16) if len(part) > 2 else 0
            elif len(part) > 1 and part[0] == "0":
                value = int(part[1:], 8)
            else:
                if not part.isascii() or not part.isdigit():
                    return None
                value = int(part)
        except ValueError:
            return None
        numbers.append(value)
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def normalise_host(host: str) -> IPAddress | str:
    """The address a URL host denotes, or the host as a lower-case name without trailing dot.

    Undoes percent-encoding, Unicode compatibility forms (full-width digits and dots), case,
    brackets and trailing dots; reads the integer, hex, octal and short IPv4 forms
    (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``) as the address they are.
    """
    text = unicodedata.normalize("NFKC", unquote(host)).translate(_DOTS).strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.rstrip(".")
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return text
    found = _ipv4_number(text)
    return found if found is not None else text


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    packed = int(ip)
    if packed >> 32 == 0 and packed > 1:  # ::a.b.c.d (deprecated "compatible")
        return ipaddress.IPv4Address(packed)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _effective(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return embedded
    return ip


def guarded_address(ip: IPAddress) -> bool:
    """True for every address the SSRF guard keeps outbound requests away from: loopback,
    private (RFC 1918, unique-local ``fc00::/7``), link-local (``169.254.0.0/16`` with the cloud
    metadata address, ``fe80::/10``), shared (``100.64.0.0/10``), multicast, reserved and
    unspecified addresses, and IPv6 addresses that embed one of those IPv4 addresses."""
    ip = _effective(ip)
    if isinstance(ip, ipaddress.IPv4Address) and ip in _MULTICAST_V4:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and (ip.is_site_local or ip.is_multicast):
        return True
    return (
        not ip.is_global
        or ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_reserved
    )


def parse_cidrs(raw: str | Iterable[str], where: str = ALLOW_CIDRS_ENV) -> tuple[IPNetwork, ...]:
    """The networks of a comma-separated list (or a list) of CIDRs; a bare address is a /32
    (/128). Raises :class:`ValueError` naming ``where`` and the entry that is not a network."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    out: list[IPNetwork] = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"{where}: {text!r} is not a network; write CIDRs like 10.0.0.0/8 or fd00::/8, "
                "separated by commas"
            ) from None
    return tuple(out)


def redact_userinfo(url: str) -> str:
    """``url`` with any ``user:pass@`` replaced by ``****@`` (for display and logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            end = min(end, found)
    authority = rest[:end]
    if "@" not in authority:
        return url
    return f"{scheme}://****@{authority.rpartition('@')[2]}{rest[end:]}"


_TO_ALLOW = "list its network in GATEWAY_OUTBOUND_ALLOW_CIDRS"


@attrs.frozen(cache_hash=True)  # a key of the URL-check cache
class OutboundPolicy:
    """Which outbound URLs and addresses may be called. Immutable; build one per process with
    :meth:`from_env` (or the gateway's settings) and share it."""

    #: False with ``ENVIRONMENT=local``: any address may be called (URLs are still checked for
    #: scheme, host and user info).
    guard: bool = True
    #: The operator's allowlist (``GATEWAY_OUTBOUND_ALLOW_CIDRS``).
    allow_cidrs: tuple[IPNetwork, ...] = ()
    #: Host names of config-file providers with ``allow_private_network = true``: they may
    #: resolve to private addresses, and no other outbound URL may use them.
    private_names: frozenset[str] = frozenset()

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, environment: str | None = None
    ) -> OutboundPolicy:
        """The policy of ``ENVIRONMENT`` (or ``environment``) and ``GATEWAY_OUTBOUND_ALLOW_CIDRS``.
        Raises :class:`ValueError` for a CIDR list that does not parse."""
        env = os.environ if env is None else env
        environment = environment or env.get("ENVIRONMENT") or "production"
        return cls(
            guard=environment != "local",
            allow_cidrs=parse_cidrs(env.get(ALLOW_CIDRS_ENV, "")),
        )

    # --- addresses ---------------------------------------------------------------------

    def refused_address(self, ip: IPAddress | str) -> bool:
        """Whether a connection to ``ip`` (an address object or its text) is refused."""
        if not self.guard:
            return False
        if isinstance(ip, str):
            found = normalise_host(ip)
            if isinstance(found, str):
                return True  # not an address: nothing we can vouch for
            ip = found
        if not guarded_address(ip):
            return False
        eff = _effective(ip)
        return not any(eff in net for net in self.allow_cidrs if net.version == eff.version)

    def host_problem(
        self, host: str, *, allow_private: bool = False, hint: str = _TO_ALLOW
    ) -> str | None:
        """Why a URL host is refused (a literal address in any spelling, or a ``localhost``
        name), or ``None``. Host names are left to :meth:`refused_address` at connect time."""
        if not self.guard or allow_private:
            return None
        found = normalise_host(host)
        if isinstance(found, str):
            if found in self.private_names:
                return (
                    f"{host} is reserved for the config file's allow_private_network providers; "
                    "refused by the SSRF guard"
                )
            if not (found in _LOCAL_NAMES or found.endswith(".localhost")):
                return None  # a name: its addresses are checked when connecting
            found = _LOOPBACK
            shown = host
        else:
            eff = _effective(found)
            shown = host if str(eff) == host.strip("[]") else f"{host} ({eff})"
        if self.refused_address(found):
            return (
                f"{shown} is a loopback/private address; refused by the SSRF guard outside "
                f"ENVIRONMENT=local ({hint})"
            )
        return None

    # --- URLs --------------------------------------------------------------------------

    def url_problem(
        self,
        url: str,
        *,
        allow_private: bool = False,
        schemes: tuple[str, ...] = ("http", "https"),
        hint: str = _TO_ALLOW,
    ) -> str | None:
        """Why ``url`` may not be called (scheme, missing host, user info, a guarded host),
        or ``None``. The message does not repeat a password."""
        return _url_problem(self, url, allow_private, schemes, hint)

    def check_url(
        self,
        url: str,
        field: str,
        *,
        allow_private: bool = False,
        schemes: tuple[str, ...] = ("http", "https"),
        hint: str = _TO_ALLOW,
    ) -> None:
        """Raise :class:`OutboundRefused` (``"<field>: <problem>"``) unless ``url`` may be
        called."""
        problem = self.url_problem(url, allow_private=allow_private, schemes=schemes, hint=hint)
        if problem is not None:
            raise OutboundRefused(f"{field}: {problem}")

    def check_resolved(self, url: str, field: str = "url") -> None:
        """For blocking clients (``requests``) that resolve names themselves: check ``url`` and
        every address its host resolves to now (any guarded one refuses it). Raises
        :class:`OutboundRefused`. Call it from a worker thread, never on the event loop."""
        self.check_url(url, field)
        if not self.guard:
            return
        host = urlsplit(url).hostname or ""
        if not isinstance(normalise_host(host), str):
            return  # a literal address: check_url decided
        try:
            found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return  # the client's own connection attempt reports it
        addresses = sorted({str(info[4][0]) for info in found})
        refused = [a for a in addresses if self.refused_address(a.partition("%")[0])]
        if refused:
            raise OutboundRefused(
                f"{field}: {host} resolves to {', '.join(refused)}: loopback/private addresses "
                "are refused by the SSRF guard outside ENVIRONMENT=local"
            )


@functools.lru_cache(maxsize=4096)
def _url_problem(
    policy: OutboundPolicy, url: str, allow_private: bool, schemes: tuple[str, ...], hint: str
) -> str | None:
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"{redact_userinfo(url)!r} is not a valid URL"
    shown = redact_userinfo(url)
    if parts.scheme not in schemes or not parts.hostname:
        kinds = " or ".join(f"{s}://" for s in schemes)
        return f"{shown!r} is not an {kinds} URL with a host"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return (
            f"{shown!r} contains a user name or password (user:pass@); put the credential in "
            "api_key / a header, not the URL"
        )
    return policy.host_problem(parts.hostname, allow_private=allow_private, hint=hint)
