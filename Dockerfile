# syntax=docker/dockerfile:1
# The agentgov image: the operator and the policy sidecar are the same program
# (`agentgov operator`, `agentgov sidecar`), so one image serves both; the operator runs its
# own image as every agent's sidecar (AGENTGOV_IMAGE).
#
#   docker build -t ghcr.io/agentgov/agentgov:0.1.0 .
#
# Stage 1 builds the agentgov wheel and installs it, with its dependencies, into a virtual
# environment; stage 2 is the slim base plus that environment and nothing else: no compiler,
# no pip, no wheel cache, no source tree, a numeric non-root user (65532, the uid the
# operator's pod specs run as: runAsNonRoot needs a number to verify).
#
# The base is pinned to an exact Python patch release on Debian bookworm. Pin the digest too
# where the registry can be reached (the build machine of this repository cannot):
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm   -> sha256:...
#   docker build --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:... .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
# Optional extras baked in: `otel` makes the sidecar export traces when OTEL_EXPORTER_OTLP_ENDPOINT
# is set (the operator passes AGENTGOV_OTLP_ENDPOINT on); `vault`, `aws`, `azure` are the secret
# providers the operator reads spec.secrets through (`aws` also the S3 audit sink). Drop the
# ones you do not use for a smaller image (`--build-arg EXTRAS=otel,vault`); empty for the smallest.
ARG EXTRAS=otel,vault,aws,azure
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/agentgov \
 && /opt/agentgov/bin/pip install "$(ls /dist/agentgov-*.whl)[${EXTRAS}]" \
 && /opt/agentgov/bin/pip uninstall --yes pip setuptools \
 && find /opt/agentgov -name '__pycache__' -type d -prune -exec rm -rf {} + \
 && /opt/agentgov/bin/agentgov --version

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="agentgov" \
      org.opencontainers.image.description="Kubernetes operator and policy sidecar for governed AI agents" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/agentgov/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The base's own pip and setuptools are not needed to run: remove them. Then the user, and
# the folders the sidecar reads and writes (a fresh named volume mounted there inherits the
# ownership, so `docker compose` works without chown steps).
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
 && groupadd --system --gid 65532 agentgov \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin agentgov \
 && mkdir -p /etc/agentgov/bundle /etc/agentgov/secrets /var/log/agentgov \
 && chown 65532:65532 /etc/agentgov/secrets /var/log/agentgov
COPY --from=builder /opt/agentgov /opt/agentgov
USER 65532:65532
# 8080: the sidecar's inbound port (and the operator's liveness); 8081: the sidecar's egress
# port (loopback only); 9090: the operator's metrics.
EXPOSE 8080 9090
ENTRYPOINT ["agentgov"]
CMD ["--help"]
