"""Supervised training of segmentation networks (teachers and baseline students)."""
