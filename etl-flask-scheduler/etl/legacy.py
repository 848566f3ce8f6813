"""The original template's ETL endpoints, kept for its clients (deprecated in /openapi.json).

Its job aliases (``/getEtlJob/``, ``/modifyEtlJob/``, ``/pauseEtlJob/``, ``/resumeEtlJob/``,
``/manualEtl/``) answer as the new ``/jobs/etl`` routes do; new routes live in etl.routes.
"""

from __future__ import annotations

from mlstack_core.job_routes import make_legacy_job_blueprint

bp = make_legacy_job_blueprint("Etl")
