"""Test and dev-stack harness: real FerretDB, S3, MLflow, Gunicorn and Nginx processes on loopback ports.

Used by the test suite (``-p devstack.pytest_plugin``) and by ``python -m devstack up``
(both with ``scripts`` on PYTHONPATH).
"""

from devstack.ports import free_port
from devstack.procs import ManagedProcess, ProcessError
from devstack.servers import FerretDB, GunicornApp, MlflowServer, Nginx, S3Server
from devstack.stack import NativeStack

__all__ = [
    "FerretDB",
    "GunicornApp",
    "ManagedProcess",
    "MlflowServer",
    "NativeStack",
    "Nginx",
    "ProcessError",
    "S3Server",
    "free_port",
]
