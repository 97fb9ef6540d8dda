"""Benchmarks, each run from the checkout as `python benchmarks/NAME.py` (see the README); the tests
import the counting helpers of some (`benchmarks.roofline`, `benchmarks.original_code`)."""
