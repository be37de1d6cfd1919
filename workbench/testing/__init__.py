"""Test doubles and test-data builders for the workbench's tests, benchmarks and soak tests (never used in real runs).

``openai_double`` (an OpenAI-compatible server on 127.0.0.1), ``crashing_server``, ``samples``
(generated rows made of real Tatoeba/XQuAD text), ``tiny`` (tiny random Mistral models on disk).
"""
