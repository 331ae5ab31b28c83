"""line inspector: tiled visual inspection with Qwen3-VL, verdicts over MQTT."""

__version__ = "0.1.0"
