"""gunicorn's threaded worker, closing connections without stalling its event loop.

gunicorn 27's gthread worker ends every connection it does not keep alive (all of them here:
`keepalive = 0`) with `util.close_graceful`: it sends its FIN, then *waits* on the socket, up
to 2 seconds, for the client's own FIN, so that request bytes it never read cannot make the
kernel answer with a reset that truncates the response (RFC 9112, section 9.6). It waits on the
worker's event loop, the one thread that accepts connections and hands finished requests
back. While it waits, the worker accepts nothing and finishes nothing: a client that reads its
answer and keeps its socket open stalled the worker 2 seconds per connection (20 such
connections held /health at 2 s for 40 s), and under load every close costs the loop a round
trip to the client.

This worker does what nginx calls a lingering close, without blocking: the FIN is sent, the
socket goes on the event loop's poller, whatever the client still sends is read and thrown
away as it arrives, and the socket is closed at the client's FIN, after LINGER_BYTES, or after
LINGER_SECONDS, whichever comes first. At most LINGERING_MAX sockets linger at once; past
that a socket is closed at once, as gunicorn would after its timeout. Everything else is
gunicorn's worker as it is. No library offers this for gunicorn; the override is one method
of the connection and the worker's per-loop housekeeping.
"""

import contextlib
import selectors
import socket
import time
from functools import partial

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

LINGER_SECONDS = 2.0  # gunicorn's own bound on close_graceful
LINGER_BYTES = 65536  # and on what it drains
LINGERING_MAX = 1000


class ThreadWorker(GunicornThreadWorker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # socket -> [deadline, bytes drained]; in insertion order, so the oldest first
        self.lingering: dict[socket.socket, list] = {}

    def finish_request(self, conn, fs) -> None:
        # gunicorn's finish_request closes the connection with conn.close(graceful=True)
        # when it is not kept alive; that call now lingers on the poller instead.
        conn.close = partial(self.close_connection, conn)
        super().finish_request(conn, fs)

    def close_connection(self, conn, graceful: bool = False) -> None:
        sock = conn.sock
        if not graceful or len(self.lingering) >= LINGERING_MAX:
            util.close(sock)
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self.drain)
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self.lingering[sock] = [time.monotonic() + LINGER_SECONDS, 0]

    def drain(self, sock: socket.socket) -> None:
        """The poller's callback for a lingering socket that became readable."""
        try:
            data = sock.recv(LINGER_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        state = self.lingering.get(sock)
        if state is None:
            return
        state[1] += len(data)
        if not data or state[1] >= LINGER_BYTES:
            self.stop_lingering(sock)

    def stop_lingering(self, sock: socket.socket) -> None:
        self.lingering.pop(sock, None)
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(sock)
        util.close(sock)

    def murder_pending(self) -> None:
        """gunicorn's housekeeping of each loop (at least once a second), and the lingering
        sockets whose time is up."""
        super().murder_pending()
        now = time.monotonic()
        for sock, (deadline, _drained) in list(self.lingering.items()):
            if deadline > now:
                break
            self.stop_lingering(sock)
