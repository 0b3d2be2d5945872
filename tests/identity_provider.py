"""A stand-in identity provider: keys made here, published as a JWKS by a real HTTP server.

It signs access tokens the way Keycloak does (RS256 or ES256, with a kid), publishes and
withdraws keys as a provider rotating them would, counts the requests for its key set, fails
them on demand, and stops and starts again on the same port, so tests see what the service
fetches, and when.
"""

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://sso.example.test/realms/clinic"
AUDIENCE = "goal-migration"
JWKS_PATH = "/realms/clinic/protocol/openid-connect/certs"


@dataclass(frozen=True)
class Key:
    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def jwk(self) -> dict:
        """The public half as the provider publishes it."""
        algorithm = RSAAlgorithm if isinstance(self.private, rsa.RSAPrivateKey) else ECAlgorithm
        jwk = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def rsa_key(kid: str) -> Key:
    return Key(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> Key:
    return Key(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def claims(**changes) -> dict:
    """An admin's access token claims, Keycloak-like; a change to None leaves that claim out."""
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "3f1c9a52-5d6e-4c1b-9a0e-2f7d8b6c4e11",
        "preferred_username": "dana",
        "email": "dana@clinic.example",
        "roles": ["admin"],
        "iat": now,
        "exp": now + 300,
    }
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def sign(key: Key, payload: dict | None = None, *, kid: str | None = None, **changes) -> str:
    """A token signed with `key`, its header naming `kid` (the key's own by default)."""
    headers = {"kid": kid if kid is not None else key.kid}
    return jwt.encode(payload or claims(**changes), key.private, key.alg, headers=headers)


class Provider:
    """The JWKS endpoint, on 127.0.0.1 at a port of its own choosing, kept across restarts."""

    def __init__(self, *keys: Key):
        self.keys: dict[str, Key] = {key.kid: key for key in keys}
        self.fetches = 0
        self.failing = False  # answer 503, as a provider in trouble does
        self.port = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    def publish(self, key: Key) -> None:
        with self._lock:
            self.keys[key.kid] = key

    def withdraw(self, kid: str) -> None:
        with self._lock:
            del self.keys[kid]

    def start(self) -> None:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                with provider._lock:
                    provider.fetches += 1
                    if provider.failing:
                        self.send_error(503)
                        return
                    body = json.dumps({"keys": [k.jwk() for k in provider.keys.values()]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
