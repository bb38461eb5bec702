"""Real mail servers on loopback for delivery tests.

- :class:`SmtpServer`: aiosmtpd on ``127.0.0.1`` (plain, STARTTLS, or implicit TLS; optionally
  requiring a login), which keeps every message it accepted and counts every attempt;
- :class:`SilentServer`: accepts TCP connections and never answers (for timeouts);
- :func:`closed_port`: a loopback port nobody listens on (for refused connections);
- :func:`make_tls_files`: a CA and a server certificate for ``127.0.0.1`` and ``localhost``.

The fixtures in ``conftest.py`` start these and stop them when the test ends.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A loopback port that refuses connections (bound a moment ago, now closed)."""
    return free_port()


# --- certificates -------------------------------------------------------------------------

@dataclass
class TlsFiles:
    ca_file: Path  # the CA certificate, to trust (IDP_SMTP_CA_FILE)
    cert_file: Path  # the server's certificate chain
    key_file: Path  # the server's private key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls_files(directory: Path, names: tuple[str, ...] = ("localhost", HOST),
                   label: str = "Test") -> TlsFiles:
    """A self-signed CA and a server certificate it signed for ``names`` (DNS names or IPs)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{label} Mail CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for value in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            alt_names.append(x509.DNSName(value))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0])).issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(pem))
    files.cert_file.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    files.key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return files


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert_file, files.key_file)
    return context


# --- the SMTP server ----------------------------------------------------------------------

@dataclass
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    login: str | None  # the user name it authenticated with, if any
    tls: bool  # whether the session was encrypted

    @property
    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()

    @property
    def html(self) -> str:
        return self.message.get_body(("html",)).get_content()


@dataclass
class RecordingHandler:
    """Accepts mail and keeps it; ``rcpt_reply`` / ``data_reply`` (e.g. ``"550 ..."``) refuse
    at that step instead."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    messages: list[Received] = field(default_factory=list)
    transactions: int = 0  # MAIL FROM commands: attempts to send a message
    data_commands: int = 0  # message contents offered
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            self.transactions += 1
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.data_commands += 1
        if self.data_reply:
            return self.data_reply
        raw = envelope.original_content or envelope.content
        login = session.auth_data.login.decode() if isinstance(session.auth_data,
                                                               LoginPassword) else None
        received = Received(
            mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), raw=raw,
            message=email.message_from_bytes(raw, policy=email.policy.default),
            login=login, tls=server.transport.get_extra_info("ssl_object") is not None,
        )
        with self.lock:
            self.messages.append(received)
        return "250 Message accepted for delivery"


class _Controller(Controller):
    def factory(self):
        # Implicit TLS with a login is safe: aiosmtpd only counts STARTTLS as TLS.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return super().factory()


class SmtpServer:
    """aiosmtpd on loopback. ``security`` is the IdP's word for it: ``none``, ``starttls``
    (STARTTLS required before anything else) or ``tls`` (implicit TLS). With ``login`` set to
    ``(user, password)``, mail is only taken after that login."""

    def __init__(self, security: str = "none", *, tls_files: TlsFiles | None = None,
                 login: tuple[str, str] | None = None, rcpt_reply: str | None = None,
                 data_reply: str | None = None):
        assert security in ("none", "starttls", "tls")
        assert security == "none" or tls_files is not None, "TLS needs certificate files"
        self.security, self.tls_files, self.login = security, tls_files, login
        self.handler = RecordingHandler(rcpt_reply=rcpt_reply, data_reply=data_reply)
        self.auth_attempts: list[tuple[str, bool]] = []
        self.port = free_port()
        kwargs: dict = {}
        if security == "starttls":
            kwargs.update(tls_context=server_ssl_context(tls_files), require_starttls=True)
        elif security == "tls":
            kwargs.update(ssl_context=server_ssl_context(tls_files))
        if login is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=security == "starttls")
        self.controller = _Controller(self.handler, hostname=HOST, port=self.port,
                                     ready_timeout=10, **kwargs)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        ok = (user, password) == self.login
        self.auth_attempts.append((user, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    @property
    def host(self) -> str:
        return HOST

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    @property
    def transactions(self) -> int:
        return self.handler.transactions

    def settings(self, **overrides) -> dict:
        """The IdP's settings to send mail here (trusting the test CA, with the login)."""
        values = {
            "IDP_MAIL_BACKEND": "smtp",
            "IDP_SMTP_HOST": HOST,
            "IDP_SMTP_PORT": self.port,
            "IDP_SMTP_SECURITY": self.security,
            "IDP_SMTP_TIMEOUT": 5.0,
            "IDP_SMTP_CA_FILE": str(self.tls_files.ca_file) if self.tls_files else "",
            "IDP_SMTP_USERNAME": self.login[0] if self.login else "",
            "IDP_SMTP_PASSWORD": self.login[1] if self.login else "",
        }
        values.update(overrides)
        return values

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class SilentServer:
    """Accepts TCP connections on loopback and never sends a byte. Each connection is
    dropped after ``hold`` seconds, so a client without a timeout cannot hang a test."""

    def __init__(self, hold: float = 5.0):
        self.hold = hold
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.host = HOST
        self.connections: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        held: list[tuple[float, socket.socket]] = []
        while not self._stopped.is_set():
            now = time.monotonic()
            for since, conn in [item for item in held if now - item[0] > self.hold]:
                conn.close()
                held.remove((since, conn))
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)
            held.append((time.monotonic(), conn))

    def start(self) -> SilentServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        for conn in self.connections:
            conn.close()
        self.sock.close()
