# The Ray image the operator puts in RayJobs and RayServices: the pinned upstream Ray image plus graft
# (graft.jobs for training, graft.serving.app:build_app for serving), with the versions of locks/ray-image.txt.
#   docker build -f docker/ray.Dockerfile -t ghcr.io/graft-dev/graft-ray:0.1.0-ray2.60.0-py311 .
#   GPU: --build-arg RAY_TAG=2.60.0-py311-gpu
ARG RAY_TAG=2.60.0-py311
FROM rayproject/ray:${RAY_TAG}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 RAY_USAGE_STATS_ENABLED=0 \
    TORCH_EXTENSIONS_DIR=/home/ray/.cache/torch-extensions

COPY --chown=ray:users pyproject.toml README.md locks/ray-image.txt /home/ray/graft-src/
COPY --chown=ray:users graft /home/ray/graft-src/graft
# Exactly locks/ray-image.txt (graft-operator[train,serve,datasets,examples], every pin hash-checked;
# Ray is already in the base image at the same version), then graft itself without dependencies.
RUN pip install --no-deps --require-hashes -r /home/ray/graft-src/ray-image.txt \
 && pip install --no-deps /home/ray/graft-src \
 && python -c "import graft.jobs, graft.serving.args, ray; assert ray.__version__ == '2.60.0', ray.__version__" \
 && rm -rf /home/ray/graft-src

# Everything Ray creates (runs/ on the shared job storage included) is group-writable and closed to
# others, so the operator, in the storage group, deletes a finished job's runs/ at its TTL: KubeRay
# v1.6.0 starts Ray containers with `/bin/bash -c` (a login shell, reading /etc/profile, only with
# its ENABLE_LOGIN_SHELL), and a non-interactive bash first sources $BASH_ENV. Graft's own Ray
# clusters also run `umask 0007` before `ray start` (their container args); this covers shared clusters.
USER root
RUN mkdir -p /etc/graft && echo 'umask 0007' > /etc/graft/umask.sh && chmod 0644 /etc/graft/umask.sh
ENV BASH_ENV=/etc/graft/umask.sh
USER ray
