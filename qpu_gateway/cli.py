"""``qpu-gateway``: serve the gateway, or use one from the shell with CSV files.

    qpu-gateway serve [--address HOST:PORT] [--backend NAME] [--store PATH] [--config FILE]
    qpu-gateway fit --gateway HOST:PORT --data train.csv --target final_loss [--model-id ID]
                    [--backend NAME] [--seed S] [--param gamma=0.03 ...] [--drop id,notes]
    qpu-gateway predict --gateway HOST:PORT --model-id ID --data rows.csv [--out preds.csv]
    qpu-gateway models [--model-id ID] | qpu-gateway delete --model-id ID
    qpu-gateway health [--gateway HOST:PORT] [--service NAME] [--wait SECONDS]   # exit 0: SERVING

Every client subcommand takes ``--tls-ca`` (TLS), ``--tls-cert``/``--tls-key`` (mutual TLS),
``--tls-server-name`` and a bearer token from ``--token-file`` (chmod 600) or the environment
variable named by ``--token-env`` (default ``QPU_GATEWAY_TOKEN``); never on the command line.
The TLS options default to ``$QPU_GATEWAY_TLS_CA``, ``$QPU_GATEWAY_TLS_CERT``,
``$QPU_GATEWAY_TLS_KEY`` and ``$QPU_GATEWAY_TLS_SERVER_NAME``, so one health command serves as
the probe of a plaintext and of a TLS gateway (Docker HEALTHCHECK, compose, Kubernetes).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    from qpu_gateway.store import ModelStore

__all__ = ["main"]

log = logging.getLogger("qpu_gateway")
ENV_CLIENT_TOKEN: Final = "QPU_GATEWAY_TOKEN"
TLS_FLAGS: Final = {
    "--tls-ca": "PEM CA of the server's certificate: connect with TLS",
    "--tls-cert": "PEM client certificate (mutual TLS; with --tls-key)",
    "--tls-key": "PEM private key of --tls-cert",
    "--tls-server-name": "name to check the server's certificate against, if not the host",
}


def _serve(args: argparse.Namespace) -> int:
    from qpu_gateway.execution import SamplingPool, default_workers, start_forkserver

    # First: the sampling workers' forkserver imports (about a second) while this process does.
    start_forkserver()
    from qpu_gateway.auth import load_tokens
    from qpu_gateway.backends import BackendRegistry
    from qpu_gateway.config import load_config
    from qpu_gateway.observability import Metrics
    from qpu_gateway.server import ServerOptions, TLSFiles, create_server
    from qpu_gateway.service import GatewayService
    from qpu_gateway.store import ModelStore

    cfg = load_config(
        args.config,
        overrides={
            "address": args.address,
            "backend": args.backend,
            "store": args.store,
            "reflection": False if args.no_reflection else None,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "tls_client_ca": args.tls_client_ca,
            "tokens_file": args.tokens_file,
            "metrics_port": args.metrics_port,
            "metrics_host": args.metrics_host,
            "drain_seconds": args.drain_seconds,
            "sampling_workers": args.sampling_workers,
        },
    )
    tokens = load_tokens(cfg.tokens_file)

    async def run() -> None:
        store = ModelStore(cfg.store)
        gateway = None
        pool = None
        metrics: Metrics | None = None
        serving = False  # set once clients may have written to the store: from then on it is kept
        try:
            registry = BackendRegistry(cfg.backends)
            for name in dict.fromkeys([*cfg.chain, *(cfg.allowed_backends or [])]):
                registry.sampler(name)
            workers = cfg.sampling_workers or min(cfg.max_concurrent_fits, default_workers())
            pool = SamplingPool(workers, cfg.backends, warm=cfg.chain)
            service = GatewayService(
                store,
                registry,
                chain=cfg.chain,
                allowed_backends=cfg.allowed_backends,
                limits=cfg.fit_limits(),
                breaker_failures=cfg.breaker_failures,
                breaker_cooldown_seconds=cfg.breaker_cooldown_seconds,
                executor=pool,
            )
            if cfg.metrics_port is not None:
                metrics = Metrics()
            tls = TLSFiles(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca) if cfg.tls_cert else None
            gateway = await create_server(  # binds first: a busy address fails before the workers
                service,
                cfg.address,
                ServerOptions(
                    reflection=cfg.reflection,
                    tls=tls,
                    tokens=tokens,
                    metrics=metrics,
                    max_message_bytes=cfg.max_message_bytes,
                    max_concurrent_fits=cfg.max_concurrent_fits,
                    max_queued_fits=cfg.max_queued_fits,
                    fit_queue_wait_seconds=cfg.fit_queue_wait_seconds,
                ),
            )
            if metrics is not None and cfg.metrics_port is not None:  # so does a busy metrics port
                try:
                    metrics_port = metrics.serve(cfg.metrics_port, cfg.metrics_host)
                except OSError as exc:
                    raise OSError(
                        f"metrics: cannot listen on {cfg.metrics_host}:{cfg.metrics_port}: "
                        f"{exc.strerror or exc}"
                    ) from None
                shown = f"[{cfg.metrics_host}]" if ":" in cfg.metrics_host else cfg.metrics_host
                log.info("metrics on http://%s:%d/metrics", shown, metrics_port)
            pool.start()
            await gateway.start()  # the last step that can fail
            serving = True
            host = cfg.address.rsplit(":", 1)[0]
            log.info(
                "qpu-gateway serving on %s:%d backend=%s store=%s sampling_workers=%d "
                "reflection=%s tls=%s auth=%s",
                host, gateway.port, ",".join(cfg.chain), cfg.store, workers, cfg.reflection,
                "mtls" if cfg.tls_client_ca else ("tls" if tls else "off"),
                f"{len(tokens)} tokens" if tokens else "off",
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            log.info(
                "shutting down: health NOT_SERVING, drain %.1fs, then grace %.1fs",
                cfg.drain_seconds, cfg.grace_seconds,
            )
            await gateway.stop(cfg.grace_seconds, drain=cfg.drain_seconds)
            gateway = pool = None
        finally:  # a failed start: stop what did start, so that the process exits cleanly
            try:
                if gateway is not None:
                    await gateway.stop(0)
                elif pool is not None:
                    pool.close()
                if metrics is not None:
                    metrics.close()
            except Exception as exc:  # the start's own error, if any, is the one to report
                log.warning("stopping after the failed start: %s", exc)
            finally:
                if serving:
                    store.close()
                else:
                    _abandon(store)
        log.info("stopped; store closed")

    asyncio.run(run())
    return 0


def _abandon(store: ModelStore) -> None:
    """Close the store of a start that failed, deleting it if this start created it (so that a
    failed start leaves no new store behind). An error doing so is logged at warning, not raised:
    the start's own error is the one to report."""
    try:
        if store.created:
            store.discard()
        else:
            store.close()
    except Exception as exc:
        log.warning("after the failed start: store %s: %s", store.path, exc)


def _read_csv(
    path: str, columns: Sequence[str] | None = None, drop: Sequence[str] = ()
) -> tuple[list[str], np.ndarray]:
    """The names and the numeric values of ``columns`` (default: every column not in ``drop``),
    in that order.

    Only the chosen columns must be numbers, so a file may carry ids or notes. A UTF-8 byte order
    mark (Excel's "CSV UTF-8") is skipped.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise SystemExit(f"{path}: needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    unknown = [n for n in drop if n not in header]
    if unknown:
        raise SystemExit(f"{path}: --drop {unknown[0]!r}: no such column "
                         f"(the file's columns: {', '.join(header)})")
    names = list([h for h in header if h not in drop] if columns is None else columns)
    missing = [n for n in names if n not in header]
    if missing:
        raise SystemExit(
            f"{path}: no column {missing[0]!r}, which the model was fitted with "
            f"(the model's features: {', '.join(names)}; the file's columns: {', '.join(header)})"
        )
    index = [header.index(n) for n in names]
    data = np.empty((len(body), len(index)))
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise SystemExit(f"{path}, row {r + 2}: {len(row)} values for {len(header)} columns")
        for c, i in enumerate(index):
            try:
                data[r, c] = float(row[i])
            except ValueError:
                hint = f" (not a feature? --drop {header[i]})" if columns is None else ""
                raise SystemExit(
                    f"{path}, row {r + 2}, column {header[i]!r}: {row[i]!r} is not a number{hint}"
                ) from None
    return names, data


def _drop(text: str) -> list[str]:
    """``--drop A,B`` as its column names."""
    return [name for name in text.split(",") if name]


def _parse_param(text: str) -> tuple[str, Any]:
    """``--param NAME=VALUE`` as (name, value), typed as the wire's ``QSVRParams`` field;
    ``ValueError`` naming ``--param`` and the rule."""
    from qpu_gateway.convert import WIRE_PARAMS
    from qpu_gateway.v1 import gateway_pb2 as pb

    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--param expects NAME=VALUE, got {text!r}")
    if key not in WIRE_PARAMS:
        raise ValueError(
            f"--param {text}: unknown QSVR parameter {key!r} (known: {', '.join(WIRE_PARAMS)})"
        )
    field = pb.QSVRParams.DESCRIPTOR.fields_by_name[key]
    if field.type == field.TYPE_STRING:
        return key, value
    if field.type == field.TYPE_DOUBLE:
        try:
            return key, float(value)
        except ValueError:
            raise ValueError(f"--param {text}: {key} must be a number, got {value!r}") from None
    try:
        number: int | None = int(value)
    except ValueError:
        number = None
    if number is None or not 0 <= number < 2**32:  # the wire's uint32
        raise ValueError(f"--param {text}: {key} must be an integer in [0, 2**32), got {value!r}")
    return key, number


def _seed(seed: int | None) -> int | None:
    """``--seed`` when given: ``ValueError`` naming it unless in the wire's uint64 range."""
    from qpu_gateway.convert import wire_uint

    return None if seed is None else wire_uint("--seed", seed, 64)


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token: ``--token-file`` (not readable by group/others), else ``$<--token-env>``."""
    if args.token_file:
        path = Path(args.token_file)
        if path.stat().st_mode & 0o077:
            raise ValueError(f"token file {path} must not be readable by group/others (chmod 600)")
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"token file {path} is empty")
        return token
    return os.environ.get(args.token_env) or None


def _client(args: argparse.Namespace, options: Sequence[tuple[str, Any]] = ()) -> Any:
    from qpu_gateway.client import GatewayClient

    opts = [*options]
    if args.tls_server_name:
        opts.append(("grpc.ssl_target_name_override", args.tls_server_name))
    return GatewayClient(
        args.gateway, timeout=args.timeout, token=_token(args), tls_ca=args.tls_ca,
        tls_cert=args.tls_cert, tls_key=args.tls_key, options=opts, wait_for_ready=False,
    )


def _fit(args: argparse.Namespace) -> int:
    drop = _drop(args.drop)
    if args.target in drop:
        raise SystemExit(f"--drop {args.target}: the target column cannot be dropped")
    header, data = _read_csv(args.data, drop=drop)
    if args.target not in header:
        raise SystemExit(f"{args.data}: no column {args.target!r} (columns: {', '.join(header)})")
    t = header.index(args.target)
    x = np.delete(data, t, axis=1)
    names = [h for i, h in enumerate(header) if i != t]
    params = dict(_parse_param(text) for text in args.param)
    seed = _seed(args.seed)
    with _client(args) as client:
        info = client.fit(
            x, data[:, t], model_id=args.model_id, backend=args.backend, seed=seed,
            feature_names=names, **params,
        )
    from google.protobuf.json_format import MessageToDict

    print(json.dumps(MessageToDict(info, preserving_proto_field_name=True), indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    with _client(args) as client:
        names = list(client.get_model(args.model_id, version=args.version).feature_names)
        _, data = _read_csv(args.data, names or None, drop=() if names else _drop(args.drop))
        mean, std = client.predict(args.model_id, data, version=args.version)
    out = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
    try:
        w = csv.writer(out)
        w.writerow(["mean", "std"])
        w.writerows(zip(mean.tolist(), std.tolist(), strict=True))
    finally:
        if args.out:
            out.close()
    return 0


def _models(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    with _client(args) as client:
        models = client.list_models(args.model_id)
    print(json.dumps([MessageToDict(m, preserving_proto_field_name=True) for m in models], indent=2))
    return 0


def _delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        n = client.delete_model(args.model_id)
    print(f"deleted {n} version(s) of {args.model_id}")
    return 0


def _tls_hint(args: argparse.Namespace, details: str) -> str:
    """A hint when the connection was closed during set-up: a plaintext client's, as by a TLS
    server, or a TLS client's without a certificate, as by a mutual-TLS server."""
    if "Socket closed" not in details:
        return ""
    if getattr(args, "tls_ca", None) is None:
        return " (a TLS gateway closes plaintext connections: pass --tls-ca or set QPU_GATEWAY_TLS_CA)"
    if getattr(args, "tls_cert", None) is None:
        return (" (a gateway that requires client certificates (mutual TLS, tls_client_ca) closes "
                "connections without one: pass --tls-cert and --tls-key, or set "
                "QPU_GATEWAY_TLS_CERT and QPU_GATEWAY_TLS_KEY)")
    return ""


def _rpc_error(exc: Any, args: argparse.Namespace) -> str:
    """``CODE: details`` of a failed call, with :func:`_tls_hint`."""
    details = str(exc.details())
    return f"{exc.code().name}: {details}{_tls_hint(args, details)}"


def _health(args: argparse.Namespace) -> int:
    """Print the health status; exit 0 when SERVING (for probes and scripts), 1 otherwise."""
    import grpc

    with _client(args) as client:  # GatewayClient bounds its reconnect backoff
        if args.wait:
            try:
                client.wait_until_serving(timeout=args.wait)
            except TimeoutError as exc:
                print(f"qpu-gateway: {exc}{_tls_hint(args, str(exc))}", file=sys.stderr)
                return 1
        try:
            status = client.health(args.service, timeout=args.timeout)
        except grpc.RpcError as exc:
            why = _rpc_error(exc, args)
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                why = (f"NOT_FOUND: the gateway has no service {args.service!r} to report on "
                       "(--service '' for the whole server, or qpu_gateway.v1.Gateway)")
            print(f"qpu-gateway: {why}", file=sys.stderr)
            return 1
    print(status)
    return 0 if status == "SERVING" else 1


def _parser() -> argparse.ArgumentParser:
    from qpu_gateway.backends import available_backends

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS, type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL",
                                 "FATAL"),
                        help="default INFO")
    common.add_argument("--log-format", choices=("text", "json"), default=argparse.SUPPRESS,
                        help="json: one object per line, with request ids (default text)")
    # SUPPRESS everywhere (the actions are shared with the subcommands: a default set here would
    # overwrite a flag given before the subcommand); main fills in INFO / text
    p = argparse.ArgumentParser(prog="qpu-gateway", description=__doc__.split("\n\n")[0],
                                parents=[common])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    s = add("serve", help="run the gRPC server until SIGINT/SIGTERM")
    s.add_argument("--address", help="HOST:PORT to bind (port 0 picks a free one)")
    s.add_argument("--backend", help=f"sampler backend ({', '.join(available_backends())})")
    s.add_argument("--store", help="SQLite file of the model store")
    s.add_argument("--config", help="TOML configuration file")
    s.add_argument("--no-reflection", action="store_true", help="do not serve gRPC reflection")
    s.add_argument("--tls-cert", help="PEM certificate: serve TLS")
    s.add_argument("--tls-key", help="PEM private key of --tls-cert")
    s.add_argument("--tls-client-ca", help="PEM CA of client certificates: mutual TLS")
    s.add_argument("--tokens-file", help="SCOPE:TOKEN per line (chmod 600); $QPU_GATEWAY_TOKENS adds more")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    s.add_argument("--metrics-host",
                   help="listen address of /metrics (default 127.0.0.1; unauthenticated HTTP)")
    s.add_argument("--drain-seconds", type=float,
                   help="after SIGTERM keep serving this long with health NOT_SERVING (default 0)")
    s.add_argument("--sampling-workers", type=int,
                   help="processes that run Fits (default: min(max_concurrent_fits, CPU cores))")
    s.set_defaults(func=_serve)

    def client_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--gateway", default="127.0.0.1:50051", help="HOST:PORT of the gateway")
        sp.add_argument("--timeout", type=float, default=60.0,
                        help="deadline in seconds (default 60)")
        for flag, help_ in TLS_FLAGS.items():
            env = "QPU_GATEWAY_" + flag[2:].upper().replace("-", "_")
            sp.add_argument(flag, default=os.environ.get(env) or None, help=f"{help_} (default ${env})")
        sp.add_argument("--token-file", help="file holding the bearer token (chmod 600)")
        sp.add_argument("--token-env", default=ENV_CLIENT_TOKEN,
                        help=f"environment variable holding the bearer token (default {ENV_CLIENT_TOKEN})")

    f = add("fit", help="fit a model on a CSV (header row; one target column)")
    client_args(f)
    f.add_argument("--data", required=True)
    f.add_argument("--target", required=True, help="name of the target column")
    f.add_argument("--model-id", default="")
    f.add_argument("--backend", default="")
    f.add_argument("--seed", type=int)
    f.add_argument("--drop", default="",
                   help="comma-separated columns that are not features (ids, notes)")
    f.add_argument("--param", action="append", default=[],
                   help="QSVR parameter NAME=VALUE (repeatable), e.g. gamma=0.03")
    f.set_defaults(func=_fit)

    r = add("predict", help="predict rows of a CSV (header row; columns matched by the model's "
                            "feature names)")
    client_args(r)
    r.add_argument("--model-id", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--drop", default="",
                   help="for a model stored without feature names: comma-separated columns to ignore")
    r.add_argument("--version", type=int)
    r.add_argument("--out", help="output CSV (default: stdout)")
    r.set_defaults(func=_predict)

    m = add("models", help="list stored models")
    client_args(m)
    m.add_argument("--model-id", default="", help="list every version of this model")
    m.set_defaults(func=_models)

    d = add("delete", help="delete every version of a model")
    client_args(d)
    d.add_argument("--model-id", required=True)
    d.set_defaults(func=_delete)

    h = add("health", help="health check: prints the status, exit 0 when SERVING")
    client_args(h)
    h.add_argument("--service", default="", help="service name ('' = the whole server)")
    h.add_argument("--wait", type=float, default=0.0,
                   help="wait up to this many seconds for SERVING before answering")
    h.set_defaults(func=_health)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # gRPC core's own INFO lines (e.g. one per failed TLS handshake of a plaintext client) would
    # interleave unformatted with the log; its errors still show. GRPC_VERBOSITY set by the
    # caller wins. Read when grpc loads, so before the first import of it (observability's).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from qpu_gateway.errors import GatewayError
    from qpu_gateway.observability import JsonFormatter, RequestIdFilter
    from qpu_gateway.redact import install_log_redaction

    install_log_redaction()

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter()
        if getattr(args, "log_format", "text") == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
    )
    logging.basicConfig(level=getattr(args, "log_level", "INFO"), handlers=[handler])
    logging.captureWarnings(True)  # Python warnings (numpy's) in the log's format, not raw
    import grpc

    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a reader that left (`| head`) shows here, not at exit
        return code
    except BrokenPipeError as exc:
        if args.command == "serve":
            print(f"qpu-gateway: {exc}", file=sys.stderr)
            return 2
        # stdout's reader left (`qpu-gateway models | head`): stop quietly, as Unix tools do,
        # with SIGPIPE's status; stdout goes to /dev/null so that the exit's flush stays quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except grpc.RpcError as exc:
        print(f"qpu-gateway: {_rpc_error(exc, args)}", file=sys.stderr)
        return 1
    except (ValueError, OSError, GatewayError) as exc:
        print(f"qpu-gateway: {exc}", file=sys.stderr)
        return 2
