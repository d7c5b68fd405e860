"""gunicorn settings; PORT, HOST and WEB_CONCURRENCY come from the environment or `.env`."""

import os

from dotenv import load_dotenv

load_dotenv()

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8005')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = 30
# gunicorn 27's control socket sits in $HOME and would be shared by every instance; unused here.
control_socket_disable = True
# Access log: worker pid, client, method, path, status, size, time. No query strings, headers
# or bodies, so a token or password never reaches a log line.
accesslog = "-"
access_log_format = '%(p)s %(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
