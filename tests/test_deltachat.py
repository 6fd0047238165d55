"""The real Delta Chat app (its core, deltachat-rpc-server 2.65) chatting through one ferrymail
relay: accounts appear on first login, messages are end-to-end encrypted, groups, Secure-Join,
attachments, and the relay's refusals as the app sees them."""

import smtplib
import ssl
import time

import pytest
from deltachat_rpc_client import EventType
from deltachat_rpc_client.rpc import JsonRpcError

from conftest import DOMAIN, PASSWORD, chat_both_ways, random_address


def exchange_keys(a, b):
    """Both sides know each other's key (as after scanning a contact QR) and accept the chat."""
    chat = a.create_chat(b)
    b.create_chat(a)
    return chat


def test_two_accounts_chat_encrypted_both_ways(accounts, relay):
    alice, bob = accounts.online(2)
    chat_both_ways(alice, bob)


def test_secure_join_by_qr(accounts):
    alice, bob = accounts.online(2)
    qr = alice.get_qr_code()
    chat = bob.secure_join(qr)
    alice.wait_for_securejoin_inviter_success()
    bob.wait_for_securejoin_joiner_success()
    # The handshake's vc-request went out in cleartext (the encryption policy's exception),
    # everything after it encrypted; now both hold each other's key.
    assert bob.create_contact(alice).get_snapshot().e2ee_avail
    chat.send_text("joined")
    message = alice.wait_for_incoming_msg().get_snapshot()
    assert message.text == "joined" and message.show_padlock


def test_a_group_of_three(accounts):
    alice, bob, carol = accounts.online(3)
    exchange_keys(alice, bob)
    exchange_keys(alice, carol)
    group = alice.create_group("three of us")
    group.add_contact(bob, carol)
    group.send_text("hi all")
    chats = {}
    for name, member in (("bob", bob), ("carol", carol)):
        message = member.wait_for_incoming_msg().get_snapshot()
        assert message.text == "hi all" and message.show_padlock
        message.chat.accept()
        chats[name] = message.chat
    chats["bob"].send_text("hi from bob")
    for member in (alice, carol):
        assert member.wait_for_incoming_msg().get_snapshot().text == "hi from bob"


def test_a_five_mib_attachment(accounts, tmp_path):
    alice, bob = accounts.online(2)
    chat = exchange_keys(alice, bob)
    payload = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    path = tmp_path / "five.bin"
    path.write_bytes(payload)
    chat.send_file(str(path))
    incoming = bob.wait_for_incoming_msg()
    assert incoming.get_snapshot().show_padlock
    # The app sends a small pre-message first, then the attachment, which it downloads itself.
    deadline = time.time() + 120
    while (snapshot := incoming.get_snapshot()).download_state != "Done":
        assert time.time() < deadline, f"not downloaded: {snapshot.download_state}"
        time.sleep(0.2)
    assert snapshot.show_padlock
    with open(snapshot.file, "rb") as received:
        assert received.read() == payload


def submission(relay) -> smtplib.SMTP_SSL:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return smtplib.SMTP_SSL(relay.host, relay.ports["submissions"], context=context)


def test_cleartext_over_smtp_is_refused_with_523(accounts, relay):
    bob = accounts.new_account()
    address = random_address()
    with submission(relay) as smtp:
        smtp.login(address, PASSWORD)
        bob_address = bob.get_config("configured_addr")
        message = f"From: <{address}>\r\nTo: <{bob_address}>\r\nSubject: hi\r\n\r\nplain text\r\n"
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(address, [bob_address], message)
    assert refused.value.smtp_code == 523
    assert b"Invalid Unencrypted Mail" in refused.value.smtp_error


def test_a_wrong_password_is_refused(accounts):
    alice = accounts.new_account()
    address = alice.get_config("configured_addr")
    intruder = accounts.dc.add_account()
    with pytest.raises(JsonRpcError):
        intruder.add_or_update_transport(accounts.transport(address, password="not-the-password"))


def test_the_rate_limit_reaches_the_app(accounts, relay):
    alice, bob = accounts.online(2)
    chat = exchange_keys(alice, bob)
    # Ten messages pass at once, then one per second: a burst of twenty meets the relay's 450.
    # (The app paces itself too, so a few more than eleven are needed.)
    for i in range(20):
        chat.send_text(f"burst {i}")
    refused = False
    while not refused:
        event = alice.wait_for_event()
        assert event.kind != EventType.MSG_FAILED, "a 450 is temporary: nothing may fail"
        refused = "4.7.1: Too much mail from" in (event.get("msg") or "")
    # And it delivers the rest once the limit allows.
    received = set()
    while len(received) < 20:
        received.add(bob.wait_for_incoming_msg().get_snapshot().text)
    assert received == {f"burst {i}" for i in range(20)}
