"""Token authentication with scopes, as a ``grpc.aio`` server interceptor.

Tokens come from a file (``tokens_file``) and from the ``QPU_GATEWAY_TOKENS`` environment
variable, never from the command line; when both are set, the tokens of both are accepted (unset
the variable to revoke its tokens). One ``SCOPE:TOKEN`` per line (file) or comma-separated
(environment); ``#`` starts a comment. Scopes:

- ``predict``: Predict, GetModel, ListModels;
- ``admin``: everything, including Fit and DeleteModel.

Clients send ``authorization: Bearer <token>``. A missing or unknown token is ``UNAUTHENTICATED``;
a known token without the method's scope is ``PERMISSION_DENIED``. Tokens are kept only as SHA-256
digests and compared with ``hmac.compare_digest`` against every known digest (no early exit), so
the time taken does not depend on which token, or how much of one, matched. Every token is also
registered with :mod:`qpu_gateway.redact`, and an error about an entry (say a line with scope and
token swapped) names the file and entry, never the entry's text. Health checks and reflection stay
open.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import grpc

from qpu_gateway.redact import add_secret

__all__ = ["ENV_TOKENS", "SCOPES", "TokenAuthInterceptor", "TokenTable", "load_tokens"]

ENV_TOKENS: Final = "QPU_GATEWAY_TOKENS"
SCOPES: Final = ("predict", "admin")
_PREFIX: Final = "/qpu_gateway.v1.Gateway/"
_REQUIRED: Final = {
    "Predict": "predict",
    "GetModel": "predict",
    "ListModels": "predict",
    "Fit": "admin",
    "DeleteModel": "admin",
}
_GRANTS: Final = {"predict": {"predict"}, "admin": {"predict", "admin"}}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Known tokens (as digests) and their scopes."""

    def __init__(self, entries: Iterable[tuple[str, str]], where: str = "tokens") -> None:
        self._entries: list[tuple[bytes, str]] = []
        for n, (scope, token) in enumerate(entries, 1):
            _check(scope, token, f"{where}, entry {n}")
            self._entries.append((_digest(token), scope))
        if not self._entries:
            raise ValueError("the token table is empty")

    def __len__(self) -> int:
        return len(self._entries)

    def scope_of(self, token: str) -> str | None:
        """The scope of ``token``, or ``None`` when unknown (constant time in the match)."""
        presented = _digest(token)
        found: str | None = None
        for digest, scope in self._entries:
            if hmac.compare_digest(presented, digest):
                found = scope
        return found


def _check(scope: str, token: str, where: str) -> None:
    """Validate one entry; the error names ``where``, never the scope or token text. A scope
    field that is not a scope may hold a token (an entry written TOKEN:SCOPE): it is registered
    as a secret too; a real scope name is not (it would mask every "predict" in the log)."""
    add_secret(token)
    if scope not in SCOPES:
        add_secret(scope)
        raise ValueError(
            f"{where}: the token scope must be one of {', '.join(SCOPES)} (SCOPE:TOKEN); the entry is "
            "not shown, as it may hold a token"
        )
    if len(token) < 16:
        raise ValueError(f"{where}: tokens must be at least 16 characters long")


def _parse(lines: Iterable[str], where: str) -> list[tuple[str, str]]:
    entries = []
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        scope, sep, token = line.partition(":")
        if not sep or not token.strip():
            add_secret(line)
            raise ValueError(f"{where}, entry {n}: expected SCOPE:TOKEN")
        _check(scope.strip(), token.strip(), f"{where}, entry {n}")
        entries.append((scope.strip(), token.strip()))
    return entries


def load_tokens(
    tokens_file: str | Path | None, env: Mapping[str, str] | None = None
) -> TokenTable | None:
    """Tokens from ``tokens_file`` and/or ``$QPU_GATEWAY_TOKENS``; ``None`` when neither is set."""
    env = os.environ if env is None else env
    entries: list[tuple[str, str]] = []
    if tokens_file:
        path = Path(tokens_file)
        if path.stat().st_mode & 0o077:
            raise ValueError(f"tokens file {path} must not be readable by group/others (chmod 600)")
        entries += _parse(path.read_text().splitlines(), str(path))
    if env.get(ENV_TOKENS):
        entries += _parse(env[ENV_TOKENS].split(","), ENV_TOKENS)
    return TokenTable(entries) if entries else None


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks ``authorization: Bearer <token>`` against the method's required scope."""

    def __init__(self, tokens: TokenTable) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if not method.startswith(_PREFIX):
            return await continuation(handler_call_details)
        required = _REQUIRED.get(method[len(_PREFIX):], "admin")
        header = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode(errors="replace")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _deny(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        scope = self.tokens.scope_of(token.strip())
        if scope is None:
            return _deny(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        if required not in _GRANTS[scope]:
            return _deny(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this token's scope {scope!r} does not allow {method[len(_PREFIX):]} "
                f"(needs {required!r})",
            )
        return await continuation(handler_call_details)
