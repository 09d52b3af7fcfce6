"""Plain Locust, for comparison: FastHttpUser users posting the same one-row
body, with a constant think time (PLAIN_THINK_S, default 1 s), and nothing else.

    locust -f benchmarks/plain_locustfile.py --headless --host http://127.0.0.1:8000 -u 64 -r 64
"""

import os

from locust import FastHttpUser, constant, task

BODY = b'{"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}'
HEADERS = {"Content-Type": "application/json"}


class PlainUser(FastHttpUser):
    wait_time = constant(float(os.environ.get("PLAIN_THINK_S", "1")))

    @task
    def score(self) -> None:
        self.client.post("/invocations", data=BODY, headers=HEADERS)
