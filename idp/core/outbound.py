"""The one HTTP client for every call the IdP makes on someone else's behalf (back-channel
logout URIs a client registered, the SMS gateway, the NPI registry, the EHR's patient
directory, and whatever comes later: webhooks, jwks_uri, upstream identity providers).

Without it, whoever can name a URL (a dynamically registered client, or a DNS record it
controls) can aim the IdP at its own network: cloud metadata at 169.254.169.254, a database on
127.0.0.1:5432, an admin console on 10.0.0.1 (server-side request forgery). The rules
(policies/outbound.toml, plus IDP_OUTBOUND_ALLOW):

- https only in production. "Production" is an https issuer: an IdP serving its users over
  TLS calls out over TLS too; a development issuer (http://127.0.0.1:8000) may call http
  URLs. `require_https = "always"` asks for https in development as well.
- The address is checked where the connection is made: the host is resolved (the resolver is
  pluggable: tests make a name's answer change), every address of the answer is checked, and
  the socket is connected to a checked address itself, while the Host header, TLS SNI and the
  certificate check keep the host name. A name that resolved to a public address when it was
  registered and to 127.0.0.1 now (DNS rebinding) is refused now.
- Refused unless the allow-list names it: loopback, private (RFC 1918, fc00::/7), link-local
  (169.254.0.0/16 with the cloud metadata addresses, fe80::/10), multicast, unspecified and
  anything else that is not globally routable (100.64.0.0/10, 192.0.0.0/24, 240.0.0.0/4, the
  documentation ranges, ...); IPv4 inside IPv6 (::ffff:127.0.0.1, 6to4, NAT64, IPv4-
  compatible) is judged as the IPv4 address, legacy IPv4 spellings that resolvers accept
  (2130706433, 0177.0.0.1, 0x7f.1, 127.1) as the address they spell, and "localhost" (and
  *.localhost) as 127.0.0.1 and ::1 without asking DNS (RFC 6761).
- The allow-list holds networks (CIDR, or one address) and host names (".example.org" also
  allows its subdomains); a listed name may resolve to anything. It is how an operator lets
  the IdP reach an internal host (an SMS gateway on the LAN, an RP on 10.x), and how
  development and tests reach loopback: there is no other way around the rules.
- Redirects are never followed, proxies from the environment are not used, the timeouts are
  short, and the answer is read up to a size cap, then the connection is dropped.

A refusal raises OutboundRefused (its reason is safe to show and record); network failures
stay requests exceptions (ResponseTooLarge and AnswerTooSlow among them)."""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import current_app
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses the host name stands for, as text (socket.getaddrinfo's).
Resolver = Callable[[str, int], list[str]]
RESOLVER_KEY = "idp.outbound.resolver"   # app.extensions: a test's resolver

PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
LOCALHOST = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_LEGACY_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")
_HOST_NAME = re.compile(r"\.?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")


class OutboundRefused(Exception):
    """The outbound policy forbids this call. `reason` names the rule (and the address), never
    the URL's path or query, so it may be shown to the client and recorded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ResponseTooLarge(requests.RequestException):
    """The answer is longer than the policy's cap; it was not read to the end."""


class AnswerTooSlow(requests.Timeout):
    """The whole answer did not arrive within the policy's total time."""


# -- addresses ---------------------------------------------------------------------------------
def literal_address(host: str) -> Address | None:
    """The address a URL host spells, or None for a host name. Accepts [v6], a v6 zone
    (dropped), and the legacy IPv4 forms inet_aton and resolvers take (2130706433,
    0177.0.0.1, 0x7f.1, 127.1), so they are judged as the address they reach."""
    text = host.strip("[]").rstrip(".").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(text) and any(c.isdigit() for c in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _embedded_ipv4(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, IPv4-compatible)."""
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64 or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: Address) -> str | None:
    """Why the policy refuses to connect to this address (before the allow-list), or None."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        reason = address_refusal(inner)
        if reason or ip.ipv4_mapped is not None:
            return f"{reason} (IPv4 inside IPv6)" if reason else None
        if ip in IPV4_COMPATIBLE:
            return f"deprecated IPv4-compatible address {ip}"
    if ip.is_unspecified:
        return f"unspecified address {ip}"
    if ip.is_loopback:
        return f"loopback address {ip}"
    if ip.is_link_local:
        return f"link-local address {ip} (cloud metadata lives here)"
    if ip.is_multicast:
        return f"multicast address {ip}"
    if any(ip in net for net in PRIVATE if net.version == ip.version):
        return f"private address {ip}"
    if not ip.is_global:
        return f"address {ip} is not globally routable"
    return None


def parse_allow(entries: Iterable[str], where: str) -> tuple[tuple[Network, ...],
                                                              tuple[str, ...]]:
    """Allow-list entries as (networks, host names); ValueError naming `where` for a bad one."""
    networks: list[Network] = []
    hosts: list[str] = []
    for raw in entries:
        entry = str(raw).strip().lower()
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry.strip("[]"))
        except ValueError as exc:
            if "/" in entry or literal_address(entry) is not None:
                raise ValueError(f"{where}: {raw!r} is not a network ({exc}); write a CIDR "
                                 "such as 10.0.0.0/8 or ::1") from None
            if not _HOST_NAME.fullmatch(entry.rstrip(".")):
                raise ValueError(f"{where}: {raw!r} is neither a network nor a host name"
                                 ) from None
            hosts.append(entry.rstrip("."))
            continue
        if network.prefixlen == 0:
            raise ValueError(f"{where}: {raw!r} would allow every address (no protection)")
        networks.append(network)
    return tuple(networks), tuple(hosts)


def system_resolver(host: str, port: int) -> list[str]:
    """socket.getaddrinfo's addresses for a TCP connection, in its order."""
    return [info[4][0] for info in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)]


# -- the rules ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutboundRules:
    allow_networks: tuple[Network, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    https_only: bool = True
    connect_timeout: float = 3
    read_timeout: float = 5
    total_timeout: float = 10
    max_response_bytes: int = 1 << 20

    @classmethod
    def build(cls, rules: Any, extra_allow: Iterable[str], issuer: str) -> OutboundRules:
        """From policies/outbound.toml (idp.policy.OutboundPolicy), IDP_OUTBOUND_ALLOW and the
        issuer: https is required when the issuer is https, or always if the policy says so.
        Without a policy (a Policy built by hand) the defaults hold: nothing internal allowed."""
        if rules is None:
            rules = _DEFAULT_POLICY
        policy_networks, policy_hosts = parse_allow(rules.allow, "outbound.toml allow")
        env_networks, env_hosts = parse_allow(extra_allow, "IDP_OUTBOUND_ALLOW")
        return cls(policy_networks + env_networks, policy_hosts + env_hosts,
                   rules.require_https == "always" or issuer.startswith("https://"),
                   rules.connect_timeout, rules.read_timeout, rules.total_timeout,
                   rules.max_response_bytes)


@dataclass(frozen=True)
class _Defaults:
    allow: tuple[str, ...] = ()
    require_https: str = "production"
    connect_timeout: float = OutboundRules.connect_timeout
    read_timeout: float = OutboundRules.read_timeout
    total_timeout: float = OutboundRules.total_timeout
    max_response_bytes: int = OutboundRules.max_response_bytes


_DEFAULT_POLICY = _Defaults()


# -- the client --------------------------------------------------------------------------------
class OutboundClient:
    def __init__(self, rules: OutboundRules, resolver: Resolver | None = None) -> None:
        self.rules = rules
        self.resolver = resolver or system_resolver

    # policy checks
    def host_allowed(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return any(name == entry or (entry.startswith(".") and name.endswith(entry))
                   for entry in self.rules.allow_hosts)

    def address_allowed(self, ip: Address) -> bool:
        candidates = [ip] + ([ip.ipv4_mapped] if ip.version == 6 and ip.ipv4_mapped else [])
        return any(c in net for c in candidates for net in self.rules.allow_networks
                   if net.version == c.version)

    def check_address(self, ip: Address, host: str) -> None:
        reason = address_refusal(ip)
        if reason and not self.address_allowed(ip):
            literal = literal_address(host) is not None
            raise OutboundRefused(reason if literal else f"{host} resolves to a {reason}")

    def check_scheme(self, url: str) -> str:
        """The URL's host; OutboundRefused for a scheme the rules do not allow."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises on a malformed port)
        except ValueError:
            raise OutboundRefused("not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OutboundRefused("only http and https URLs with a host are called")
        if parts.scheme != "https" and self.rules.https_only:
            raise OutboundRefused("https is required (the issuer is https)")
        return parts.hostname

    def addresses(self, host: str, port: int) -> list[Address]:
        """Every address `host` stands for, each checked (OutboundRefused if any is
        forbidden); socket.gaierror when it does not resolve."""
        literal = literal_address(host)
        name = host.lower().rstrip(".")
        if literal is not None:
            found = [literal]
        elif name == "localhost" or name.endswith(".localhost"):
            found = list(LOCALHOST)   # RFC 6761 §6.3: loopback, whatever a resolver says
        else:
            found = []
            for text in self.resolver(host, port):
                ip = literal_address(str(text))
                if ip is None:
                    raise OutboundRefused(f"{host} resolves to something that is not an address")
                found.append(ip)
            if not found:
                raise socket.gaierror(socket.EAI_NONAME, "no address")
        if not self.host_allowed(host):
            for ip in found:
                self.check_address(ip, host)
        return found

    def check_url(self, url: str) -> None:
        """Registration: would the policy let the IdP call this URL? A name that does not
        resolve now passes (delivery checks again, at connect time)."""
        host = self.check_scheme(url)
        port = urlsplit(url).port or (443 if url.lower().startswith("https:") else 80)
        try:
            self.addresses(host, port)
        except (OSError, UnicodeError):
            return

    # requests
    def request(self, method: str, url: str, *, params: Any = None, data: Any = None,
                json: Any = None, headers: dict[str, str] | None = None,
                timeout: float | None = None, max_bytes: int | None = None
                ) -> requests.Response:
        """One request under the rules; the answer's body is read (up to the cap) before this
        returns, so `.content`, `.json()` work and the connection is closed."""
        self.check_scheme(url)
        connect, read = self.rules.connect_timeout, self.rules.read_timeout
        if timeout is not None:
            connect, read = min(timeout, connect), min(timeout, read)
        deadline = time.monotonic() + self.rules.total_timeout
        cap = min(max_bytes or self.rules.max_response_bytes, self.rules.max_response_bytes)
        with requests.Session() as session:
            session.trust_env = False   # no proxy, netrc or CA bundle from the environment
            adapter = _GuardedAdapter(self)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            response = session.request(method, url, params=params, data=data, json=json,
                                       headers=headers, timeout=(connect, read),
                                       allow_redirects=False, stream=True)
            try:
                response._content = _read(response, cap, deadline)
            finally:
                response.close()
        return response

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)


def _read(response: requests.Response, cap: int, deadline: float) -> bytes:
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > cap:
        raise ResponseTooLarge(f"the answer is larger than {cap} bytes")
    body = bytearray()
    for chunk in response.iter_content(16384):
        body += chunk
        if len(body) > cap:
            raise ResponseTooLarge(f"the answer is larger than {cap} bytes")
        if time.monotonic() > deadline:
            raise AnswerTooSlow("the answer did not arrive in time")
    return bytes(body)


# -- the connection: resolve, check, connect to the checked address ----------------------------
def _connect(conn: HTTPConnection, guard: OutboundClient | None) -> socket.socket:
    if guard is None:
        raise OutboundRefused("connection made outside the outbound client")
    host = conn.host
    port = conn.port or (443 if isinstance(conn, HTTPSConnection) else 80)
    try:
        addresses = guard.addresses(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise NameResolutionError(host, conn, socket.gaierror(str(exc))) from exc
    timeout = conn.timeout if isinstance(conn.timeout, (int, float)) else None
    failure: OSError | None = None
    for ip in addresses:
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                             socket.SOCK_STREAM)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect((str(ip), port))
            return sock
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeoutError(conn, f"Connection to {host} timed out") from exc
        except OSError as exc:
            sock.close()
            failure = exc
    raise NewConnectionError(conn, f"Failed to establish a new connection: {failure}")


class _GuardedHTTPConnection(HTTPConnection):
    guard: OutboundClient | None = None

    def _new_conn(self) -> socket.socket:
        return _connect(self, self.guard)


class _GuardedHTTPSConnection(HTTPSConnection):
    guard: OutboundClient | None = None

    def _new_conn(self) -> socket.socket:
        return _connect(self, self.guard)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection
    guard: OutboundClient | None = None

    def _new_conn(self) -> Any:
        conn = super()._new_conn()
        conn.guard = self.guard
        return conn


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection
    guard: OutboundClient | None = None

    def _new_conn(self) -> Any:
        conn = super()._new_conn()
        conn.guard = self.guard
        return conn


class _GuardedPoolManager(PoolManager):
    def __init__(self, guard: OutboundClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guard = guard
        self.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def _new_pool(self, scheme: str, host: str, port: int,
                  request_context: dict[str, Any] | None = None) -> Any:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.guard = self.guard
        return pool


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, guard: OutboundClient) -> None:
        self.guard = guard
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        self.poolmanager = _GuardedPoolManager(self.guard, num_pools=connections,
                                               maxsize=maxsize, block=block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise OutboundRefused("outbound calls do not go through a proxy")


# -- the application's client ------------------------------------------------------------------
def client() -> OutboundClient:
    """The current app's client: policies/outbound.toml, IDP_OUTBOUND_ALLOW, the issuer's
    scheme, and the resolver a test put in app.extensions[RESOLVER_KEY] (else the system's)."""
    extensions = current_app.extensions
    runtime = extensions["idp"]
    rules = OutboundRules.build(runtime.policy.outbound, runtime.settings.outbound_allow,
                                runtime.settings.issuer)
    return OutboundClient(rules, extensions.get(RESOLVER_KEY))
