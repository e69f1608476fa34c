"""Loading and running .tflite models with whichever TFLite runtime is installed.

Imports only numpy and a runtime, never TensorFlow unless it is the last
fallback, so the benchmark runs on a board that has just ``ai-edge-litert`` or
``tflite-runtime``. Order of preference: LiteRT (``ai_edge_litert``), the
legacy ``tflite_runtime`` wheel, then TensorFlow's bundled interpreter.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from dataclasses import dataclass

import numpy as np

from .native_log import native_stderr, without_tflite_notes

RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
TFLITE_MAGIC = b"TFL3"  # file identifier at byte offset 4 of every TFLite flatbuffer


class ModelFileError(ValueError):
    """The file does not exist or is not a TFLite flatbuffer."""


class RuntimeUnavailable(RuntimeError):
    """None of the TFLite runtimes can be imported."""


@dataclass
class Runtime:
    """One importable TFLite runtime: its name, version and interpreter module."""

    name: str
    version: str
    module: object

    @property
    def interpreter_class(self):
        return self.module.Interpreter


def load_runtime(preferred: str | None = None) -> Runtime:
    """The first importable runtime of ``RUNTIMES`` (or exactly ``preferred``)."""
    names = (preferred,) if preferred else RUNTIMES
    errors = []
    for name in names:
        if name not in RUNTIMES:
            raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
        try:
            if name == "ai_edge_litert":
                module = importlib.import_module("ai_edge_litert.interpreter")
                version = _dist_version("ai_edge_litert")
            elif name == "tflite_runtime":
                module = importlib.import_module("tflite_runtime.interpreter")
                version = _dist_version("tflite_runtime")
            else:
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
                tf = importlib.import_module("tensorflow")
                module, version = tf.lite, tf.__version__
            return Runtime(name, version, module)
        except ImportError as err:
            errors.append(f"{name}: {err}")
    raise RuntimeUnavailable("no TFLite runtime is installed (pip install ai-edge-litert); tried "
                             + "; ".join(errors))


@functools.cache
def _dist_version(package: str) -> str:
    """The version of the installed distribution that provides the import package ``package`` (LiteRT's
    ``ai_edge_litert`` comes from ``ai-edge-litert`` or from the nightly ``ai-edge-litert-nightly``), or
    "unknown"."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    try:  # the distribution named as the package: one directory lookup
        return version(package)
    except PackageNotFoundError:
        pass
    # packages_distributions reads every installed distribution's file list (0.16 s in this project's venv)
    for dist in packages_distributions().get(package, []):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def check_model_file(path: str) -> int:
    """The size in bytes of a TFLite flatbuffer at ``path``; ModelFileError when it is not one."""
    if not os.path.isfile(path):
        raise ModelFileError(f"model file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
        raise ModelFileError(f"{path} is not a TFLite model (no TFL3 flatbuffer identifier)")
    return os.path.getsize(path)


def make_interpreter(path: str, threads: int = 1, xnnpack: bool = True, runtime: Runtime | None = None):
    """An allocated interpreter for the model at ``path``.

    ``xnnpack=False`` uses the builtin kernels without the default XNNPACK delegate.
    A model needing ops the runtime lacks (e.g. Flex/Select TF ops) raises ValueError.
    """
    if threads < 1:
        raise ValueError(f"thread count must be >= 1 (got {threads})")
    check_model_file(path)
    runtime = runtime or load_runtime()
    kwargs = {"model_path": path, "num_threads": threads}
    if not xnnpack:
        resolver = runtime.module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES \
            if hasattr(runtime.module, "OpResolverType") else \
            runtime.module.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        kwargs["experimental_op_resolver_type"] = resolver
    try:
        with native_stderr(without_tflite_notes):
            interpreter = runtime.interpreter_class(**kwargs)
            interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as err:
        text = str(err)
        flex = sorted(set(re.findall(r"\b(Flex\w+)", text)))
        if flex or "Select TensorFlow op" in text:
            raise ValueError(f"{path} needs Flex (Select TF) ops that {runtime.name} cannot run: "
                             f"{', '.join(flex) or 'unknown'}; export it with TFLite builtin ops only") from None
        first = (text.strip().splitlines() or ["unknown error"])[0]
        raise ValueError(f"{runtime.name} cannot run {path}: {first}") from None
    return interpreter


def to_input(real: np.ndarray, detail: dict) -> np.ndarray:
    """Real-valued data as the input tensor's dtype, quantized when the tensor is quantized."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return real.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    if scale:
        real = np.round(real / scale + zero_point)
    return np.clip(np.round(real), info.min, info.max).astype(dtype)


def from_output(raw: np.ndarray, detail: dict) -> np.ndarray:
    """An output tensor as real values (dequantized when quantized and floating-point typed)."""
    scale, zero_point = detail["quantization"]
    if scale and raw.dtype in (np.int8, np.uint8, np.int16):
        return (raw.astype(np.float32) - zero_point) * scale
    return raw


def run(interpreter, real_input: np.ndarray) -> np.ndarray:
    """Runs one input through a single-input, single-output model and returns the real output."""
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], to_input(real_input, inp))
    interpreter.invoke()
    return from_output(interpreter.get_tensor(out["index"]), out)


def op_list(interpreter) -> list[dict]:
    """Every op of the primary subgraph: name and the dtypes of its inputs and outputs."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}

    def dtypes(indices):
        return [np.dtype(tensors[i]["dtype"]).name for i in indices if i >= 0 and i in tensors]

    # Interpreter._get_ops_details is private but the only way the Python runtimes (ai-edge-litert,
    # tflite-runtime, TensorFlow's) list a model's ops with their tensors; the flatbuffer schema would need
    # TensorFlow or LiteRT's schema module, which a board's tflite-runtime lacks.
    # tests/test_export.py::test_the_private_litert_apis_we_use_exist fails loudly if it goes.
    return [{"op": op["op_name"], "inputs": dtypes(op["inputs"]), "outputs": dtypes(op["outputs"])}
            for op in interpreter._get_ops_details()]
