"""The HTTPS side end to end: the index page as headless Chromium shows it, its invite QR code
decoded from the screenshot and scanned by the real Delta Chat client, and IMAP, submission and
HTTPS sharing port 443 with real clients of each protocol."""

import imaplib
import json
import pathlib
import shutil
import smtplib
import ssl
import subprocess
import urllib.request

import pytest
import zxingcpp
from deltachat_rpc_client import DeltaChat
from PIL import Image

from conftest import PASSWORD, AccountFactory, Relay, chat_both_ways, example_policy, random_address, web_relay_running

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--ignore-certificate-errors", "--hide-scrollbars",
]


def chromium(relay: Relay, tmp_path: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
         f"--host-resolver-rules=MAP {relay.domain} {relay.host}", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )


def invite_from_screenshot(relay: Relay, tmp_path: pathlib.Path) -> str:
    """Render the index page as a phone would show it and decode the QR code in the picture."""
    png = tmp_path / "index.png"
    chromium(relay, tmp_path, "--window-size=412,1800", f"--screenshot={png}", f"https://{relay.domain}/")
    codes = zxingcpp.read_barcodes(Image.open(png))
    qr = [c.text for c in codes if c.format == zxingcpp.BarcodeFormat.QRCode]
    assert len(qr) == 1, f"{len(codes)} codes found in the screenshot"
    return qr[0]


def test_pages_as_a_browser_shows_them(web_relay, tmp_path):
    assert invite_from_screenshot(web_relay, tmp_path) == f"DCACCOUNT:https://{web_relay.domain}/new"
    info = chromium(web_relay, tmp_path, "--dump-dom", f"https://{web_relay.domain}/info.html").stdout
    assert "<strong>42</strong>" in info and "500 MiB" in info and "privacy@example.org" in info
    privacy = chromium(web_relay, tmp_path, "--dump-dom", f"https://{web_relay.domain}/privacy.html").stdout
    assert "Jane Operator<br>" in privacy and "The State Commissioner" in privacy


def test_onboarding_by_scanning_the_invite_qr(web_relay, rpc, tmp_path):
    """The QR code of the page, scanned by the app: it asks /new for credentials, configures
    itself through autoconfig and chats end-to-end encrypted."""
    qr = invite_from_screenshot(web_relay, tmp_path)
    dc = DeltaChat(rpc)
    alice, bob = dc.add_account(), dc.add_account()
    assert alice.check_qr(qr)["kind"] == "account"
    for account in (alice, bob):
        account.add_transport_from_qr(qr)
        account.bring_online()
        assert account.get_config("configured_addr").endswith("@" + web_relay.domain)
    assert alice.get_config("configured_addr") != bob.get_config("configured_addr")
    chat_both_ways(alice, bob)
    # The accounts came from /new, not from a first login with made-up credentials.
    metrics = urllib.request.urlopen(f"http://{web_relay.host}:{web_relay.ports['metrics']}/metrics").read().decode()
    assert 'ferrymail_accounts_created_total{via="new"} 2\n' in metrics, metrics


def test_invite_only_sign_up_with_the_app(ferrymail_binary, rpc, tmp_path):
    """examples/policies/invite-only in the relay: the app signs up by scanning an invite
    (`/new?invite=...`) as long as the token has uses left, and only so."""
    bundle = (f'[[policy]]\npath = "{example_policy("invite-only")}"\n[policy.config]\ninvites = {{ "e2e-7f3k" = 2 }}\n'
              '[[policy]]\nbuiltin = "encryption"\n')
    with web_relay_running(ferrymail_binary, tmp_path, bundle) as relay:
        dc = DeltaChat(rpc)
        invite = f"DCACCOUNT:https://{relay.domain}/new?invite=e2e-7f3k"
        alice, bob, carol = dc.add_account(), dc.add_account(), dc.add_account()
        for account in (alice, bob):
            account.add_transport_from_qr(invite)
            account.bring_online()
        chat_both_ways(alice, bob)

        refusals = {
            invite: "This invitation has been used up",
            f"DCACCOUNT:https://{relay.domain}/new?invite=guessed": "This invitation is not valid",
            f"DCACCOUNT:https://{relay.domain}/new": "This relay hands out accounts only with an invitation",
        }
        for qr, reason in refusals.items():
            with pytest.raises(Exception) as refused:
                carol.add_transport_from_qr(qr)
            assert reason in str(refused.value), (qr, refused.value)
        # Nor does a first login with made-up credentials create an account.
        with pytest.raises(Exception):
            carol.add_or_update_transport(AccountFactory(rpc, relay).transport(random_address(relay.domain)))
        metrics = urllib.request.urlopen(f"http://{relay.host}:{relay.ports['metrics']}/metrics").read().decode()
        assert 'ferrymail_accounts_created_total{via="new"} 2\n' in metrics, metrics
        assert 'ferrymail_accounts_created_total{via="login"}' not in metrics, metrics


def test_imap_submission_and_https_share_port_443(web_relay, rpc):
    host, address = web_relay.host, random_address(web_relay.domain)

    def context(protocol):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.set_alpn_protocols([protocol])
        return ctx

    with imaplib.IMAP4_SSL(host, 443, ssl_context=context("imap")) as imap:
        assert imap.login(address, PASSWORD)[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"
    with smtplib.SMTP_SSL(host, 443, context=context("smtp")) as smtp:
        smtp.ehlo("client.test")
        assert smtp.login(address, PASSWORD)[0] == 235
    request = urllib.request.Request(f"https://{web_relay.domain}/new", method="POST")
    with urllib.request.urlopen(request, context=context("http/1.1")) as response:
        assert response.status == 200 and json.load(response)["email"].endswith("@" + web_relay.domain)

    # The app, told to use 443 for both (as behind a firewall that lets only HTTPS through).
    dc = DeltaChat(rpc)
    accounts = []
    for _ in range(2):
        account = dc.add_account()
        account.add_or_update_transport({
            "addr": random_address(web_relay.domain), "password": PASSWORD,
            "imapServer": web_relay.domain, "imapPort": 443, "imapSecurity": "ssl",
            "smtpServer": web_relay.domain, "smtpPort": 443, "smtpSecurity": "ssl",
        })
        account.bring_online()
        accounts.append(account)
    chat_both_ways(*accounts)
