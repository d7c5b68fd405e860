"""Mail: a request names what to send, and a thread of the worker sends it after the commit.

A view calls `send_after_commit(Mail(...))`. The hook `hand_committed_mail_to_the_outbox`,
which runs after the audit hook has committed the request, hands the request's mails to this
process's `Outbox` only if the request succeeded: a mail never tells of a change that was
rolled back. The outbox is a queue that one background thread empties, so no request waits for
the SMTP server, and how long an answer takes says nothing about whether a mail went out (the
point of POST /password/forgot answering alike for every address). The message itself is
composed on that thread too.

Mail goes through the SMTP server of SMTP_URL (config.SMTPServer), with the standard library's
smtplib and email:

- `smtps://host:465`: TLS from the first byte (implicit TLS);
- `smtp://user:password@host:587`: STARTTLS, which is required whenever credentials are given;
  a server that does not offer it gets no credentials and no mail;
- `smtp://host:1025` without credentials (a local catcher such as Mailpit): STARTTLS if the
  server offers it, else plain. Anyone on the path to such a server could strip its offer and
  read the links: off a private network, give credentials (STARTTLS then required) or smtps.

Certificates are verified against the system's CAs, or SMTP_CA_FILE's. A mail that cannot be
sent is logged (what it was and why; never its text, which holds a token) and counted in
`devlab_mail_failures_total`; nobody retries it (a reset link can be asked for again). With no
SMTP_URL, which only development allows (config.check_mail_settings), each mail is written to
the log instead, with a line saying so.

Mails still queued when a worker stops are lost, like the request of a worker that is killed.
"""

import os
import queue
import smtplib
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from flask import Flask, Response, current_app, g

from config import SMTPServer
from devlab import metrics

OUTBOX_KEY = "devlab.outbox"
OUTGOING = "devlab_outgoing_mail"
SMTP_TIMEOUT_SECONDS = 10
# Mails waiting in one worker; past this (the SMTP server far slower than requests come in),
# further mails are dropped and counted as failures rather than filling the memory.
OUTBOX_SIZE = 1000
NOT_SENT_IN_DEVELOPMENT = (
    "SMTP_URL is not set: this mail was NOT sent, only written here (development only):\n%s"
)


@dataclass(frozen=True)
class Mail:
    """A plain-text mail to one address; `about` names it in log lines (ids only)."""

    to: str
    subject: str
    body: str
    about: str


class NoTLSForCredentials(Exception):
    """The server offered no STARTTLS, so SMTP_URL's credentials were not sent."""


def send_after_commit(mail: Mail) -> None:
    """Send `mail` once this request has committed (nothing, if it fails)."""
    g.setdefault(OUTGOING, []).append(mail)


def hand_committed_mail_to_the_outbox(response: Response) -> Response:
    mails = g.pop(OUTGOING, [])
    if mails and response.status_code < 400:  # a failed commit answers with an error
        outbox: Outbox = current_app.extensions[OUTBOX_KEY]
        for mail in mails:
            outbox.post(mail)
    return response


class Outbox:
    """This process's mails waiting to be sent, and the one thread that sends them in turn."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self.server: SMTPServer | None = config["SMTP"]
        self.ca_file: str | None = config["SMTP_CA_FILE"]
        self.sender: str = config["MAIL_FROM"]
        self.logger = app.logger.getChild("mail")
        self.queue: queue.Queue[Mail] = queue.Queue(maxsize=OUTBOX_SIZE)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def post(self, mail: Mail) -> None:
        self._start_sender()
        try:
            self.queue.put_nowait(mail)
        except queue.Full:
            metrics.mail_failed()
            self.logger.error("Could not send %s: the outbox is full", mail.about)

    def _start_sender(self) -> None:
        """Start the sending thread in this process, once (a worker forked from a process that
        had one has none: threads do not survive a fork)."""
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._send_forever, name="outbox", daemon=True
                )
                self._thread.start()

    def _send_forever(self) -> None:
        while True:
            mail = self.queue.get()
            try:
                self.send(mail)
            finally:
                self.queue.task_done()

    def send(self, mail: Mail) -> None:
        if self.server is None:
            readable = f"To: {mail.to}\nSubject: {mail.subject}\n\n{mail.body}"
            self.logger.warning(NOT_SENT_IN_DEVELOPMENT, readable)
            return
        try:
            # Composing fails too, on an address that holds a line break (a row older than
            # today's rules): like a failed send, it is logged and counted, and the thread goes on.
            deliver(self.server, self.compose(mail), self.ca_file)
        except Exception as error:  # whatever it was, the thread goes on to the next mail
            metrics.mail_failed()
            self.logger.error("Could not send %s: %s", mail.about, why_not_sent(error))
        else:
            metrics.mail_sent()

    def compose(self, mail: Mail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False)
        # The sender's domain, so that make_msgid does not ask DNS for this host's name.
        message["Message-ID"] = make_msgid(domain=parseaddr(self.sender)[1].rpartition("@")[2])
        message.set_content(mail.body)
        return message

    def wait_until_sent(self) -> None:
        """Block until every mail posted so far has been sent or has failed (tests)."""
        self.queue.join()


def deliver(server: SMTPServer, message: EmailMessage, ca_file: str | None) -> None:
    """Hand `message` to `server`, with the TLS its URL asks for (see the module's docstring)."""
    context = ssl.create_default_context(cafile=ca_file)
    if server.scheme == "smtps":
        connection = smtplib.SMTP_SSL(
            server.host, server.port, timeout=SMTP_TIMEOUT_SECONDS, context=context
        )
    else:
        connection = smtplib.SMTP(server.host, server.port, timeout=SMTP_TIMEOUT_SECONDS)
    with connection:
        if server.scheme == "smtp":
            connection.ehlo()
            if connection.has_extn("starttls"):
                connection.starttls(context=context)
                connection.ehlo()
            elif server.username is not None:
                raise NoTLSForCredentials(
                    "the server offers no STARTTLS, and SMTP_URL's credentials are never sent "
                    "in clear (use smtps://, or a server that offers STARTTLS)"
                )

        if server.username is not None:
            connection.login(server.username, server.password or "")
        connection.send_message(message)


def why_not_sent(error: Exception) -> str:
    """What went wrong, in words that cannot hold the mail's text, its addresses or SMTP_URL's
    password: an SMTP server's answer may quote what it was sent, so of an SMTP error only its
    class and code are told, and of an error nobody expected only its class."""
    if isinstance(error, smtplib.SMTPResponseException):
        return f"{type(error).__name__} (SMTP {error.smtp_code})"
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return f"{type(error).__name__} (the recipient was refused)"
    if isinstance(error, smtplib.SMTPException):
        return type(error).__name__
    if isinstance(error, (OSError, NoTLSForCredentials)):  # the connection, TLS, the certificate
        return f"{type(error).__name__}: {error}"
    return type(error).__name__


def init_app(app: Flask) -> None:
    """Give the app its outbox. Call it before trail.init_app: after-request hooks run
    last-registered first, so this one then runs after the audit hook's commit."""
    app.extensions[OUTBOX_KEY] = Outbox(app)
    app.after_request(hand_committed_mail_to_the_outbox)
