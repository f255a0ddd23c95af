# The platform's one image. The Helm chart runs every component from it and picks the command:
# dagster-webserver, dagster-daemon, dagster api grpc, uvicorn (the API), analytics-platform migrate,
# edge-agent. Build and push: docs/deploy.md. (A plant gateway installs the edge agent without the
# platform, from its own two distributions: docs/edge.md, "Installing on a gateway".)
#
# The base is pinned by tag, which still moves with Debian and Python patch releases. For a rebuild
# that gets the very same base, pin its digest as well (one multi-arch index digest covers both
# architectures):
#   docker buildx imagetools inspect python:3.11-slim-bookworm      # prints the digest
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtualenv in /opt/venv with the pinned runtime dependencies and the project ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# 1. The dependencies alone ([project.dependencies], pinned by constraints.txt), so that a change to
#    the code does not reinstall them; only a change to pyproject.toml or constraints.txt does.
#    Every pin ships a manylinux wheel for x86_64 and aarch64: nothing is compiled.
COPY pyproject.toml constraints.txt ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt

# 2. The project, built as a wheel and installed into site-packages (not editable; its config
#    YAML files and the dashboard's static files are package data). Its dependencies are already
#    satisfied, so this installs nothing else; pip check fails the build if the set is inconsistent.
#    First the dashboard's chart library, uPlot, which is not in git: fetched from the npm registry
#    (build arg NPM_REGISTRY for a mirror), checked against its pinned sha512, into
#    analytics_platform/ui/static/vendor/, so the wheel carries it and the image needs no network
#    at run time. Files already in the build context from a local `make` (stamped) are kept.
COPY README.md ./
COPY analytics_platform/ analytics_platform/
COPY edge_agents/ edge_agents/
ARG NPM_REGISTRY=https://registry.npmjs.org
RUN python -m analytics_platform.ui.vendor
RUN pip install --no-cache-dir -c constraints.txt . \
 && pip check

# ---- runtime ----
FROM ${PYTHON_IMAGE}
# No apt packages: the native libraries come inside the wheels (librdkafka in confluent-kafka,
# libpq in psycopg-binary and psycopg2-binary, OpenBLAS/OpenMP in numpy, scipy and scikit-learn),
# and the base image already has ca-certificates and tzdata.
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
 && mkdir -p /opt/dagster/dagster_home \
 && chown 10001:10001 /opt/dagster/dagster_home

ENV PATH=/opt/venv/bin:$PATH \
    MIGRATIONS_DIR=/app/sql \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# the migrations (analytics-platform migrate reads MIGRATIONS_DIR), and the one-machine Dagster
# files for running the image locally; in Kubernetes the chart mounts its own dagster.yaml
COPY sql/ /app/sql/
COPY workspace.yaml dagster.yaml /app/

USER 10001:10001
# 3000 dagster-webserver, 3030 the code server (dagster api grpc), 8000 the API (uvicorn)
EXPOSE 3000 3030 8000
CMD ["analytics-platform", "--help"]
