"""Generate stage: two-step prompting for the six task families over any OpenAI-compatible endpoint.

Public entry point: :func:`workbench.generate.engine.run_generate`. Modules: ``prompts`` (templates,
output schemas, JSON extraction), ``client`` (async client with retries), ``cache`` (SQLite request
cache), ``batch`` (OpenAI Batch API mode), ``local`` (the embedded SmolLM2 server).
"""
