"""Datasets of the tasks: tfds builders (digits, text), prepared-data access and batching."""
