"""What gunicorn serves: `gunicorn wsgi:app`."""

from devlab import create_app

app = create_app()
