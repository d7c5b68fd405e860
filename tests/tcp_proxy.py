"""A loopback TCP proxy to PostgreSQL that a test can cut, black-hole and restore.

The app under test connects through it, so the database can vanish and come back under a
running app as it would in production, without stopping the PostgreSQL the suite shares.
"""

import contextlib
import select
import socket
import threading

POLL_SECONDS = 0.05
JOIN_SECONDS = 5


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `target`. Modes: forwarding, cut, black hole, answers lost.

    - `cut()` closes every live connection and stops listening: new connections are refused
      (the port stays bound to a socket that does not listen, so nothing else can take it).
    - `black_hole()` keeps accepting TCP but forwards nothing, on new connections and on the
      ones already open: what a hung server or a proxy with a dead upstream looks like.
    - `lose_answers()` still delivers what clients send but none of the server's answers: a
      statement sent after it runs, and its client never hears so.
    - `restore()` drops whatever the outage left open and forwards new connections again.

    A mode applies to bytes sent after the call returns, never to fewer or more.
    """

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._lock = threading.Lock()
        self._mode = "forwarding"
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = self._bind(0)
        self.port = self._listener.getsockname()[1]
        self._listener.listen(64)
        self._spawn(self._accept_loop)

    # --- what tests call ---

    def cut(self) -> None:
        with self._lock:
            self._mode = "cut"
            self._drop_connections()
            # A bound socket that does not listen answers every SYN with a reset.
            old, self._listener = self._listener, self._bind(self.port)
            old.close()

    def black_hole(self) -> None:
        with self._lock:
            self._mode = "black hole"

    def lose_answers(self) -> None:
        with self._lock:
            self._mode = "answers lost"

    def restore(self) -> None:
        with self._lock:
            self._drop_connections()
            if self._mode == "cut":
                self._listener.listen(64)
            self._mode = "forwarding"

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            self._drop_connections()
            self._listener.close()
        for thread in self._threads:
            thread.join(JOIN_SECONDS)

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- the machinery ---

    @staticmethod
    def _bind(port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Lets the stand-in bind the port before the listener lets go of it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        listener.setblocking(False)
        return listener

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _drop_connections(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pump, which closes it
        self._sockets.clear()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                listener, mode = self._listener, self._mode
            try:
                client, _ = listener.accept()
            except (BlockingIOError, OSError):
                self._stopping.wait(POLL_SECONDS)
                continue
            client.setblocking(True)
            if mode != "forwarding":
                with self._lock:
                    self._sockets.add(client)  # held open, never read, closed on restore
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=JOIN_SECONDS)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            self._spawn(self._pump, client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        try:
            while not self._stopping.is_set():
                readable = self._readable(client, upstream)
                if not readable:
                    self._stopping.wait(POLL_SECONDS)  # read nothing, answer nothing
                    continue
                ready, _, _ = select.select(readable, [], [], POLL_SECONDS)
                for sock in ready:
                    if sock not in self._readable(client, upstream):
                        continue  # the mode changed during select(): leave the bytes unread
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._sockets.difference_update(peer)
            for sock in peer:
                sock.close()

    def _readable(self, client: socket.socket, upstream: socket.socket) -> list[socket.socket]:
        return {
            "forwarding": [client, upstream],
            "answers lost": [client],
        }.get(self._mode, [])
