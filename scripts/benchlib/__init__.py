"""Figures for ``scripts/bench`` (one module per group of figures; see BENCHMARKS.md)."""
