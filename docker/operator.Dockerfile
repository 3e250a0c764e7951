# The Graft operator: kopf + the Kubernetes client, no Ray/torch (the operator never imports them).
#   docker build -f docker/operator.Dockerfile -t ghcr.io/graft-dev/graft-operator:0.1.0 .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md locks/operator-image.txt ./
COPY graft ./graft
# Exactly locks/operator-image.txt (graft-operator[operator]: kopf, the Kubernetes client; every pin
# hash-checked, no resolver), then graft itself without dependencies.
RUN pip install --no-deps --require-hashes -r operator-image.txt \
 && pip install --no-deps . \
 && python -c "import graft.operator.handlers" && graft operator --help >/dev/null \
 && rm -rf /src

RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin graft
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080 9090
ENTRYPOINT ["graft", "operator"]
CMD ["--all-namespaces", "--liveness", "http://0.0.0.0:8080/healthz", "--metrics-port", "9090"]
