-- wrk: POST /login as the benchmark's user (bench/run.py seeds it with this password).
wrk.method = "POST"
wrk.body = '{"username": "user1", "password": "bench password, not a secret"}'
wrk.headers["Content-Type"] = "application/json"
