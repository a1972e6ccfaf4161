"""The ``media`` resource: the content repository's client endpoints."""
