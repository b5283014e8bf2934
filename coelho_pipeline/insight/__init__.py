"""Delivery insight: the DORA keys and the rework rate, from the pipeline's own records."""
