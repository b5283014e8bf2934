"""COELHO RealTime ML service: online learning on three Kafka topics behind a FastAPI API."""

__version__ = "1.0.0"
