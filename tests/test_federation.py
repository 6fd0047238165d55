"""The real Delta Chat app on two different relays: three ferrymail processes with their own
domains and loopback addresses (SMTP on 25, HTTPS on 443), found through a real DNS server
(dnsmasq) serving the records `ferrymail dns` prints. Messages cross between relays over
/mxdeliv, and over SMTP to a relay that does not take /mxdeliv. A fourth relay has no domain at
all, only an IP address (addresses `user@[127.0.N.5]`), as chatmail's IPv4-only relays do."""

import os
import subprocess
import sys

import pytest

from conftest import DnsServer, Network, Relay, chat_both_ways, free_port


@pytest.fixture(scope="module")
def relays(ferrymail_binary, tmp_path_factory):
    net = Network()
    directory = tmp_path_factory.mktemp("federation")
    relays = {}
    dns = None
    try:
        # The DNS server's port goes into the configs before it runs: pick it first.
        dns_port = free_port()
        resolver = f'dns_resolver = "127.0.0.1:{dns_port}"\n'
        for name, host, extra in (("a", 2, ""), ("b", 3, ""), ("c", 4, "accept_mxdeliv = false\n"), ("d", 5, "")):
            path = directory / name
            path.mkdir()
            # D is known by its address alone (written bare, as chatmail.ini does), on the
            # standard client ports too: cmping's login for an IP relay names 993 and 465.
            domain, ports = (net.ip(host), {"imaps": 993, "submissions": 465}) if name == "d" else (net.domain(name), {})
            relays[name] = Relay(ferrymail_binary, path, extra=resolver + extra, domain=domain,
                                 host=net.ip(host), standard_ports=True, start=False, ports=ports)
        records = [record for relay in relays.values() for record in relay.dns_records()]
        dns = DnsServer(directory, records, port=dns_port)
        for relay in relays.values():
            relay.start()
        yield relays
    finally:
        for relay in relays.values():
            relay.stop()
        if dns:
            dns.stop()
        net.close()


def deliveries(relay, via):
    return sum(1 for line in relay.log_text().splitlines() if "delivered to another server" in line and f'via="{via}"' in line)


def test_chat_between_relays_over_mxdeliv(accounts, relays):
    a, b = relays["a"], relays["b"]
    before = deliveries(a, "mxdeliv"), deliveries(b, "mxdeliv")
    alice = accounts.new_account(relay=a)
    bob = accounts.new_account(relay=b)
    chat_both_ways(alice, bob)
    assert deliveries(a, "mxdeliv") > before[0], a.log_text()
    assert deliveries(b, "mxdeliv") > before[1], b.log_text()


def test_chat_with_a_relay_without_mxdeliv_goes_over_smtp(accounts, relays):
    a, c = relays["a"], relays["c"]
    before = deliveries(a, "smtp")
    alice = accounts.new_account(relay=a)
    carol = accounts.new_account(relay=c)
    chat_both_ways(alice, carol)
    assert deliveries(a, "smtp") > before, a.log_text()
    # C's own deliveries still use A's /mxdeliv.
    assert deliveries(c, "mxdeliv") > 0, c.log_text()


def test_chat_between_a_relay_on_a_domain_and_one_on_an_ip_address(accounts, relays):
    a, d = relays["a"], relays["d"]
    assert d.dns_records() == [], "an IP relay publishes nothing in DNS"
    alice = accounts.new_account(relay=a)
    dora = accounts.new_account(relay=d)
    assert dora.list_transports()[0]["addr"].endswith(f"@[{d.host}]")
    chat_both_ways(alice, dora)
    assert deliveries(a, "mxdeliv") > 0 and deliveries(d, "mxdeliv") > 0, d.log_text()


def test_cmping_finds_no_loss_on_a_relay_on_an_ip_address(relays, tmp_path):
    d = relays["d"]
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    # cmping makes its accounts with a dclogin for the IP (first login creates them).
    ping = subprocess.run([sys.executable, "-m", "cmping", "-c", "5", "-i", "0.3", d.host],
                          env=env, capture_output=True, text=True, timeout=240)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "5 transmitted, 5 received, 0.00% loss" in ping.stdout, ping.stdout
