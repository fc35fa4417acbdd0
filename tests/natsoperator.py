"""NATS operator mode for tests: an operator, an account with JetStream, its users' credentials files.

What ``nsc`` makes, in a few lines over the ``nkeys`` library nats-py already uses: each entity is an
ed25519 nkey; the operator signs the account's JWT, the account signs its users'. A nats-server given
``config_lines()`` trusts the operator and holds the account in a MEMORY resolver; a client proves a user
with its ``.creds`` file (the user's JWT and nkey seed), as NATS deployments hand them out.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys

UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
             "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_key(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def public(key: nkeys.KeyPair) -> str:
    return key.public_key.decode()


def signed_jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (``ed25519-nkey``) of ``subject``'s claims, signed by ``issuer``."""
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": public(issuer), "name": name,
                              "sub": subject, "nats": {**nats, "version": 2}}
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + \
        _b64(json.dumps(claims).encode())
    return signing_input + "." + _b64(issuer.sign(signing_input.encode()))


class Operator:
    """One operator, one JetStream account and the system account it signed (JetStream needs one);
    ``user_creds`` writes a user's credentials file."""

    def __init__(self, name: str = "fleet-operator", account: str = "FLEET") -> None:
        self.key = new_key(nkeys.PREFIX_BYTE_OPERATOR)
        self.jwt = signed_jwt(self.key, public(self.key), name, {"type": "operator"})
        self.account_key = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
        self.account = public(self.account_key)
        self.account_jwt = signed_jwt(self.key, self.account, account, {"type": "account", "limits": UNLIMITED})
        self.system = public(new_key(nkeys.PREFIX_BYTE_ACCOUNT))
        self.system_jwt = signed_jwt(self.key, self.system, "SYS", {"type": "account"})

    def config_lines(self) -> list[str]:
        """nats-server config lines that trust this operator and know its account."""
        return [f"operator: {json.dumps(self.jwt)}", f"system_account: {self.system}", "resolver: MEMORY",
                f"resolver_preload: {{ {self.account}: {json.dumps(self.account_jwt)}, "
                f"{self.system}: {json.dumps(self.system_jwt)} }}"]

    def user_creds(self, path: Path, name: str = "master", signer: nkeys.KeyPair | None = None) -> str:
        """Write a user's ``.creds`` file at ``path`` (0600); return its nkey seed. ``signer``: an account key
        other than this operator's account (a user the server must refuse)."""
        user = new_key(nkeys.PREFIX_BYTE_USER)
        jwt = signed_jwt(signer or self.account_key, public(user), name,
                         {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
        seed = user.seed.decode()
        path.write_text(f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
                        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n")
        path.chmod(0o600)
        return seed
