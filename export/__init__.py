"""The export stage: TFLite conversion, quantization and on-device benchmarking of distilled students."""
