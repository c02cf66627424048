"""batchflow: declarative pipelines for Gemini / Vertex AI batch prediction."""

__version__ = "0.1.0"
