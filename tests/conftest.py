"""End-to-end fixtures: a ferrymail relay (the real binary) on loopback, and Delta Chat
accounts (the real core, deltachat-rpc-server) configured against it."""

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


class Relay:
    """A ferrymail process with its own config, data and ports."""

    def __init__(self, binary: pathlib.Path, directory: pathlib.Path, extra: str = ""):
        self.binary = binary
        self.directory = directory
        self.ports = {name: free_port() for name in ["smtp", "submission", "submissions", "imap", "imaps", "https"]}
        listen = "".join(f'{name} = "127.0.0.1:{port}"\n' for name, port in self.ports.items())
        self.config = directory / "ferrymail.toml"
        # A busy test machine must not look short of resources to the accounts policy.
        self.config.write_text(f'mail_domain = "{DOMAIN}"\ndata_dir = "data"\nmax_load_1m = 1000.0\n{extra}\n[listen]\n{listen}')
        self.log = directory / "relay.log"
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
            env={**os.environ, "RUST_LOG": "info"},
        )
        wait_for_port(self.ports["imaps"])
        wait_for_port(self.ports["submissions"])

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def ferrymail_binary() -> pathlib.Path:
    subprocess.check_call(["cargo", "build", "--quiet", "-p", "ferrymail"], cwd=ROOT)
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
    with Rpc(accounts_dir=str(tmp_path_factory.mktemp("deltachat") / "accounts"), rpc_server_path=server) as rpc:
        yield rpc


def random_address() -> str:
    local = "".join(random.choices(string.ascii_lowercase + string.digits, k=9))
    return f"{local}@{DOMAIN}"


class AccountFactory:
    """Delta Chat accounts on the test relay; each is created there by its first login."""

    def __init__(self, rpc, relay):
        self.dc = DeltaChat(rpc)
        self.relay = relay

    def transport(self, address: str, password: str = PASSWORD) -> dict:
        return {
            "addr": address,
            "password": password,
            "imapServer": "127.0.0.1",
            "imapPort": self.relay.ports["imaps"],
            "imapSecurity": "ssl",
            "smtpServer": "127.0.0.1",
            "smtpPort": self.relay.ports["submissions"],
            "smtpSecurity": "ssl",
            # The relay of a `_` domain has a self-signed certificate.
            "certificateChecks": "acceptInvalidCertificates",
        }

    def new_account(self, address: str = None):
        account = self.dc.add_account()
        account.add_or_update_transport(self.transport(address or random_address()))
        account.bring_online()
        return account

    def online(self, count: int):
        return [self.new_account() for _ in range(count)]


@pytest.fixture
def accounts(rpc, relay):
    return AccountFactory(rpc, relay)
