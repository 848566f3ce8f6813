"""Scheduled jobs that run once per service across every replica and host, coordinated through MongoDB.

- ``schedule``: the interval/cron specs a client may set, the stored job document, fire times;
- ``runs``: run records and manual-run requests (``job_runs``), the RunContext a job function receives;
- ``runner``: the leader loop (lease with fencing, dead-leader recovery, fires, manual runs) and the
  scheduler process's entry point;
- mlstack_core.gunicorn_scheduler: the Gunicorn master hooks that run that process beside the workers;
- ``service``: what the routes call (request workers only read and write MongoDB).
The lease itself is mlstack_core.locks.MongoLease.
"""

from mlstack_core.jobs.runs import RunContext, is_run_id, public_record
from mlstack_core.jobs.schedule import CronSpec, IntervalSpec, parse_schedule, spec_from_doc
from mlstack_core.jobs.service import JobDefinition, JobService
from mlstack_core.locks import LeaderElector

__all__ = [
    "CronSpec",
    "IntervalSpec",
    "JobDefinition",
    "JobService",
    "LeaderElector",
    "RunContext",
    "is_run_id",
    "parse_schedule",
    "public_record",
    "spec_from_doc",
]
