"""Passwords, the users file, login tokens, tag perms and JWTs, without a server."""
from __future__ import annotations

import os
import stat
import time

import jwt
import pytest

from eventbus.errors import AuthenticationError, ConfigError
from eventbus.netapi import auth, jwtauth

SECRET = "unit-test-secret-0123456789-abcdefghijklmnopq"


def test_password_hash_is_salted_scrypt_and_verifies():
    # A password no base64 salt or hash can contain, so "not stored in plain" cannot pass by chance.
    password = "p w!"
    first, second = auth.hash_password(password), auth.hash_password(password)
    assert first.startswith("scrypt$16384$8$1$") and first != second and password not in first
    assert auth.verify_password(password, first)
    assert not auth.verify_password("p W!", first)
    assert not auth.verify_password(password, None)           # unknown user: still a full scrypt, then False
    assert not auth.verify_password(password, "md5$garbage")  # damaged line


def test_users_file_is_0600_and_replaces_a_user(tmp_path):
    path = tmp_path / "etc" / "users"
    auth.write_user(path, "alice", "one")
    auth.write_user(path, "bob", "two")
    auth.write_user(path, "alice", "three")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    users = auth.read_users(path)
    assert list(users) == ["alice", "bob"]
    assert auth.verify_password("three", users["alice"]) and not auth.verify_password("one", users["alice"])
    with pytest.raises(ValueError, match="user name"):
        auth.write_user(path, "bad:name", "x")
    with pytest.raises(ValueError, match="empty"):
        auth.write_user(path, "carol", "")


def test_tokens_are_signed_and_expire(tmp_path):
    signer = auth.TokenSigner.from_key_file(tmp_path / "key")
    assert stat.S_IMODE(os.stat(tmp_path / "key").st_mode) == 0o600
    token, start, expire = signer.issue("alice", "file", 60)
    assert signer.check(token)[:2] == ("alice", "file") and expire - start == 60
    # The same key file after a restart accepts it; another key does not.
    assert auth.TokenSigner.from_key_file(tmp_path / "key").check(token)[0] == "alice"
    with pytest.raises(AuthenticationError, match="not valid"):
        auth.TokenSigner(os.urandom(32)).check(token)
    header, claims, signature = token.split(".")
    with pytest.raises(AuthenticationError, match="not valid"):
        signer.check(f"{header}.{claims[:-2]}AA.{signature}")
    forged = jwt.encode({"sub": "alice", "eauth": "file", "iat": 1, "exp": time.time() + 60}, "k" * 32, algorithm="HS256")
    with pytest.raises(AuthenticationError, match="not valid"):
        signer.check(forged)
    with pytest.raises(AuthenticationError, match="expired"):
        signer.check(token, now=time.time() + 61)
    for garbage in ("", ".", "abc", "a.b.c", "x" * 2000):
        with pytest.raises(AuthenticationError):
            signer.check(garbage)


def test_external_auth_is_checked_and_perms_filter_tags(tmp_path):
    backends = auth.read_external_auth({"file": {"users_file": "u", "alice": ["*"], "bob": ["myco/*", "x/y"]}},
                                       tmp_path)
    assert backends["file"].users_file == tmp_path / "u"
    assert auth.tag_filter(backends["file"].perms["alice"]) is None
    bob = auth.tag_filter(backends["file"].perms["bob"])
    assert bob("myco/a/b", None) and bob("x/y", None) and not bob("x/yz", None) and not bob("salt/auth", None)
    for bad in ({"pam": {}}, {"file": ["alice"]}, {"file": {"alice": [1]}}):
        with pytest.raises(ConfigError):
            auth.read_external_auth(bad, tmp_path)


def _token(claims: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def test_jwt_roles_and_refusals():
    exp = int(time.time()) + 60
    admin = jwtauth.principal(_token({"user": {"username": "ops", "role": "admin"}, "exp": exp}), SECRET)
    assert admin.accepts is None and admin.expire == exp
    user = jwtauth.principal(_token({"user": {"username": "web01", "role": "user"}, "exp": exp}), SECRET)
    assert user.accepts("any/tag", "web01") and not user.accepts("any/tag", "web02")
    refused = {
        "signature does not match": _token({"user": {"username": "a", "role": "admin"}, "exp": exp}, "another-secret-0123456789-abcdefghijklmnopq"),
        "no 'exp' claim": _token({"user": {"username": "a", "role": "admin"}}),
        "has expired": _token({"user": {"username": "a", "role": "admin"}, "exp": int(time.time()) - 5}),
        "not signed with HS256": _token({"user": {"username": "a", "role": "admin"}, "exp": exp}, SECRET * 2,
                                        algorithm="HS384"),
        "user.role": _token({"user": {"username": "a", "role": "root"}, "exp": exp}),
        "user.username": _token({"user": {"role": "admin"}, "exp": exp}),
        "malformed": "a.b.c",
    }
    for reason, token in refused.items():
        with pytest.raises(AuthenticationError) as caught:
            jwtauth.principal(token, SECRET)
        assert reason in str(caught.value)
