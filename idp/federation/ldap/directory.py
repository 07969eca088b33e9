"""The hospital directory over LDAP (ldap3): searches as the read-only service account from a
small pool of open connections, password checks as a bind of the user on a connection of its
own, every wait bounded by policy timeouts. Anything that keeps an answer from coming back is
DirectoryUnavailable, never "wrong password"."""

from __future__ import annotations

import ipaddress
import logging
import queue
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from idp.accounts.verifiers import PasswordServiceUnavailable
from idp.context import policy, settings
from idp.policy import LdapPolicy

log = logging.getLogger("idp.federation.ldap")


class DirectoryUnavailable(PasswordServiceUnavailable):
    """The directory did not answer (down, timeout, TLS or service-account failure)."""


@dataclass(frozen=True)
class Entry:
    dn: str
    guid: str
    username: str
    email: str
    given_name: str
    family_name: str
    employee_number: str | None
    groups: tuple[str, ...]  # group CNs
    npi: str | None
    disabled: bool  # disabled in the directory (AD: userAccountControl & ACCOUNTDISABLE)
    locked: bool  # locked out in the directory (AD: lockoutTime != 0)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _server(rules: LdapPolicy) -> tuple[ldap3.Server, bool]:
    """The server and whether StartTLS is owed. A cleartext ldap:// without StartTLS only to a
    loopback address when the policy says so."""
    url = settings().ldap_url
    if not url:
        raise DirectoryUnavailable("LDAP_URL is not set")
    parts = urlsplit(url)
    host = parts.hostname or ""
    # Certificate and host name checked (ldap3 builds a default SSL context from this).
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=rules.ca_file or None)
    secure = parts.scheme == "ldaps"
    start_tls = not secure and rules.start_tls
    if not secure and not start_tls and not (rules.plaintext_loopback and _is_loopback(host)):
        raise DirectoryUnavailable("LDAP_URL is ldap:// without StartTLS: passwords would "
                                   "cross the network in clear (federation.toml start_tls)")
    server = ldap3.Server(host, port=parts.port, use_ssl=secure, tls=tls,
                          connect_timeout=rules.connect_timeout, get_info=ldap3.NONE)
    return server, start_tls


def _open(rules: LdapPolicy, user: str | None, password: str | None) -> ldap3.Connection:
    """A connection bound as `user` (TLS first when owed); raises LDAPException on failure."""
    server, start_tls = _server(rules)
    conn = ldap3.Connection(server, user=user, password=password,
                            authentication=ldap3.SIMPLE, receive_timeout=rules.operation_timeout,
                            raise_exceptions=False, read_only=True, auto_referrals=False)
    conn.open()
    if start_tls and not conn.start_tls():
        conn.unbind()
        raise DirectoryUnavailable("StartTLS refused by the directory")
    conn.bind()
    return conn


# Open service-account connections of this process, per application (a cache of sockets, not
# state: losing it costs one bind).
_pools: dict[int, queue.LifoQueue[ldap3.Connection]] = {}
_pools_lock = threading.Lock()


def _pool(rules: LdapPolicy) -> queue.LifoQueue[ldap3.Connection]:
    key = id(settings())
    with _pools_lock:
        return _pools.setdefault(key, queue.LifoQueue(maxsize=rules.pool_size))


def reset_pool() -> None:
    """Close this application's pooled connections (tests, a changed service password)."""
    pool = _pools.get(id(settings()))
    while pool is not None and not pool.empty():
        try:
            pool.get_nowait().unbind()
        except (queue.Empty, LDAPException, OSError):
            pass


def _service_connection(rules: LdapPolicy) -> ldap3.Connection:
    conn = _open(rules, settings().ldap_bind_dn, settings().ldap_bind_password)
    if not conn.bound:
        result = conn.result.get("description", "bind failed") if conn.result else "no answer"
        conn.unbind()
        raise DirectoryUnavailable(f"the service account cannot bind: {result}")
    return conn


@contextmanager
def service() -> Iterator[ldap3.Connection]:
    """A connection bound as the service account, from the pool (returned when it worked)."""
    rules = policy().ldap
    pool = _pool(rules)
    try:
        conn = pool.get_nowait()
    except queue.Empty:
        conn = None
    try:
        if conn is None or conn.closed:
            conn = _service_connection(rules)
        yield conn
    except LDAPException as exc:
        if conn is not None:
            _discard(conn)
        raise DirectoryUnavailable(f"directory error: {type(exc).__name__}") from None
    except BaseException:
        if conn is not None:
            _discard(conn)
        raise
    else:
        try:
            pool.put_nowait(conn)
        except queue.Full:
            conn.unbind()


def _discard(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except (LDAPException, OSError):
        pass


def _attributes(rules: LdapPolicy) -> list[str]:
    names = [rules.username_attribute, rules.email_attribute, rules.given_name_attribute,
             rules.family_name_attribute, rules.employee_number_attribute,
             rules.groups_attribute, rules.npi_attribute, rules.guid_attribute,
             rules.disabled_attribute, rules.locked_attribute]
    return sorted({n for n in names if n})


def _raw(attrs: dict[str, list[bytes]], name: str) -> list[bytes]:
    if not name:
        return []
    for key, values in attrs.items():
        if key.lower() == name.lower():
            return list(values)
    return []


def _text(attrs: dict[str, list[bytes]], name: str) -> str:
    values = _raw(attrs, name)
    return values[0].decode("utf-8", "replace").strip() if values else ""


def _int(attrs: dict[str, list[bytes]], name: str) -> int:
    try:
        return int(_text(attrs, name) or "0")
    except ValueError:
        return 0


def _guid(raw: bytes) -> str:
    """AD objectGUID is 16 bytes (little-endian UUID); OpenLDAP's entryUUID is text."""
    if len(raw) == 16:
        try:
            raw.decode("ascii")
        except UnicodeDecodeError:
            return str(uuid.UUID(bytes_le=raw))
    return raw.decode("utf-8", "replace").strip().lower()


def _cn(group_dn: str) -> str:
    try:
        first = parse_dn(group_dn)[0]
    except LDAPException:
        return ""
    return first[1] if first[0].lower() == "cn" else ""


def _entry(dn: str, attrs: dict[str, list[bytes]], rules: LdapPolicy) -> Entry | None:
    guid_values = _raw(attrs, rules.guid_attribute)
    username = _text(attrs, rules.username_attribute)
    if not guid_values or not username:
        return None
    disabled = False
    if rules.disabled_attribute and rules.disabled_mask:  # a bit field (userAccountControl)
        disabled = bool(_int(attrs, rules.disabled_attribute) & rules.disabled_mask)
    elif rules.disabled_attribute:  # a flag: any value but FALSE/0 disables
        disabled = _text(attrs, rules.disabled_attribute).upper() not in ("", "FALSE", "0")
    locked = bool(rules.locked_attribute) and _int(attrs, rules.locked_attribute) != 0
    groups = tuple(cn for value in _raw(attrs, rules.groups_attribute)
                   if (cn := _cn(value.decode("utf-8", "replace"))))
    return Entry(dn=dn, guid=_guid(guid_values[0]), username=username,
                 email=_text(attrs, rules.email_attribute),
                 given_name=_text(attrs, rules.given_name_attribute),
                 family_name=_text(attrs, rules.family_name_attribute),
                 employee_number=_text(attrs, rules.employee_number_attribute) or None,
                 groups=groups, npi=_text(attrs, rules.npi_attribute) or None,
                 disabled=disabled, locked=locked)


def find(username: str) -> Entry | None:
    """The one entry whose username attribute is `username` (escaped into the filter: a name
    can never widen the search); None when there is none or more than one."""
    rules = policy().ldap
    search = f"(&{rules.user_filter}({rules.username_attribute}="\
             f"{escape_filter_chars(username)}))"
    with service() as conn:
        conn.search(rules.user_base, search, search_scope=ldap3.SUBTREE,
                    attributes=_attributes(rules), size_limit=2)
        code = conn.result.get("result") if conn.result else None
        if code not in (0, 4, 32):  # success, sizeLimitExceeded, noSuchObject
            raise DirectoryUnavailable(f"search failed: {conn.result.get('description')}")
        found = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
    if len(found) != 1:
        return None
    return _entry(found[0]["dn"], found[0]["raw_attributes"], rules)


def entries() -> list[Entry]:
    """Every entry under user_base matching user_filter (paged)."""
    rules = policy().ldap
    result: list[Entry] = []
    with service() as conn:
        pages = conn.extend.standard.paged_search(
            rules.user_base, rules.user_filter, search_scope=ldap3.SUBTREE,
            attributes=_attributes(rules), paged_size=rules.sync_page_size, generator=True)
        for item in pages:
            if item.get("type") != "searchResEntry":
                continue
            entry = _entry(item["dn"], item["raw_attributes"], rules)
            if entry is not None:
                result.append(entry)
        code = conn.result.get("result") if conn.result else None
        if code not in (0, None):
            raise DirectoryUnavailable(f"search failed: {conn.result.get('description')}")
    return result


def bind(dn: str, password: str) -> bool:
    """True only when the directory accepted this DN with this password. An empty DN or
    password is never sent: an LDAP "unauthenticated bind" succeeds without checking
    anything (RFC 4513 5.1.2)."""
    if not dn or not password:
        return False
    rules = policy().ldap
    try:
        conn = _open(rules, dn, password)
    except LDAPException as exc:
        raise DirectoryUnavailable(f"directory error: {type(exc).__name__}") from None
    try:
        code = conn.result.get("result") if conn.result else None
        if conn.bound and code == 0:
            return True
        if code is None:
            raise DirectoryUnavailable("the directory did not answer the bind")
        # 49 invalidCredentials (AD also for disabled/locked/expired), or another refusal:
        # the directory answered, and the answer is no.
        return False
    finally:
        _discard(conn)
