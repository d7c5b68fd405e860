"""A real SMTP server on loopback (aiosmtpd), which keeps what it receives for the tests to read.

It speaks plain SMTP, STARTTLS or implicit TLS (smtps), with or without AUTH, under a
self-signed certificate for 127.0.0.1 made with `cryptography`; `ca_file` is that certificate,
for SMTP_CA_FILE.
"""

import datetime
import ipaddress
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.servers import free_port

RESET_LINK = re.compile(r"(https?://\S+)/reset-password#token=([A-Za-z0-9_-]+)")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as files in `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp.crt", folder / "smtp.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass
class Received:
    message: EmailMessage
    sender: str
    recipients: list[str]
    over_tls: bool
    authenticated: bool


@dataclass
class Mailbox:
    """What the server received, and the logins it was offered."""

    messages: list[Received] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server, session, envelope):
        received = Received(
            message=message_from_bytes(envelope.original_content, policy=policy.default),
            sender=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            over_tls=server.transport.get_extra_info("ssl_object") is not None,
            authenticated=bool(session.authenticated),
        )
        with self.arrived:
            self.messages.append(received)
            self.arrived.notify_all()
        return "250 Message accepted"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        # handled=False: aiosmtpd answers a refusal itself (535), which it leaves to a handler
        # that says it handled it.
        return AuthResult(success=(login, password) == ("mailer", "mail-password"), handled=False)

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """The first `count` messages, once that many have arrived (fails after `timeout`)."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            assert len(self.messages) >= count, f"{len(self.messages)} of {count} mails arrived"
            return self.messages[:count]

    def stays_at(self, count: int, seconds: float = 0.5) -> bool:
        """Whether no more than `count` messages arrive within `seconds`."""
        time.sleep(seconds)
        return len(self.messages) == count


class SMTPServer:
    """aiosmtpd on 127.0.0.1: `tls` is None (plain), "starttls" or "smtps"; `auth` offers
    AUTH (user `mailer`, password `mail-password`), over plain text too if `auth_in_clear`."""

    def __init__(
        self, folder: Path, *, tls: str | None = None, auth: bool = False, auth_in_clear=False
    ) -> None:
        self.mailbox = Mailbox()
        self.port = free_port()
        self.cert_file, key_file = self_signed_certificate(folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, key_file)
        options = {}
        if tls == "starttls":
            options["tls_context"] = context
        if auth:
            options["authenticator"] = self.mailbox.authenticate
            options["auth_require_tls"] = not auth_in_clear
        self.controller = Controller(
            self.mailbox,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=context if tls == "smtps" else None,
            server_hostname="127.0.0.1",
            **options,
        )
        self.scheme = "smtps" if tls == "smtps" else "smtp"

    def url(self, credentials: str = "") -> str:
        login = f"{credentials}@" if credentials else ""
        return f"{self.scheme}://{login}127.0.0.1:{self.port}"

    def start(self) -> "SMTPServer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def reset_token(message: EmailMessage) -> str:
    """The token of the reset link in `message`'s text."""
    match = RESET_LINK.search(message.get_content())
    assert match is not None, message.get_content()
    return match.group(2)
