"""The long-running inspection service on the edge box: supervision, health, metrics, commands, deploy files.

Entry point: ``inspector-edge`` / ``python -m edge`` (``edge.service:main``).
"""
