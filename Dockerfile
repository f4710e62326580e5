# The training image: `python -m trainer.task` with nothing but the trainer and its runtime deps.
#   docker build -t IMAGE .
# GPU: --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu (TensorFlow already in the base).
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TENSORFLOW=tensorflow==2.21.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# TensorFlow first, in its own layer: it is most of the image and changes least often.
RUN python -m pip install "${TENSORFLOW}"

WORKDIR /opt/vertex-trainer
COPY setup.py README.md ./
COPY trainer ./trainer
RUN python -m pip install . \
    && rm -rf /opt/vertex-trainer \
    && useradd --create-home --uid 1000 trainer

USER trainer
WORKDIR /home/trainer
ENTRYPOINT ["python", "-m", "trainer.task"]
