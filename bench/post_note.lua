-- wrk: POST /notes with a JSON body (the bearer token comes with -H).
wrk.method = "POST"
wrk.body = '{"text": "a note written by the benchmark"}'
wrk.headers["Content-Type"] = "application/json"
