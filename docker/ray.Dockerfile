# The Ray image the operator puts in RayJobs and RayServices: the pinned upstream Ray image plus graft
# (graft.jobs for training, graft.serving.app:build_app for serving), with the versions of requirements.lock.
#   docker build -f docker/ray.Dockerfile -t ghcr.io/graft-dev/graft-ray:0.1.0-ray2.60.0-py311 .
#   GPU: --build-arg RAY_TAG=2.60.0-py311-gpu
ARG RAY_TAG=2.60.0-py311
FROM rayproject/ray:${RAY_TAG}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 \
    TORCH_EXTENSIONS_DIR=/home/ray/.cache/torch-extensions

COPY --chown=ray:users pyproject.toml README.md requirements.lock /home/ray/graft-src/
COPY --chown=ray:users graft /home/ray/graft-src/graft
# ray is already in the base image at the pinned version; the constraints keep pip from moving it.
RUN pip install -c /home/ray/graft-src/requirements.lock "/home/ray/graft-src[examples]" \
 && python -c "import graft.jobs, graft.serving.args, ray; assert ray.__version__ == '2.60.0', ray.__version__" \
 && rm -rf /home/ray/graft-src

USER ray
