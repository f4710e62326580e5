"""Vertex AI requests: custom jobs, model upload and deployment, prebuilt images and their end dates."""
