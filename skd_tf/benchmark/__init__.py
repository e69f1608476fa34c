"""Latency of exported .tflite files on this host, on a board with only a TFLite runtime, or on an Android
phone over adb. Imports numpy and the runtime only — never TensorFlow, Keras or the rest of skd_tf — so the
folder runs on its own where only ``numpy`` and ``ai-edge-litert`` are installed."""
