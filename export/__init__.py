"""Turning a Qwen3-VL checkpoint into deployable graphs (ONNX now; FP8 and TensorRT build on it).

- ``export.onnx_export``: ``export_checkpoint`` / ``export_model`` write the graphs + manifest;
- ``export.vision_graph`` / ``export.text_graph``: the export-only wrappers;
- ``export.manifest``: ``manifest.json`` (``read_manifest``);
- ``export.identity``: which model a set of graphs came from;
- ``export.parity``: ``check_parity``, the torch-vs-onnxruntime comparison.
"""
