# hpo_node image: the study driver, and the Ray head/worker image for KubeRay.
# Build from the repository root:
#     docker build -f deploy/docker/node.Dockerfile -t qhpo-node:0.1.0 .
#     docker build -f deploy/docker/node.Dockerfile \
#         --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t qhpo-node:0.1.0-cuda .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# wget: KubeRay's default head/worker probes call it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY qpu_gateway ./qpu_gateway
COPY hpo_node ./hpo_node
COPY examples ./examples

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0" \
    && pip install . \
    && useradd --create-home --uid 10001 ray \
    && mkdir -p /app/results \
    && chown ray /app/results

USER 10001
VOLUME ["/app/results"]

ENTRYPOINT ["hpo-node"]
CMD ["run", "examples/digits.toml"]
