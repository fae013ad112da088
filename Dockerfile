# cascadeflow gateway image.
#
#   docker build -t cascadeflow .                       # base: python:3.11-slim-bookworm (Docker Hub)
#   buildah bud --layers --format docker --build-arg BASE_IMAGE=localhost/cascadeflow-base:bookworm -t cascadeflow .
#
# BASE_IMAGE: any Debian-like image with python3 (>= 3.11, with the venv module) and useradd;
# deploy/base-image.sh makes one from Debian packages where Docker Hub is out of reach.
# Every stage uses the same base, so the venv's interpreter links hold in the runtime stage.
# Layers are ordered for the cache: a change in src/ rebuilds only the wheel and its install,
# not the dependencies. See docs/deployment.md.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The dependency list alone, read from pyproject.toml: the layer that installs it is rebuilt
# only when the list changes (not for a new version number, test extras or a change in src/).
FROM ${BASE_IMAGE} AS requirements
WORKDIR /build
COPY pyproject.toml .
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(p['project']['dependencies'] + p['build-system']['requires']))" > requirements.txt

# A venv with the dependencies (and setuptools, to build the wheel below without a download).
FROM ${BASE_IMAGE} AS venv
# --build-arg PIP_INDEX_URL=... where a local index mirrors PyPI. Build arguments reach the
# build stages only; nothing of the build host's pip configuration reaches the image.
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/cascadeflow
COPY --from=requirements /build/requirements.txt /tmp/requirements.txt
# A build host behind a TLS-inspecting proxy passes its CA bundle as a build secret
# (--secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt), mounted for this step only.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && /opt/cascadeflow/bin/pip install --quiet -r /tmp/requirements.txt

# The package as a wheel (no dependencies, no fresh build environment: nothing is downloaded).
FROM venv AS wheel
WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN /opt/cascadeflow/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${BASE_IMAGE}
# A fixed, non-root uid/gid (10001) so volumes can be prepared for it on the host.
RUN useradd --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin cascadeflow \
 && mkdir -p /config /data \
 && chown cascadeflow:cascadeflow /data
COPY --from=venv /opt/cascadeflow /opt/cascadeflow
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/cascadeflow/bin/pip install --quiet --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && /opt/cascadeflow/bin/cascadeflow --version
# The documented CASCADEFLOW_* variables win over a config file (docs/configuration.md):
# listen on every interface (the container's network is its own), keep the ledger in /data.
ENV PATH=/opt/cascadeflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CASCADEFLOW_HOST=0.0.0.0 \
    CASCADEFLOW_PORT=8000 \
    CASCADEFLOW_DATA_DIR=/data
# `proxy start` reads ./cascadeflow-proxy.yaml when it exists: mount a config at
# /config/cascadeflow-proxy.yaml (read-only is fine); without one, the environment defaults.
WORKDIR /config
VOLUME ["/config", "/data"]
USER 10001:10001
EXPOSE 8000
# No curl in the image: the health check is Python's. /health needs no key.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/cascadeflow/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CASCADEFLOW_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["cascadeflow"]
CMD ["proxy", "start"]
