"""Canonical forms of a URL for ``policy_rules.urls``: the host as a client would resolve it.

``https://EVIL.EXAMPLE/``, ``https://evil。example/`` (ideographic full stop),
``https://evil.example./`` (trailing dot), the same in full-width letters, ``https://evil%2Eexample/``
and ``https://user@evil.example:443/`` all fetch ``https://evil.example/``, so a rule must judge
them as that. :func:`canonical_forms` gives:

1. the URL with its host canonical in ASCII: percent-decoded, the dot variants (U+3002, U+FF0E,
   U+FF61) read as ``.``, mapped by UTS #46 (case folding, full-width forms), IDNA-encoded
   (``bücher`` → ``xn--bcher-kva``), one trailing dot dropped; the scheme lower-cased, the
   userinfo and a default port (80 for http, 443 for https) dropped, the rest kept as sent;
2. the same URL with the host in Unicode when it has IDNA labels (so a pattern written in
   Unicode matches too).

Deny patterns are tried on the URL as sent and on these forms; allow patterns only on these
forms, so text in the userinfo or an odd spelling of the host cannot satisfy an allow list.
"""

from __future__ import annotations

from urllib.parse import unquote

import idna

__all__ = ["canonical_forms", "canonical_host"]

_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_AUTHORITY_END = "/?#\\"


def canonical_host(host: str) -> str:
    """``host`` as a resolver sees it: lower-case ASCII (IDNA A-labels), no trailing dot.

    Labels that are not valid IDNA (an underscore, a leading hyphen) are kept as mapped and
    lower-cased rather than refused: the rules judge, they do not validate.
    """
    if "%" in host:
        host = unquote(host, errors="replace")
    if not host.isascii():
        host = host.translate(_DOTS)
        try:
            host = idna.uts46_remap(host, std3_rules=False, transitional=False)
        except idna.IDNAError:
            host = host.lower()
        labels = []
        for label in host.split("."):
            if not label.isascii():
                try:
                    label = idna.alabel(label).decode("ascii")
                except (idna.IDNAError, UnicodeError):
                    pass
            labels.append(label.lower())
        host = ".".join(labels)
    else:
        host = host.lower()
    if host.endswith(".") and len(host) > 1:
        host = host[:-1]
    return host


def _unicode_host(host: str) -> str | None:
    if "xn--" not in host:
        return None
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                label = idna.ulabel(label)
            except (idna.IDNAError, UnicodeError):
                return None
        labels.append(label)
    return ".".join(labels)


def canonical_forms(url: str) -> tuple[str, ...]:
    """The canonical forms of an ``http(s)://`` URL (one, or two when the host has IDNA
    labels); ``(url,)`` for anything without ``://``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return (url,)
    scheme = scheme.lower()
    end = len(rest)
    for ch in _AUTHORITY_END:
        i = rest.find(ch)
        if i != -1 and i < end:
            end = i
    authority, tail = rest[:end], rest[end:]
    host = authority.rpartition("@")[2]
    port = ""
    if host.startswith("["):  # an IPv6 literal
        close = host.find("]")
        if close != -1:
            host, port = host[: close + 1], host[close + 1 :].removeprefix(":")
    else:
        name, colon, digits = host.rpartition(":")
        if colon and (digits.isdigit() or not digits):
            host, port = name, digits
    if port.isdigit():
        port = str(int(port))
    if port == _DEFAULT_PORTS.get(scheme):
        port = ""
    host = canonical_host(host)
    suffix = f":{port}{tail}" if port else tail
    ascii_form = f"{scheme}://{host}{suffix}"
    unicode_host = _unicode_host(host)
    if unicode_host is None:
        return (ascii_form,)
    return (ascii_form, f"{scheme}://{unicode_host}{suffix}")
