"""Turning a Qwen3-VL checkpoint into deployable graphs (ONNX now; FP8 and TensorRT build on it).

- ``export.onnx_export``: ``export_checkpoint`` / ``export_model`` write the graphs + manifest;
- ``export.vision_graph`` / ``export.text_graph``: the export-only wrappers;
- ``export.parity``: ``check_parity``, the torch-vs-onnxruntime comparison.

The manifest and the model identity live in ``inspector.artifacts``: the backends read them too,
and keeping them there means ``inspector`` never imports ``export``.
"""
