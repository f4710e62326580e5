"""Vertex AI's prebuilt TensorFlow images that the legacy paths still name, and their end dates.

After its end of availability Vertex no longer runs an image (the framework support policy), so
the scripts warn when one is chosen past that date; our own images have no such date.
"""

from __future__ import annotations

import re
from datetime import date

# The newest prebuilt images and their end of availability, from Vertex's support schedule.
TRAINING_CPU = "us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest"
PREDICTION_CPU = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
PREDICTION_GPU = "us-docker.pkg.dev/vertex-ai/prediction/tf2-gpu.2-15:latest"
END_OF_AVAILABILITY = {("training", "2-16"): date(2026, 6, 28),
                       ("training", "2-17"): date(2026, 7, 11),
                       ("prediction", "2-15"): date(2027, 1, 14)}
_FAMILY = re.compile(r"/vertex-ai/(training|prediction)/tf2?-(?:cpu|gpu)\.(\d+-\d+)")


def end_of_availability(image: str) -> date | None:
    found = _FAMILY.search(image)
    return END_OF_AVAILABILITY.get((found[1], found[2])) if found else None


def past_end_warning(image: str, today: date, instead: str) -> str | None:
    """A one-line warning when `image` is a prebuilt image past its end of availability."""
    end = end_of_availability(image)
    if end is None or today <= end:
        return None
    return (f"warning: {image} reached its end of availability on {end.isoformat()} and Vertex "
            f"may refuse it; {instead}")
