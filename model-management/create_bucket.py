"""Create the MLflow artifact bucket if it does not exist yet (safe to run at every start).

Environment: MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (required), MLFLOW_BUCKET
(default "mlflow"), AWS_DEFAULT_REGION (default us-east-1), CREATE_BUCKET_TIMEOUT_SECONDS (default 60: how long
to wait for the S3 server to come up).
"""

from __future__ import annotations

import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from oneshot import job_logger, missing, retry_until

REQUIRED = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def ensure_bucket(client, bucket: str, region: str) -> bool:
    """Create the bucket unless it exists; True when it was created now."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        client.create_bucket(Bucket=bucket, **kwargs)
    except ClientError as exc:
        # Another starter (a second replica, a re-run) created it between our two calls.
        if exc.response.get("Error", {}).get("Code") in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            return False
        raise
    return True


def main() -> int:
    """Wait (bounded) for the S3 server, then make sure the bucket exists; exit code 0 when it does."""
    logger = job_logger("create_bucket")
    if absent := missing(REQUIRED):
        logger.error("missing environment variables: %s", ", ".join(absent))
        return 2
    bucket = os.environ.get("MLFLOW_BUCKET", "mlflow")
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client(
        "s3",
        endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"],
        region_name=region,
        # Bounded calls: a dead endpoint costs seconds per attempt, and the loop below has a deadline.
        config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 1}),
    )
    try:
        created = retry_until(
            lambda: ensure_bucket(client, bucket, region), what="S3", retry_on=(BotoCoreError, ClientError),
            timeout=float(os.environ.get("CREATE_BUCKET_TIMEOUT_SECONDS", "60")), logger=logger,
        )
    except (BotoCoreError, ClientError) as exc:
        logger.error("bucket %r not available at %s: %s", bucket, os.environ["MLFLOW_S3_ENDPOINT_URL"], exc)
        return 1
    logger.info("bucket %r %s", bucket, "created" if created else "already exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
