"""vertex-trainer: the package Vertex AI runs as `python -m trainer.task`."""

from setuptools import find_packages, setup

SLIM_RUNTIME = "ai-edge-litert>=2.1; platform_system != 'Windows'"
EXTRAS = {
    # launch --local serves through the SDK's LocalModel ([prediction]: FastAPI, the docker SDK).
    "cloud": ["google-cloud-storage", "google-cloud-aiplatform[prediction]", "docker", "pyyaml"],
    "tune": ["optuna", "matplotlib", "pyyaml", "google-cloud-aiplatform"],
    # The server runs without TensorFlow on LiteRT (no wheels for Windows: TensorFlow serves
    # there); Pillow and simplejpeg decode as the encoded_image signature does.
    "serve": ["starlette>=0.37", "uvicorn>=0.29", SLIM_RUNTIME, "simplejpeg", "pillow", "numpy",
              "protobuf", "google-cloud-storage"],
    "predict": ["matplotlib"],
    # setuptools and wheel: the sdist test installs with --no-build-isolation, offline;
    # [prediction] (FastAPI, the docker SDK): the aiplatform SDK's local endpoint, run against
    # the serving image (a fresh virtualenv without them failed that test).
    "test": ["pytest", "hypothesis", "setuptools", "wheel", "pyyaml", "optuna", "matplotlib",
             "google-cloud-storage", "google-cloud-aiplatform[prediction]", "docker",
             "starlette>=0.37", "uvicorn>=0.29", "gcp-storage-emulator", "cryptography",
             SLIM_RUNTIME, "simplejpeg", "pillow", "fastapi"],
}
# Everything a user runs: every command of `vertex-trainer`.
EXTRAS["all"] = sorted({r for name in ("cloud", "tune", "serve", "predict")
                        for r in EXTRAS[name]})

setup(
    name="vertex-trainer",
    version="0.1.0",
    description="Distributed train-and-evaluate for Vertex AI on tf.distribute, with "
                "hyperparameter-tuning metrics and SavedModel export",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["trainer", "trainer.*", "hptuning", "hptuning.*"]),
    package_data={"trainer": ["sample/*.tfrecord.gz", "containers/*.Dockerfile"],
                  "hptuning": ["*.yaml"]},
    # 2.17 is the newest Vertex prebuilt training image; the package must install on it without
    # replacing its TensorFlow. TF 2.21 no longer pulls in TensorBoard, which tf.summary needs.
    # google-crc32c (C, hardware CRC) checks every TFRecord before TensorFlow reads it. Our
    # images pick their own TensorFlow (tensorflow-cpu, CUDA wheels, none for serving) and
    # install the rest from this list: trainer/containers/requirements.py.
    install_requires=["tensorflow>=2.17", "tensorboard", "cloudml-hypertune", "google-crc32c"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["vertex-trainer=trainer.commands:cli"]},
)
