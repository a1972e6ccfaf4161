"""Persistence: engines, migrations, stores by domain, stream id generators."""
