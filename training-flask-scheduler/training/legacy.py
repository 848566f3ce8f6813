"""The original template's training endpoints, kept for its clients (deprecated in /openapi.json).

Its job aliases (``/getTrainingJob/``, ``/modifyTrainingJob/``, ``/pauseTrainingJob/``, ``/resumeTrainingJob/``,
``/manualTraining/``) answer as the new ``/jobs/training`` routes do; new routes live in training.routes.
"""

from __future__ import annotations

from mlstack_core.job_routes import make_legacy_job_blueprint

bp = make_legacy_job_blueprint("Training")
