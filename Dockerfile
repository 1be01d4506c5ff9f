# Ki2API container image (docs: deploy/README.md).
#
#   make wheelhouse && docker build -t ki2api .     # offline build from deploy/container/wheels
#   docker build -t ki2api .                        # without a wheelhouse: pip fetches the lock
#
# BASE_IMAGE: any Debian-like image with python3 (3.11+) and its venv module; the tests pass a
# Debian bookworm base made with mmdebstrap (tests/support/container.py).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# The dependencies layer: changes only when the lock, pyproject.toml or the wheelhouse does.
# Without a wheelhouse (deploy/container/wheels/ holds only its .gitignore) pip uses the index.
COPY pyproject.toml requirements.lock deploy/container/wheels/ /build/
RUN set -eu; \
    if ls /build/*.whl >/dev/null 2>&1; then src="--no-index --find-links /build"; else src=""; fi; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > runtime.txt; \
    python3 -m venv /opt/ki2api; \
    /opt/ki2api/bin/pip install $src -c requirements.lock -r runtime.txt; \
    python3 -m venv /opt/build; \
    /opt/build/bin/pip install $src -c requirements.lock setuptools wheel
# The project layer.
COPY README.md /build/
COPY src/ /build/src/
RUN set -eu; \
    /opt/build/bin/pip wheel --no-deps --no-build-isolation -w /build/out /build; \
    /opt/ki2api/bin/pip install --no-index --no-deps /build/out/ki2api-*.whl; \
    /opt/ki2api/bin/pip uninstall -y pip setuptools; \
    find /opt/ki2api -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
RUN useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin ki2api \
 && mkdir -p /data /home/ki2api/.aws/sso/cache \
 && chown -R ki2api:ki2api /data /home/ki2api
COPY --from=builder /opt/ki2api /opt/ki2api
COPY deploy/container/entrypoint.sh /usr/local/bin/ki2api-entrypoint
ENV PATH=/opt/ki2api/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/ki2api \
    HOST=0.0.0.0 PORT=8989 \
    KI2API_DATA_DIR=/data
USER ki2api
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8989
# Token files: mount the host's ~/.aws/sso/cache read-only on /home/ki2api/.aws/sso/cache.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8989'), timeout=4)"]
ENTRYPOINT ["ki2api-entrypoint"]
CMD ["ki2api", "serve"]
