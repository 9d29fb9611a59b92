"""OAuth 2.0 of the sandbox org: the token endpoint and bearer-token checks.

Two server-to-server flows, as a connected app uses them: client credentials (the run-as
user is the integration user) and the JWT bearer flow (an RS256 assertion signed with the
connected app's key; the sandbox generates the key pair and a self-signed certificate).
Tokens expire on the sandbox clock and can all be revoked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge_sandbox.salesforce import ids
from bridge_sandbox.salesforce.store import Org

DEFAULT_TOKEN_TTL = timedelta(hours=2)
LOGIN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_TOKEN_REQUEST = 64 * 1024


@dataclass(frozen=True)
class Token:
    """An issued access token: whose, and until when (sandbox time, epoch seconds)."""

    value: str
    user_id: str
    expires_at: float


class OAuthError(Exception):
    """A refused token request, answered as ``{"error", "error_description"}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> Response:
        return JSONResponse(
            {"error": self.error, "error_description": self.description}, status_code=self.status
        )


@dataclass(frozen=True)
class JwtKeyPair:
    key_file: Path
    cert_file: Path
    public_key_pem: bytes


def generate_jwt_key_pair(directory: Path) -> JwtKeyPair:
    """An RSA key and a self-signed certificate for the connected app, written to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge-sandbox-connected-app")])
    now = datetime.now(tz=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_file = directory / "jwt-private-key.pem"
    cert_file = directory / "jwt-cert.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return JwtKeyPair(key_file, cert_file, public_pem)


class OAuth:
    """Issues and checks the org's access tokens."""

    def __init__(
        self,
        org: Org,
        *,
        client_id: str,
        client_secret: str,
        key_pair: JwtKeyPair,
        run_as_user_id: str,
        token_ttl: timedelta = DEFAULT_TOKEN_TTL,
    ) -> None:
        self.org = org
        self.client_id = client_id
        self.client_secret = client_secret
        self.key_pair = key_pair
        self.run_as_user_id = run_as_user_id
        self.token_ttl = token_ttl
        self.instance_url = ""
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()

    # -- tokens -----------------------------------------------------------------------
    def issue(self, user_id: str | None = None) -> Token:
        org15 = ids.to15(self.org.org_id)
        value = f"{org15}!{secrets.token_urlsafe(72)}"
        token = Token(
            value,
            user_id or self.run_as_user_id,
            self.org.clock.timestamp() + self.token_ttl.total_seconds(),
        )
        with self._lock:
            self._tokens[value] = token
        return token

    def check(self, value: str) -> Token | None:
        """The live token with this value; expired ones are forgotten."""
        with self._lock:
            token = self._tokens.get(value)
            if token is not None and token.expires_at <= self.org.clock.timestamp():
                del self._tokens[value]
                return None
            return token

    def check_header(self, authorization: str | None) -> Token | None:
        """The token of an ``Authorization: Bearer ...`` (or ``OAuth ...``) header."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not value.strip():
            return None
        return self.check(value.strip())

    def revoke_all(self) -> int:
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
            return count

    # -- token endpoint -----------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [Route("/services/oauth2/token", self.token_endpoint, methods=["POST"])]

    async def token_endpoint(self, request: Request) -> Response:
        try:
            token = self._grant(await _form(request), request.headers.get("authorization"))
        except OAuthError as exc:
            return exc.response()
        return JSONResponse(self._answer(token))

    def _grant(self, form: dict[str, str], authorization: str | None) -> Token:
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            return self._client_credentials(form, authorization)
        if grant == JWT_BEARER:
            return self._jwt_bearer(form.get("assertion", ""))
        raise OAuthError("unsupported_grant_type", "grant type not supported")

    def _answer(self, token: Token) -> dict[str, str]:
        issued_at = str(int(self.org.clock.timestamp() * 1000))
        identity = f"https://login.salesforce.com/id/{self.org.org_id}/{token.user_id}"
        signature = hmac.new(
            self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
        ).digest()
        return {
            "access_token": token.value,
            "instance_url": self.instance_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": base64.b64encode(signature).decode(),
            "scope": "api",
        }

    def _client_credentials(self, form: dict[str, str], authorization: str | None) -> Token:
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise OAuthError("invalid_client", "invalid client credentials") from exc
            client_id, _, client_secret = decoded.partition(":")
        if not client_id or client_id != self.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if not client_secret or not hmac.compare_digest(client_secret, self.client_secret):
            raise OAuthError("invalid_client", "invalid client credentials")
        return self.issue(self.run_as_user_id)

    def _jwt_bearer(self, assertion: str) -> Token:
        if not assertion:
            raise OAuthError("invalid_request", "assertion is required")
        try:
            claims = jwt.decode(
                assertion,
                self.key_pair.public_key_pem,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "require": ["exp"]},
            )
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc
        if claims.get("iss") != self.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if not self._audience_ok(claims.get("aud")):
            raise OAuthError("invalid_grant", "audience is invalid")
        try:
            expires = float(claims["exp"])
        except (TypeError, ValueError) as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc
        # The client signs with its own (wall) clock, not the sandbox's advanced one.
        if expires <= time.time():
            raise OAuthError("invalid_grant", "expired authorization code")
        users = self.org.where("User", Username=str(claims.get("sub", "")))
        if not users or not users[0]["IsActive"]:
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        return self.issue(users[0]["Id"])

    def _audience_ok(self, audience: object) -> bool:
        """Salesforce's login hosts or this instance; simple-salesforce builds the audience
        from its ``domain`` argument, so a domain pointing at this instance is accepted."""
        values = audience if isinstance(audience, list) else [audience]
        instance = self.instance_url.rstrip("/")
        for value in values:
            if not isinstance(value, str):
                continue
            url = value.rstrip("/")
            if url in LOGIN_AUDIENCES or url == instance:
                return True
            if instance and url.startswith(instance + "/"):
                return True
        return False


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "must use application/x-www-form-urlencoded", 400)
    body = await request.body()
    if len(body) > MAX_TOKEN_REQUEST:
        raise OAuthError("invalid_request", "request too large", 400)
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise OAuthError("invalid_request", "request body is not valid UTF-8") from exc
    return {key: values[0] for key, values in parsed.items()}
