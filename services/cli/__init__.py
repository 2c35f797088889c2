"""The ``star`` command-line client."""
