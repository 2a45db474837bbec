# qpu-gateway image. Build from the repository root:
#     docker build -f deploy/docker/gateway.Dockerfile -t qhpo-gateway:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY qpu_gateway ./qpu_gateway
COPY hpo_node ./hpo_node

# torch is a dependency of the distribution (hpo_node); the CPU wheel keeps this image small.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
    && pip install . \
    && useradd --create-home --uid 10001 gateway \
    && mkdir -p /data \
    && chown gateway /data

USER 10001
VOLUME ["/data"]
EXPOSE 50051
ENV QPU_GATEWAY_STORE=/data/models.sqlite \
    QPU_GATEWAY_BACKEND=neal

# grpc.health.v1 through `qpu-gateway health` (exit 0 only when SERVING). Against a TLS gateway
# (serve --tls-cert/--tls-key, or tls_cert/tls_key in its config) set QPU_GATEWAY_TLS_CA to the
# CA file (mutual TLS: QPU_GATEWAY_TLS_CERT and QPU_GATEWAY_TLS_KEY, a client certificate;
# QPU_GATEWAY_TLS_SERVER_NAME when the certificate does not name 127.0.0.1): the same command
# then speaks TLS. Health needs no token.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["qpu-gateway", "health", "--gateway", "127.0.0.1:50051", "--timeout", "3"]

# SIGTERM: health turns NOT_SERVING for drain_seconds, then in-flight calls get grace_seconds and
# the store closes cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["qpu-gateway"]
CMD ["serve", "--address", "0.0.0.0:50051"]
