"""Realtime and calls end to end: two Delta Chat apps exchange webxdc realtime data through the
relay's iroh relay, and the app's ICE servers are the relay's TURN server, with the credentials
it read over IMAP METADATA."""

import threading
import time
import urllib.request
import zipfile

from deltachat_rpc_client import DeltaChat

from conftest import chat_both_ways


def metrics(relay) -> str:
    return urllib.request.urlopen(f"http://{relay.host}:{relay.ports['metrics']}/metrics").read().decode()


def counter(relay, series: str) -> int:
    for line in metrics(relay).splitlines():
        if line.startswith(series + " "):
            return int(line.rsplit(" ", 1)[1])
    return 0


def onboard(rpc, relay, count: int):
    dc = DeltaChat(rpc)
    accounts = []
    for _ in range(count):
        account = dc.add_account()
        account.set_config("webxdc_realtime_enabled", "1")
        account.add_transport_from_qr(f"DCACCOUNT:https://{relay.domain}/new")
        account.bring_online()
        accounts.append(account)
    return accounts


def test_ice_servers_are_the_relays_turn(web_relay, rpc):
    (alice,) = onboard(rpc, web_relay, 1)
    deadline = time.time() + 60
    servers = alice.ice_servers()
    while not servers and time.time() < deadline:  # filled from METADATA at the next IMAP connect
        time.sleep(0.5)
        servers = alice.ice_servers()
    assert len(servers) == 1, servers
    (server,) = servers
    assert server["urls"] == [f"turn:{web_relay.host}:{web_relay.ports['turn']}"]
    # The username is the expiry (Delta Chat parses it as a number): between one and five days
    # ahead, chosen so that it also carries the account's tag (host/src/turn.rs).
    expires = int(server["username"])
    assert time.time() + 86400 - 600 < expires < time.time() + 5 * 86400 + 600
    assert server["credential"]


def test_webxdc_realtime_data_through_the_relay(web_relay, rpc, tmp_path):
    alice, bob = onboard(rpc, web_relay, 2)
    chat_both_ways(alice, bob)
    app = tmp_path / "realtime.xdc"
    with zipfile.ZipFile(app, "w") as xdc:
        xdc.writestr("index.html", "<html><body>realtime</body></html>")
        xdc.writestr("manifest.toml", 'name = "realtime test"\n')
    sent = alice.create_chat(bob).send_message(text="realtime", file=str(app))
    received = bob.wait_for_incoming_msg()
    assert received.get_snapshot().text == "realtime"

    forwarded_before = counter(web_relay, 'ferrymail_realtime_packets_total{result="forwarded"}')
    sent.send_webxdc_realtime_advertisement()
    received.send_webxdc_realtime_advertisement()
    # Joining the channel takes a moment: Alice repeats until Bob has it.
    done = threading.Event()

    def keep_sending():
        while not done.is_set():
            sent.send_webxdc_realtime_data(b"hello through the relay")
            done.wait(1)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        assert bob.wait_for_realtime_data(received.id) == b"hello through the relay"
    finally:
        done.set()
        sender.join()
    assert counter(web_relay, "ferrymail_realtime_connections_total") >= 2
    # The channel was set up (and its first data carried) through the relay; later data may
    # take a direct path between the two apps on this machine.
    assert counter(web_relay, 'ferrymail_realtime_packets_total{result="forwarded"}') > forwarded_before
