"""The measurement scripts behind every figure in the documentation, one module each, run from the repository
root as ``python -m benchmarks.<name>`` (``--help`` on each). A package rather than loose scripts, so that the
scripts and the tests import each other's helpers by name (``from benchmarks.ablation import host_cpu``)."""
