# One image for every bridge command: `bridge run` (the daemon, migrates the ledger on
# start), `bridge reconcile`, `bridge ledger ...`, `bridge db upgrade`. The product only:
# the emulators (`bridge sandbox`, the workspace package in sandbox/) and trustme stay out.

# --- build: resolve the locked dependencies and install the bridge as a wheel ----------
FROM python:3.11-slim AS build
# The virtualenv is built where it will live: its scripts' shebangs name this path.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/bridge \
    UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv
WORKDIR /src
# Dependencies first, so code changes do not invalidate this layer. uv reads every
# workspace member's pyproject.toml to check the lock; the sandbox's code is never copied.
COPY pyproject.toml uv.lock ./
COPY sandbox/pyproject.toml ./sandbox/
RUN uv sync --locked --no-dev --package omni-awa-bridge --no-install-project --no-editable
COPY README.md alembic.ini ./
COPY bridge ./bridge
COPY migrations ./migrations
COPY mappings ./mappings
RUN uv sync --locked --no-dev --package omni-awa-bridge --no-editable

# --- runtime: the virtualenv only, as an unprivileged user -------------------------------
FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid bridge --home-dir /var/lib/bridge \
        --create-home --shell /usr/sbin/nologin bridge
COPY --from=build /opt/bridge /opt/bridge
ENV PATH="/opt/bridge/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    BRIDGE_DATA_DIR=/var/lib/bridge \
    BRIDGE_HTTP_HOST=0.0.0.0 \
    BRIDGE_LOG_FORMAT=json
USER bridge
WORKDIR /var/lib/bridge
VOLUME ["/var/lib/bridge"]
EXPOSE 9464
# Liveness of `bridge run` (the image has no curl; the venv's Python does the request).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BRIDGE_HTTP_PORT', '9464') + '/healthz', timeout=3)"]
ENTRYPOINT ["bridge"]
CMD ["run"]
