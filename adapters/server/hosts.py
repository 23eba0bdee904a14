"""Which ``Host`` headers the server answers: a guard against DNS rebinding.

A web page on ``evil.example`` can make its own name resolve to 127.0.0.1 and then drive a
key-less server on localhost from the victim's browser; the browser still sends
``Host: evil.example``. So a server bound to a loopback address answers only Host values that
name a loopback host (``localhost``, ``127.0.0.1``, ``[::1]``, any port) unless told otherwise;
a server bound to another address accepts any Host (it is reachable by other names anyway and
should use an API key). ``allowed_hosts`` replaces the default: host names, ``*.example.org``
for a domain and its subdomains, or ``*`` for any.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    """A loopback interface address or name (127.0.0.0/8, ::1, localhost)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a Host header value, lower-cased: ``[::1]:8000`` -> ``::1``."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


class HostCheck:
    """``allowed(scope)``: whether a request's Host header may be answered."""

    def __init__(self, allowed_hosts: list[str] | None = None):
        self.patterns = None if allowed_hosts is None else [h.strip().lower() for h in allowed_hosts if h.strip()]

    def allowed(self, scope: dict) -> bool:
        header = None
        for name, value in scope.get("headers", []):
            if name == b"host":
                header = value.decode("latin-1")
                break
        if header is None:  # HTTP/1.0 without Host: no browser sends that, nothing to rebind
            return True
        host = host_name(header)
        if self.patterns is None:
            bound = (scope.get("server") or (None, None))[0]
            return not is_loopback(bound) or is_loopback(host)
        return any(_match(pattern, host) for pattern in self.patterns)

    def describe(self) -> str:
        if self.patterns is None:
            return "localhost, 127.0.0.1 or [::1] (the server is bound to a loopback address)"
        return ", ".join(self.patterns) or "(none)"


def _match(pattern: str, host: str) -> bool:
    if pattern == "*":
        return True
    pattern = host_name(pattern) if not pattern.startswith("*.") else pattern
    if pattern.startswith("*."):
        return host == pattern[2:] or host.endswith(pattern[1:])
    return host == pattern
