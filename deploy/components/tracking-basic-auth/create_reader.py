"""Creates (or updates) the tracking server account the model server signs in with.

Run by the mlflow-create-reader Job: as the admin (MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD), make the user READER_USERNAME with READER_PASSWORD on
the server MLFLOW_TRACKING_URI. Idempotent: an existing user gets the password
again, so rotating the Secret and re-running the Job is how the password changes.
The Job retries until the tracking server answers.
"""

import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient


def main() -> int:
    uri = os.environ["MLFLOW_TRACKING_URI"]
    username, password = os.environ["READER_USERNAME"], os.environ["READER_PASSWORD"]
    if not username or not password:
        print("READER_USERNAME and READER_PASSWORD must not be empty", file=sys.stderr)
        return 2
    client = AuthServiceClient(uri)
    try:
        client.create_user(username, password)
        print(f"created user {username!r} on {uri}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_user_password(username, password)
        print(f"user {username!r} exists on {uri}; password set again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
