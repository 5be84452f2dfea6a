# syntax=docker/dockerfile:1
# The example Python worker image: an unmodified stepflow-py 0.13 worker serving the components of
# examples/python-worker/worker.py over the pull protocol (PullTasks on STEPFLOW_TASKS_URL).
# Build from the repository root:
#   docker build -f deploy/worker.Dockerfile -t stepflow-python-worker:dev .
# Replace worker.py (and the pip line) with your own components; the environment stays the same.

FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# stepflow-py pins protobuf < 6, so it gets a virtualenv of its own (never beside stepflow-mesh).
RUN python -m venv /opt/worker \
    && /opt/worker/bin/pip install --no-cache-dir "stepflow-py==0.13.0"

FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="stepflow-python-worker" \
      org.opencontainers.image.description="Example stepflow-py worker for Stepflow Mesh" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 stepflow \
    && useradd --system --uid 10001 --gid stepflow --home-dir /app --shell /usr/sbin/nologin stepflow

COPY --from=build /opt/worker /opt/worker
WORKDIR /app
COPY examples/python-worker/worker.py ./worker.py

# STEPFLOW_TASKS_URL / STEPFLOW_BLOB_URL: a node's gRPC host:port; STEPFLOW_QUEUE_NAME: the grpc
# plugin's queueName (worker-protocol.md §3.9, §4). The defaults suit deploy/compose.yaml.
ENV PATH=/opt/worker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STEPFLOW_TRANSPORT=grpc \
    STEPFLOW_TASKS_URL=stepflow-node:7840 \
    STEPFLOW_BLOB_URL=stepflow-node:7840 \
    STEPFLOW_QUEUE_NAME=python \
    STEPFLOW_SHUTDOWN_GRACE_SECS=10

USER 10001:10001

# A pull worker listens on nothing: it is healthy while its process runs, and it exits when its
# node stream cannot be re-established, so the orchestrator (compose/Kubernetes) restarts it.
HEALTHCHECK NONE

STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "worker.py"]
