"""What exported or trained models are: their manifest (``manifest``) and identity (``identity``).

Shared by ``export/`` (which writes them) and ``inspector/backends`` (which reads them), so the
runtime never imports the exporter.
"""
