# The training image: `python -m trainer.task` with nothing but the trainer and its runtime deps.
# Its build context holds this file and the vertex-trainer wheel (trainer/containers/images.py
# makes it, from a checkout or from the installed package):
#   docker build -f CONTEXT/training.Dockerfile -t IMAGE CONTEXT
#   (--network host --build-arg BASE_IMAGE=$(python -m trainer.containers.base_image) without
#   Docker Hub: a base built from Debian's mirror)
# CPU by default (tensorflow-cpu: no GPU kernels). GPU: --build-arg
# TENSORFLOW='tensorflow[and-cuda]==2.21.0' (CUDA, cuDNN and NCCL come as wheels from the package
# index); add --build-arg NCCL_PLUGIN=google-reduction-server for jobs with Reduction Server
# (scripts/submit_job.py --reduction-servers).
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TENSORFLOW=tensorflow-cpu==2.21.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# TensorFlow first, in its own layer: it is most of the image and changes least often. Its C++
# headers (287 MB) and libclang (62 MB) serve only to build custom ops, never to train, and its
# libraries ship their full symbol tables (only the dynamic ones are needed to load them):
# binutils' strip comes and goes within this layer.
RUN python -m pip install "${TENSORFLOW}" \
    && TF_DIR="$(python -c "import importlib.util as u; print(u.find_spec('tensorflow').submodule_search_locations[0])")" \
    && rm -rf "${TF_DIR}/include" \
    && python -m pip uninstall --yes --quiet libclang \
    && apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils > /dev/null \
    && find "${TF_DIR}" -name "*.so*" -type f -exec strip --strip-unneeded {} + \
    && apt-get purge -y -qq --auto-remove binutils > /dev/null \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

# Reduction Server's NCCL transport plugin, from Google's apt repository (the apt key is fetched
# with Python: the slim base has no curl).
ARG NCCL_PLUGIN=
RUN if [ -n "${NCCL_PLUGIN}" ]; then \
      python -c "import urllib.request as u; u.urlretrieve('https://packages.cloud.google.com/apt/doc/apt-key.gpg', '/etc/apt/keyrings/google-cloud.asc')" \
      && echo "deb [signed-by=/etc/apt/keyrings/google-cloud.asc] https://packages.cloud.google.com/apt google-fast-socket main" \
         > /etc/apt/sources.list.d/google-fast-socket.list \
      && apt-get update && apt-get install -y --no-install-recommends "${NCCL_PLUGIN}" \
      && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi

# The wheel requires `tensorflow`, which pip would install beside tensorflow-cpu: it goes in
# without its dependencies, then the rest of them (trainer/containers/requirements.py).
COPY vertex_trainer-*.whl /tmp/wheels/
RUN python -m pip install --no-deps /tmp/wheels/vertex_trainer-*.whl \
    && python -m trainer.containers.requirements core --without tensorflow \
       | python -m pip install -r /dev/stdin \
    && rm -rf /tmp/wheels \
    && useradd --create-home --uid 1000 trainer

USER trainer
WORKDIR /home/trainer
ENTRYPOINT ["python", "-m", "trainer.task"]
