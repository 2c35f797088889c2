"""Tests of services/ (API definition, storage, conversion)."""
