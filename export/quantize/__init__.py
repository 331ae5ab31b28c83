"""Post-training quantisation of the exported graphs.

- ``export.quantize.calibration``: the calibration tiles, cut by the station's own tiler and
  preprocessing from the line's footage, and their fingerprint;
- ``export.quantize.fp8``: NVIDIA ModelOpt FP8 (E4M3) calibration of the language model's
  linear layers and the ONNX hooks that turn its fake-quant into standard
  ``QuantizeLinear``/``DequantizeLinear`` in ``float8e4m3fn``.

Nothing here is imported by the runtime: ModelOpt is the optional ``fp8`` extra.
"""
