"""Figure (d): the scenarios of chatmail's own benchmark with the real Delta Chat core
(deltachat-rpc-server), against one relay on loopback. Prints JSON: for each scenario the
seconds of every round.

- setup: a new account from nothing until its IMAP connection idles on INBOX (configure: the
  first IMAP and SMTP logins; on ferrymail also the account's creation);
- ping_pong: Alice sends a text, Bob answers on receipt; until Alice has the answer;
- send10_receive10: Alice sends ten texts; until Bob has all ten.

Called by the bench (bench/src/deltachat.rs) with the relay's address and account names."""

import argparse
import json
import tempfile
import time

from deltachat_rpc_client import DeltaChat, EventType, Rpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--first-account", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rpc-server", required=True)
    args = parser.parse_args()
    names = (f"b{i:08}@{args.domain}" for i in range(args.first_account, args.first_account + 1000))

    def transport(address):
        return {
            "addr": address,
            "password": args.password,
            "imapServer": args.host,
            "imapPort": 993,
            "imapSecurity": "ssl",
            "smtpServer": args.host,
            "smtpPort": 465,
            "smtpSecurity": "ssl",
            # Both systems under test use self-signed certificates.
            "certificateChecks": "acceptInvalidCertificates",
        }

    results = {"setup": [], "ping_pong": [], "send10_receive10": []}
    with tempfile.TemporaryDirectory() as accounts_dir, Rpc(accounts_dir=accounts_dir, rpc_server_path=args.rpc_server) as rpc:
        dc = DeltaChat(rpc)

        def online():
            started = time.monotonic()
            account = dc.add_account()
            account.add_or_update_transport(transport(next(names)))
            account.bring_online()
            return account, time.monotonic() - started

        for _ in range(args.rounds):
            account, seconds = online()
            results["setup"].append(seconds)
            account.stop_io()

        alice, _ = online()
        bob, _ = online()
        to_bob = alice.create_chat(bob)
        to_alice = bob.create_chat(alice)
        # One exchange first: both sides settle (the first message carries keys and chat setup).
        exchange(alice, bob, to_bob, to_alice)
        for _ in range(args.rounds):
            started = time.monotonic()
            exchange(alice, bob, to_bob, to_alice)
            results["ping_pong"].append(time.monotonic() - started)
        for _ in range(args.rounds):
            started = time.monotonic()
            for n in range(10):
                to_bob.send_text(f"message {n}")
            for _ in range(10):
                wait_incoming(bob)
            results["send10_receive10"].append(time.monotonic() - started)
    print(json.dumps(results))


def exchange(alice, bob, to_bob, to_alice):
    to_bob.send_text("ping")
    wait_incoming(bob)
    to_alice.send_text("pong")
    wait_incoming(alice)


def wait_incoming(account):
    """The next incoming message, marked seen (as the app does when the chat is open)."""
    event = account.wait_for_event(EventType.INCOMING_MSG)
    account.get_message_by_id(event.msg_id).mark_seen()


if __name__ == "__main__":
    main()
