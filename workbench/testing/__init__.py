"""Test doubles the workbench's tests, benchmarks and soak tests run against (never used in real runs)."""
