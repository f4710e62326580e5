# The prediction image: `python -m trainer.serve` on Vertex AI's custom-container contract
# (AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE, the model from AIP_STORAGE_URI).
#   docker build -f CONTEXT/serving.Dockerfile -t IMAGE CONTEXT   (see training.Dockerfile)
#   docker run -p 8080:8080 -e AIP_STORAGE_URI=gs://B/model IMAGE     (or -v + --model-dir)
# By default it has no TensorFlow: the model runs on LiteRT (the export's litert/model.tflite,
# written by `python -m trainer.serving.litert EXPORT_DIR`). For GPUs, or exports LiteRT cannot
# take: --build-arg TENSORFLOW='tensorflow[and-cuda]==2.21.0' (or tensorflow-cpu==2.21.0).
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TENSORFLOW=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# TensorFlow first, in its own layer, when asked for: it is most of such an image.
RUN if [ -n "${TENSORFLOW}" ]; then python -m pip install "${TENSORFLOW}"; fi

ENV AIP_HTTP_PORT=8080
# The wheel without its dependencies (they name `tensorflow`), then the server's own.
COPY vertex_trainer-*.whl /tmp/wheels/
RUN python -m pip install --no-deps /tmp/wheels/vertex_trainer-*.whl \
    && python -m trainer.containers.requirements serve | python -m pip install -r /dev/stdin \
    && rm -rf /tmp/wheels \
    && useradd --create-home --uid 1000 serve

USER serve
WORKDIR /home/serve
EXPOSE 8080
# Vertex reaches the container from outside it, so it listens on every interface.
ENTRYPOINT ["python", "-m", "trainer.serve", "--host", "0.0.0.0"]
