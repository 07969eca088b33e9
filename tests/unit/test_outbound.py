"""The outbound client's rules (idp/core/outbound.py) on their own: which addresses are refused
in which spelling, the allow-list, and, against real sockets on loopback, that the check is
made where the connection is (so a changed DNS answer is caught), that no connection is opened
to a refused address, that redirects are not followed, proxies not used, answers capped, and
that TLS still names the host."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from idp.core.outbound import (
    OutboundClient,
    OutboundRefused,
    OutboundRules,
    ResponseTooLarge,
    address_refusal,
    literal_address,
    parse_allow,
)

LOOPBACK = parse_allow(["127.0.0.0/8", "::1"], "test")[0]
PUBLIC = "93.184.216.34"


def rules(allow: tuple[str, ...] = (), https_only: bool = False, **kw) -> OutboundRules:
    networks, hosts = parse_allow(allow, "test")
    return OutboundRules(networks, hosts, https_only, **kw)


class Resolver:
    """A DNS whose answers the test sets (and changes); unknown names do not resolve."""

    def __init__(self, **answers: list[str]) -> None:
        self.answers = {k.replace("_", "-") + ".test": v for k, v in answers.items()}
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


# -- addresses ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("address", "family"), [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("172.31.255.254", "private"),
    ("192.168.1.1", "private"), ("fc00::1", "private"), ("fd00:ec2::254", "private"),
    ("169.254.169.254", "link-local"), ("169.254.0.1", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("100.64.0.1", "not globally routable"), ("0.1.2.3", "not globally routable"),
    ("192.0.0.170", "not globally routable"), ("198.18.0.1", "not globally routable"),
    ("240.0.0.1", "not globally routable"), ("255.255.255.255", "not globally routable"),
    ("192.0.2.1", "not globally routable"), ("2001:db8::1", "not globally routable"),
    # IPv4 inside IPv6 is judged as the IPv4 address it carries
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:10.0.0.1", "private"), ("64:ff9b::a00:1", "private"),
    ("2002:7f00:1::", "loopback"), ("::7f00:1", "loopback"), ("::808:808", "IPv4-compatible"),
])
def test_forbidden_addresses(address, family):
    reason = address_refusal(ipaddress.ip_address(address))
    assert reason is not None and family in reason


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "1.1.1.1", "2606:4700::1111",
                                     "::ffff:8.8.8.8", "2a00:1450:4001:80b::200e"])
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(("host", "address"), [
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"), ("127.1", "127.0.0.1"), ("017700000001", "127.0.0.1"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"), ("2852039166", "169.254.169.254"),
    ("0", "0.0.0.0"), ("[::1]", "::1"), ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("fe80::1%eth0", "fe80::1"), ("127.0.0.1.", "127.0.0.1"),
])
def test_every_spelling_of_an_address_is_read_as_that_address(host, address):
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.org", "cafe.example", "deadbeef", "a.b.c.d",
                                  "127.0.0.1 x", "1.2.3.4.5", "0x7g.1"])
def test_host_names_are_not_addresses(host):
    assert literal_address(host) is None


def test_allow_list_entries():
    networks, hosts = parse_allow(["10.0.0.0/8", "::1", " SMS.Lan. ", ".corp.example", ""], "t")
    assert [str(n) for n in networks] == ["10.0.0.0/8", "::1/128"]
    assert hosts == ("sms.lan", ".corp.example")
    for bad, why in [("10.0.0.1/8", "not a network"), ("0.0.0.0/0", "every address"),
                     ("::/0", "every address"), ("2130706433", "not a network"),
                     ("http://x", "not a network"), ("a b", "neither"), ("*.lan", "neither")]:
        with pytest.raises(ValueError, match=why):
            parse_allow([bad], "where")


# -- the URL check (registration) --------------------------------------------------------------
def test_check_url_refuses_names_resolving_inward_and_passes_the_rest():
    dns = Resolver(inward=["127.0.0.1"], metadata=["169.254.169.254"], mixed=[PUBLIC, "10.0.0.5"],
                   v6=["::1"], public=[PUBLIC, "2606:4700::1111"], mapped=["::ffff:127.0.0.1"])
    http = OutboundClient(rules(), dns)
    for host, family in [("inward", "loopback"), ("metadata", "link-local"),
                         ("mixed", "private"), ("v6", "loopback"), ("mapped", "loopback")]:
        with pytest.raises(OutboundRefused, match=family) as refused:
            http.check_url(f"https://{host}.test/bcl?secret=1")
        assert refused.value.reason.startswith(f"{host}.test resolves to")
        assert "secret" not in refused.value.reason and "/bcl" not in refused.value.reason
    http.check_url("https://public.test/bcl")
    http.check_url("https://nowhere.test/bcl")   # does not resolve (yet): delivery checks
    for host in ("localhost", "LOCALHOST.", "app.localhost"):   # RFC 6761: never asked
        with pytest.raises(OutboundRefused, match="loopback"):
            http.check_url(f"http://{host}:8001/bcl")
    for literal in ("https://2130706433/", "https://0x7f.1/", "https://[::ffff:127.0.0.1]/",
                    "https://[fc00::1]/", "https://0.0.0.0/", "https://[::]/"):
        with pytest.raises(OutboundRefused):
            http.check_url(literal)
    assert "2130706433" not in dns.asked   # literals are judged, never resolved


def test_the_allow_list_admits_networks_and_names_and_nothing_else():
    dns = Resolver(other=["127.0.0.1"], sms_lan=["10.1.2.3"], rp_corp=["192.168.7.7"])
    dns.answers["a.rp.corp.test"] = ["192.168.7.7"]
    http = OutboundClient(rules(("127.0.0.0/8", "sms-lan.test", ".rp.corp.test")), dns)
    http.check_url("http://127.0.0.1:5432/")
    http.check_url("https://[::ffff:127.0.0.1]/")   # the IPv4 it carries is allow-listed
    http.check_url("https://sms-lan.test/send")     # a listed name, whatever it resolves to
    http.check_url("https://a.rp.corp.test/")       # a subdomain of a listed ".name"
    http.check_url("https://other.test/")           # resolves into an allowed network
    with pytest.raises(OutboundRefused, match="private"):
        http.check_url("https://rp-corp.test/")     # not under .rp.corp.test
    with pytest.raises(OutboundRefused, match="loopback"):
        http.check_url("https://[::1]/")             # ::1 is not in 127.0.0.0/8
    with pytest.raises(OutboundRefused, match="link-local"):
        http.check_url("https://169.254.169.254/")


def test_https_only_in_production():
    with pytest.raises(OutboundRefused, match="https is required"):
        OutboundClient(rules(https_only=True)).check_url(f"http://{PUBLIC}/bcl")
    OutboundClient(rules(https_only=True)).check_url(f"https://{PUBLIC}/bcl")
    OutboundClient(rules(https_only=False)).check_url(f"http://{PUBLIC}/bcl")
    for url in ("ftp://x.example/", "file:///etc/passwd", "gopher://127.0.0.1/", "https:///x"):
        with pytest.raises(OutboundRefused, match="only http and https"):
            OutboundClient(rules()).check_url(url)


def test_the_https_rule_follows_the_issuer():
    class Policy:
        allow, require_https = (), "production"
        connect_timeout, read_timeout, total_timeout, max_response_bytes = 3, 5, 10, 4096

    assert OutboundRules.build(Policy, (), "https://idp.example").https_only
    assert not OutboundRules.build(Policy, (), "http://127.0.0.1:8000").https_only
    Policy.require_https = "always"
    assert OutboundRules.build(Policy, (), "http://127.0.0.1:8000").https_only


# -- real connections --------------------------------------------------------------------------
class Listener:
    """A bare listening socket: `pending()` says whether anybody connected to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def pending(self) -> int:
        self.sock.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


class Server:
    """A tiny HTTP server on loopback whose answer the test chooses; records requests."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None,
                 body: bytes = b"", chunks: int = 0) -> None:
        self.seen: list[tuple[str, str, str]] = []
        box = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if chunks else "HTTP/1.0"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                box.seen.append((self.command, self.path, self.headers.get("Host", "")))
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if chunks:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        for _ in range(chunks):
                            self.wfile.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
                        self.wfile.write(b"0\r\n\r\n")
                    except OSError:
                        box.cut = True   # the client hung up before the end
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                return None

        self.cut = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_refused_address_is_never_connected_to(listener):
    http = OutboundClient(rules())
    for host in ("127.0.0.1", "2130706433", "0x7f.1", "127.1", "[::ffff:127.0.0.1]"):
        with pytest.raises(OutboundRefused, match="loopback"):
            http.post(f"http://{host}:{listener.port}/bcl", data={"logout_token": "t"})
    named = OutboundClient(rules(), Resolver(rp=["127.0.0.1"]))
    with pytest.raises(OutboundRefused, match="rp.test resolves to a loopback"):
        named.post(f"http://rp.test:{listener.port}/bcl")
    assert listener.pending() == 0


def test_dns_rebinding_is_caught_at_connect_time(listener):
    """Public when checked at registration, loopback when the IdP connects: refused, and no
    connection is made; the resolver is asked again at connect time, not trusted from before."""
    dns = Resolver(rebind=[PUBLIC])
    http = OutboundClient(rules(), dns)
    http.check_url(f"http://rebind.test:{listener.port}/bcl")
    dns.answers["rebind.test"] = ["127.0.0.1"]
    with pytest.raises(OutboundRefused, match="loopback"):
        http.post(f"http://rebind.test:{listener.port}/bcl")
    assert dns.asked == ["rebind.test", "rebind.test"]
    assert listener.pending() == 0


def test_the_connection_goes_to_the_checked_address_under_the_host_name():
    """rp.test exists only in the test resolver: the request reaching the server proves the
    socket was connected to the address the check saw (not resolved a second time by the
    system), and the Host header still names rp.test."""
    server = Server(body=b"ok")
    try:
        http = OutboundClient(rules(("127.0.0.0/8",)), Resolver(rp=["127.0.0.1"]))
        response = http.get(f"http://rp.test:{server.port}/x")
        assert response.status_code == 200 and response.content == b"ok"
        assert server.seen == [("GET", "/x", f"rp.test:{server.port}")]
    finally:
        server.close()


def test_redirects_are_not_followed(listener):
    server = Server(status=302, headers={"Location": f"http://127.0.0.1:{listener.port}/in"})
    try:
        http = OutboundClient(rules(("127.0.0.0/8",)))
        response = http.post(f"http://127.0.0.1:{server.port}/bcl", data={"a": "b"})
        assert response.status_code == 302
        assert [s[:2] for s in server.seen] == [("POST", "/bcl")]
        assert listener.pending() == 0
    finally:
        server.close()


def test_proxies_from_the_environment_are_not_used(monkeypatch):
    closed = Listener()
    closed.close()   # a proxy nobody answers at: using it would fail the request
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed.port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed.port}")
    server = Server(body=b"direct")
    try:
        http = OutboundClient(rules(("127.0.0.0/8",)))
        assert http.get(f"http://127.0.0.1:{server.port}/").content == b"direct"
    finally:
        server.close()


def test_an_oversized_answer_is_cut():
    endless = Server(chunks=400)   # 6.5 MB, chunked: no length announced
    announced = Server(body=b"y" * 70000)
    try:
        http = OutboundClient(rules(("127.0.0.0/8",), max_response_bytes=65536))
        with pytest.raises(ResponseTooLarge):
            http.get(f"http://127.0.0.1:{endless.port}/")
        with pytest.raises(ResponseTooLarge):
            http.get(f"http://127.0.0.1:{announced.port}/")
        with pytest.raises(ResponseTooLarge):   # a caller may ask for less, never for more
            http.get(f"http://127.0.0.1:{announced.port}/", max_bytes=1024)
        small = OutboundClient(rules(("127.0.0.0/8",), max_response_bytes=1 << 20))
        assert len(small.get(f"http://127.0.0.1:{announced.port}/").content) == 70000
    finally:
        endless.close()
        announced.close()


def test_network_failures_are_not_refusals():
    closed = Listener()
    closed.close()
    http = OutboundClient(rules(("127.0.0.0/8",)), Resolver())
    with pytest.raises(requests.ConnectionError):
        http.get(f"http://127.0.0.1:{closed.port}/")
    with pytest.raises(requests.ConnectionError):
        http.get("http://nowhere.test/")   # does not resolve at delivery: a network failure


def _self_signed(name: str, tmp_path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_tls_names_the_host_and_verifies_its_certificate(tmp_path):
    """Connecting to the checked address must not weaken TLS: SNI carries the host name, and
    a certificate no trusted CA signed is refused (a network failure, not a refusal)."""
    cert, key = _self_signed("rp.test", tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        http = OutboundClient(rules(("127.0.0.0/8",), https_only=True),
                              Resolver(rp=["127.0.0.1"]))
        with pytest.raises(requests.exceptions.SSLError):
            http.get(f"https://rp.test:{server.getsockname()[1]}/")
        thread.join(10)
        assert names == ["rp.test"]
    finally:
        server.close()


def test_make_run_reaches_its_relying_parties_through_the_allow_list_only():
    """`make run` (clients/devstack.py) adds loopback to IDP_OUTBOUND_ALLOW for the IdP alone,
    keeping what the operator set; the relying parties never see the IdP's variables."""
    from clients.devstack import plan
    from idp.config import Settings

    idp_env, children = plan({"IDP_OUTBOUND_ALLOW": "sms.lan"})
    settings = Settings.from_env({**idp_env, "IDP_SECRET_KEY": "s" * 40})
    assert settings.outbound_allow == ("127.0.0.0/8", "::1", "sms.lan")
    assert [c.env.get("IDP_OUTBOUND_ALLOW") for c in children if c.name != "IdP"] == [None] * 4


@pytest.mark.parametrize("value", ["10.0.0.1/8", "0.0.0.0/0", "2130706433", "a b/c", "*.lan"])
def test_a_bad_allow_list_stops_the_start(value, tmp_path):
    from idp.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="IDP_OUTBOUND_ALLOW"):
        Settings.from_env({"IDP_INSTANCE_DIR": str(tmp_path), "IDP_SECRET_KEY": "s" * 40,
                           "IDP_OUTBOUND_ALLOW": f"127.0.0.0/8, {value}"})


@pytest.mark.parametrize("override", [{"allow": ["10.0.0.1/8"]}, {"allow": ["::/0"]},
                                      {"require_https": "never"}, {"connect_timeout": 0},
                                      {"max_response_bytes": 10}])
def test_a_bad_outbound_policy_stops_the_start(override):
    from idp.config import POLICY_DIR
    from idp.policy import PolicyError, load_policy

    assert load_policy(POLICY_DIR).outbound.allow == ()
    with pytest.raises(PolicyError, match="outbound.toml"):
        load_policy(POLICY_DIR, {"outbound": override})
