"""COELHO RealTime Kafka producers: seeded generators for the three topics."""

__version__ = "1.0.0"
