"""End-to-end fixtures: ferrymail relays (the real binary) on loopback, a DNS server
(dnsmasq) for relays that talk to each other, and Delta Chat accounts (the real core,
deltachat-rpc-server) configured against them."""

import contextlib
import ipaddress
import json
import os
import pathlib
import random
import shutil
import socket
import string
import subprocess
import sys
import time

import pytest
from deltachat_rpc_client import DeltaChat, Rpc

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOMAIN = "_e2e.test"
PASSWORD = "e2e-password-123"
# Where every client (the apps, and relays delivering to each other) connects from: relays
# listen on other loopback addresses, so the privacy audit can tell this one apart.
CLIENT_ADDRESS = "127.0.0.1"
SESSION_RELAY_HOST = "127.0.0.2"
# Every relay the suite started, and the apps' accounts folder, for the privacy audit at the end.
ALL_RELAYS = []
APP_DIRS = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port}")


class Relay:
    """A ferrymail process with its own config, data and ports. With `standard_ports`, SMTP
    and HTTPS listen on `host` port 25 and 443, where other relays find them (needs root);
    `ports` sets others. A bare IP `domain` is the relay's address literal: addresses are
    `user@[ip]`."""

    def __init__(self, binary: pathlib.Path, directory: pathlib.Path, extra: str = "", domain: str = DOMAIN,
                 host: str = SESSION_RELAY_HOST, standard_ports: bool = False, start: bool = True,
                 ports: dict = None):
        assert host != CLIENT_ADDRESS, "relays listen elsewhere than where clients come from"
        ALL_RELAYS.append(self)
        self.binary = binary
        self.directory = directory
        self.domain = f"[{domain}]" if is_ip(domain) else domain
        self.host = host
        self.ports = {name: free_port() for name in ["smtp", "submission", "submissions", "imap", "imaps", "https", "metrics", "turn", "http"]}
        if standard_ports:
            self.ports.update(smtp=25, https=443)
        self.ports.update(ports or {})
        listen = "".join(f'{name} = "{host}:{port}"\n' for name, port in self.ports.items())
        self.config = directory / "ferrymail.toml"
        # A busy test machine must not look short of resources to the accounts policy.
        self.config.write_text(f'mail_domain = "{domain}"\ndata_dir = "data"\nmax_load_1m = 1000.0\nallow_private_destinations = true\n{extra}\n[listen]\n{listen}')
        self.log = directory / "relay.log"
        self.process = None
        if start:
            self.start()

    def start(self):
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
            env={**os.environ, "RUST_LOG": "info"},
        )
        wait_for_port(self.ports["imaps"], self.host)
        wait_for_port(self.ports["submissions"], self.host)

    def dns_records(self) -> list:
        """`ferrymail dns` for this relay, as dnsmasq records (the A record filled in)."""
        zone = subprocess.check_output([str(self.binary), "dns", "--config", str(self.config)], text=True,
                                       env={**os.environ, "RUST_LOG": "warn"})
        return dnsmasq_records(zone, self.host)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def dnsmasq_records(zone: str, address: str) -> list:
    """A zone file fragment as dnsmasq config lines; the IPv4 placeholder becomes `address`."""
    records = []
    for line in zone.splitlines():
        if line.startswith(";"):
            continue
        name, _ttl, _class, kind, *value = line.split()
        name = name.rstrip(".")
        if kind == "A":
            records.append(f"host-record={name},{address}")
        elif kind == "MX":
            records.append(f"mx-host={name},{value[1].rstrip('.')},{value[0]}")
        elif kind == "TXT":
            records.append(f"txt-record={name}," + " ".join(value).replace('" "', '","'))
        elif kind == "CNAME":
            records.append(f"cname={name},{value[0].rstrip('.')}")
        elif kind == "SRV":
            records.append(f"srv-host={name},{value[3].rstrip('.')},{value[2]},{value[0]},{value[1]}")
    return records


class Network:
    """A loopback network of our own, 127.0.N.0/24, claimed the way the Rust tests claim theirs
    (by holding 127.0.N.1:9), so test runs at the same time do not collide."""

    def __init__(self):
        for n in range(10, 251):
            claim = socket.socket()
            try:
                claim.bind((f"127.0.{n}.1", 9))
            except OSError:
                claim.close()
                continue
            self.n, self.claim = n, claim
            return
        raise RuntimeError("no free loopback network 127.0.N.0/24")

    def ip(self, host: int) -> str:
        return f"127.0.{self.n}.{host}"

    def domain(self, name: str) -> str:
        return f"_{name}{self.n}.test"

    def close(self):
        self.claim.close()


class DnsServer:
    """dnsmasq answering for `*.test` only, with the given records."""

    def __init__(self, directory: pathlib.Path, records: list, port: int):
        self.port = port
        conf = directory / "dnsmasq.conf"
        conf.write_text("\n".join(records) + "\n")
        self.process = subprocess.Popen(
            ["dnsmasq", "--no-daemon", "--no-hosts", "--no-resolv", "--no-poll", "--bind-interfaces",
             "--listen-address=127.0.0.1", f"--port={self.port}", "--local=/test/", "--local-ttl=1",
             "--user=root", f"--conf-file={conf}", f"--pid-file={directory / 'dnsmasq.pid'}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="session", autouse=True)
def privacy_audit():
    """After the whole suite: the address every client connected from appears in no file under
    any relay's data_dir (database, WAL, stored messages, certificates), in no line of any
    relay's log, and in no message the apps received (their accounts' databases and blobs)."""
    yield
    for relay in ALL_RELAYS:
        relay.stop()
    assert ALL_RELAYS, "no relay ran"
    needle = CLIENT_ADDRESS.encode()
    places = [relay.directory / "data" for relay in ALL_RELAYS]
    places.extend(APP_DIRS)
    findings = []
    for place in places:
        for path in sorted(place.rglob("*")):
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                findings.append(str(path))
    for relay in ALL_RELAYS:
        for number, line in enumerate(relay.log_text().splitlines(), 1):
            if CLIENT_ADDRESS in line:
                findings.append(f"{relay.log}:{number}: {line}")
    assert not findings, f"the client address {CLIENT_ADDRESS} was kept:\n" + "\n".join(findings)


@pytest.fixture(scope="session")
def ferrymail_binary() -> pathlib.Path:
    # The binary `cargo test` builds (scripts/test says why not `cargo build`).
    subprocess.check_call(["cargo", "test", "--quiet", "-p", "ferrymail", "--no-run"], cwd=ROOT)
    metadata = json.loads(subprocess.check_output(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT))
    return pathlib.Path(metadata["target_directory"]) / "debug" / "ferrymail"


@pytest.fixture(scope="session")
def relay(ferrymail_binary, tmp_path_factory):
    relay = Relay(ferrymail_binary, tmp_path_factory.mktemp("relay"))
    yield relay
    relay.stop()


@pytest.fixture(scope="session")
def rpc(tmp_path_factory):
    server = shutil.which("deltachat-rpc-server") or str(pathlib.Path(sys.executable).parent / "deltachat-rpc-server")
    apps = tmp_path_factory.mktemp("deltachat")
    APP_DIRS.append(apps)
    with Rpc(accounts_dir=str(apps / "accounts"), rpc_server_path=server) as rpc:
        yield rpc


def random_address(domain: str = DOMAIN) -> str:
    local = "".join(random.choices(string.ascii_lowercase + string.digits, k=9))
    return f"{local}@{domain}"


class AccountFactory:
    """Delta Chat accounts on a test relay; each is created there by its first login."""

    def __init__(self, rpc, relay):
        self.dc = DeltaChat(rpc)
        self.relay = relay

    def transport(self, address: str, password: str = PASSWORD, relay: Relay = None) -> dict:
        relay = relay or self.relay
        return {
            "addr": address,
            "password": password,
            "imapServer": relay.host,
            "imapPort": relay.ports["imaps"],
            "imapSecurity": "ssl",
            "smtpServer": relay.host,
            "smtpPort": relay.ports["submissions"],
            "smtpSecurity": "ssl",
            # The relay of a `_` domain has a self-signed certificate.
            "certificateChecks": "acceptInvalidCertificates",
        }

    def new_account(self, address: str = None, relay: Relay = None):
        relay = relay or self.relay
        account = self.dc.add_account()
        account.add_or_update_transport(self.transport(address or random_address(relay.domain), relay=relay))
        account.bring_online()
        return account

    def online(self, count: int):
        return [self.new_account() for _ in range(count)]


def chat_both_ways(alice, bob, text="hello bob", reply="hello alice"):
    """Alice and Bob know each other's keys (as after scanning a contact QR) and exchange one
    message each way, both end-to-end encrypted."""
    chat = alice.create_chat(bob)
    bob.create_chat(alice)
    chat.send_text(text)
    incoming = bob.wait_for_incoming_msg().get_snapshot()
    assert incoming.text == text
    assert incoming.show_padlock
    incoming.chat.send_text(reply)
    answer = alice.wait_for_incoming_msg().get_snapshot()
    assert answer.text == reply
    assert answer.show_padlock


@pytest.fixture
def accounts(rpc, relay):
    return AccountFactory(rpc, relay)


class Hosts:
    """Names in /etc/hosts for the test's duration: the app resolves the `_` domain like any
    other (getaddrinfo). The file is edited in place (it may be a bind mount) and restored."""

    def __init__(self):
        self.path = pathlib.Path("/etc/hosts")
        self.original = self.path.read_text()

    def add(self, name: str, address: str):
        with self.path.open("a") as f:
            f.write(f"{address} {name}  # ferrymail e2e\n")

    def restore(self):
        with self.path.open("w") as f:
            f.write(self.original)


@contextlib.contextmanager
def web_relay_running(binary: pathlib.Path, directory: pathlib.Path, extra: str = ""):
    """A relay on 127.0.N.2 ports 443/25 under a `_` domain the machine resolves, with the
    realtime relay and TURN; `extra` is added to its config (top-level keys, then tables)."""
    network, hosts = Network(), Hosts()
    domain = network.domain("web")
    try:
        relay = Relay(binary, directory, extra=extra, domain=domain, host=network.ip(2), standard_ports=True, start=False)
        # The apps on this machine talk through the realtime relay in plain HTTP (iroh's client
        # trusts only public CAs) and may relay calls to each other's loopback addresses.
        realtime = f'iroh_relay = "http://{relay.host}:{relay.ports["http"]}"\nturn_allow_private_peers = true\n'
        relay.config.write_text(realtime + relay.config.read_text())
        try:
            relay.start()
            hosts.add(domain, network.ip(2))
            yield relay
        finally:
            relay.stop()
    finally:
        hosts.restore()
        network.close()


@pytest.fixture
def web_relay(ferrymail_binary, tmp_path):
    privacy = ('privacy_mail = "privacy@example.org"\nprivacy_postal = "Jane Operator\\nMain Street 1"\n'
               'privacy_supervisor = "The State Commissioner"\nmax_user_send_per_minute = 42\n')
    with web_relay_running(ferrymail_binary, tmp_path, privacy) as relay:
        yield relay


def example_policy(name: str) -> pathlib.Path:
    """A policy of examples/policies/, built as its README says (into the folder the Rust
    tests build them in, so one build serves both)."""
    examples = ROOT / "examples" / "policies"
    metadata = json.loads(subprocess.check_output(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT))
    target = pathlib.Path(metadata["target_directory"]) / "policy-examples"
    subprocess.check_call(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip2", "-p", f"{name}-policy",
                           "--target-dir", str(target)], cwd=examples)
    return target / "wasm32-wasip2" / "release" / f"{name.replace('-', '_')}_policy.wasm"
