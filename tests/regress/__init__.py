"""Regression tests of issue #12: one module per finding, named after it."""
