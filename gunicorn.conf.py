"""gunicorn settings; PORT, HOST and WEB_CONCURRENCY come from the environment."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8005')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = 30
# Access log: method, path, status, size, time. No query strings, headers or bodies,
# so a token or password can never end up in a log line.
accesslog = "-"
access_log_format = '%(p)s %(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
