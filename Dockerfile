# syntax=docker/dockerfile:1
# One image for both services: `serve webhook` (default) or `serve backend`, and for the
# compose steps around them (`operator unseal|tls`, `bootstrap`, `accounts seed-demo`). Build: docker build -t ivr-vault .
#
# Stage 1 builds a virtualenv from the pinned lock; stage 2 copies only that venv onto a
# fresh slim base, so no compiler, pip cache or build context ends up in the image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, so that a code change does not re-install them. --no-deps with an
# exact lock: nothing unpinned can slip in; `pip check` proves the lock is complete.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/pip check
# Compile now: at run time the root filesystem is read-only and no .pyc can be written.
RUN /opt/venv/bin/python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid/gid, so volume ownership and `user:` in compose agree with it.
RUN groupadd --system --gid 10001 ivr \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin ivr \
 && install -d -o 10001 -g 10001 -m 0700 /data /creds/webhook /creds/backend /vault-root /ca \
    /db-secret \
 && install -d -o 10001 -g 10001 -m 0755 /tls \
 && install -d -o 10001 -g 10001 -m 0750 /tls-key
COPY --from=build /opt/venv /opt/venv
# What bootstrap reads (IVR_LAYOUT_DIR): the key layout and the Vault policies.
COPY vault/layout.json /app/vault/layout.json
COPY policies /app/policies
ENV PATH=/opt/venv/bin:$PATH \
    IVR_LAYOUT_DIR=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LOG_FORMAT=json \
    WEBHOOK_HOST=0.0.0.0 \
    BACKEND_HOST=0.0.0.0 \
    STORE_PATH=/data/accounts.sqlite3
# Nothing is written outside /tmp and the volumes mounted on /data, /creds/*, /vault-root
# (dev compose's unseal step), /tls, /tls-key and /ca (the production override's vault-tls
# step), /db-secret (the HA override's database password): run it with --read-only
# --tmpfs /tmp. The empty directories above give fresh
# named volumes their owner (10001) and mode, so the non-root user can write its own
# volume; /tls-key is 0750 because Vault reads the key in it through its group (group_add).
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 8081
# Liveness of whichever service runs here (stdlib probe: the slim base has no curl).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "service.web.probe"]
ENTRYPOINT ["ivr-vault"]
CMD ["serve", "webhook"]
