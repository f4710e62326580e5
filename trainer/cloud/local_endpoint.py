"""A model served on this machine through the aiplatform SDK's own local client.

`LocalModel(serving_container_spec=SPEC).deploy_to_local_endpoint(artifact_uri=DIR)` runs the
serving container as Vertex would (AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE, the model
files bind-mounted at AIP_STORAGE_URI), polls its health route and posts predictions, all with
the ModelContainerSpec of the plan's UploadModelRequest. The SDK publishes the container's port
(`docker run -p`), which needs Docker's bridge network; a daemon started with `--bridge=none`
(CI machines, sandboxes) has none. `host_network` runs the container on the host network
instead, where the container's port is the host's: the local plan names a free one.
"""

from __future__ import annotations

import contextlib
import json
from typing import Iterator

from trainer.errors import TrainerError


@contextlib.contextmanager
def host_network() -> Iterator[None]:
    """While inside, docker's `containers.run` starts containers on the host network, without
    published ports (the only network a bridgeless daemon has). Contained: the SDK calls it
    from one place (`docker_utils.run.run_prediction_container`), and it is restored after."""
    from docker.models.containers import ContainerCollection

    original = ContainerCollection.run

    def run(self, image, command=None, **kwargs):
        kwargs.pop("ports", None)
        kwargs["network_mode"] = "host"
        return original(self, image, command, **kwargs)

    ContainerCollection.run = run
    try:
        yield
    finally:
        ContainerCollection.run = original


@contextlib.contextmanager
def serve(container_spec: dict, artifact_dir: str, keep: bool = False,
          timeout_secs: int = 180) -> Iterator:
    """The uploadModel request's containerSpec (REST/JSON; its port is the host's) served by
    the SDK's LocalEndpoint on 127.0.0.1; yields the endpoint; the container is removed on
    exit, or with `keep` (after a success) left serving."""
    from google.cloud import aiplatform
    from google.cloud.aiplatform.prediction import LocalModel
    from google.cloud.aiplatform_v1.types import ModelContainerSpec

    spec = ModelContainerSpec.from_json(json.dumps(container_spec))
    port = spec.ports[0].container_port
    # The SDK asks its global config for a project (for GOOGLE_CLOUD_PROJECT in the container);
    # unset, that looks for credentials and probes the metadata server. Nothing here needs one.
    aiplatform.init(project="local")
    endpoint = LocalModel(serving_container_spec=spec).deploy_to_local_endpoint(
        artifact_uri=artifact_dir, host_port=str(port), container_ready_timeout=timeout_secs,
        container_ready_check_interval=1)
    try:
        with host_network():
            endpoint.serve()
    except Exception as err:  # the SDK's DockerError, docker's APIError, ValueError, ...
        _remove(endpoint)
        raise TrainerError(f"the serving container did not become healthy on port {port}: "
                           f"{' '.join(str(err).split())[:300]}") from None
    succeeded = False
    try:
        yield endpoint
        succeeded = True
    finally:
        if keep and succeeded:
            endpoint.container = None  # the SDK stops its container when collected
        else:
            _remove(endpoint)


def _remove(endpoint) -> None:
    if endpoint.container is not None:
        with contextlib.suppress(Exception):
            endpoint.container.remove(force=True)
        endpoint.container = None
