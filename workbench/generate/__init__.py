"""Generate stage: two-step prompting for the six task families over any OpenAI-compatible endpoint.

Public entry points: :mod:`workbench.generate.stage` (``run_generate``, ``collect``; the body
``generate`` the runner calls). Modules: ``engine`` (the request engine and the tables it writes), ``prompts``
(templates, output schemas, JSON extraction), ``budget`` (max_tokens per request), ``pricing``,
``client`` (async client with retries), ``cache`` (SQLite request cache), ``batch`` (OpenAI Batch
API submission and ingestion), ``local`` (the embedded SmolLM2 server).
"""
