# The prediction image: `python -m trainer.serve` on Vertex AI's custom-container contract
# (AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE, the model from AIP_STORAGE_URI).
#   docker build -f CONTEXT/serving.Dockerfile -t IMAGE CONTEXT   (see training.Dockerfile)
#   docker run -p 8080:8080 -e AIP_STORAGE_URI=gs://B/model IMAGE     (or -v + --model-dir)
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

# Up to the TensorFlow layer this is the training Dockerfile, so the layer is shared.
ARG TENSORFLOW=tensorflow==2.21.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# TensorFlow first, in its own layer: it is most of the image and changes least often.
RUN python -m pip install "${TENSORFLOW}"

ENV AIP_HTTP_PORT=8080
COPY vertex_trainer-*.whl /tmp/wheels/
RUN python -m pip install "$(echo /tmp/wheels/vertex_trainer-*.whl)[serve]" \
    && rm -rf /tmp/wheels \
    && useradd --create-home --uid 1000 serve

USER serve
WORKDIR /home/serve
EXPOSE 8080
# Vertex reaches the container from outside it, so it listens on every interface.
ENTRYPOINT ["python", "-m", "trainer.serve", "--host", "0.0.0.0"]
