"""The one-command demo: train, distil, export, benchmark and report on the synthetic dataset."""
