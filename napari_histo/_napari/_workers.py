"""Run core generators off the GUI thread, with cancellation and error notifications.

Every long operation in the widgets is a core generator that yields progress events. This module
wraps it in napari's :func:`~napari.qt.threading.create_worker` (or runs it synchronously when the
environment variable ``NAPARI_HISTO_NOTHREADS=1`` is set, for tests and debugging) and gives the
panels one handle, :class:`Job`, with ``cancel()``.

Cancellation is cooperative: the wrapper checks the job's flag after each yield and then closes the
core generator *in the thread that runs it*, so its ``finally``/atomic-write clean-up runs before
the job reports :data:`CANCELLED`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

# Lazy imports: napari, qtpy are imported inside the functions that use them (directly or through
# the modules named there): napari-histo --help and napari's plugin discovery import this module.

#: Returned (through ``on_return``) when a job was cancelled before it finished.
CANCELLED = object()


def threads_disabled() -> bool:
    """True when ``NAPARI_HISTO_NOTHREADS`` asks for synchronous execution."""
    return os.environ.get("NAPARI_HISTO_NOTHREADS", "0").strip().lower() in ("1", "true", "yes")


def notify_error(exc: BaseException, context: str = "") -> None:
    """Show ``exc`` as a napari notification (never a traceback dialog that stops the viewer)."""
    from napari.utils.notifications import show_error

    message = f"{context}: {exc}" if context else str(exc)
    show_error(message)


def notify_info(message: str) -> None:
    """Show a short informational notification."""
    from napari.utils.notifications import show_info

    show_info(message)


class Job:
    """A running core generator: progress callbacks, ``cancel()``, completion state.

    Parameters
    ----------
    gen_fn
        Function returning a generator (called inside the worker thread).
    on_yield, on_return, on_error, on_finish
        Callbacks, always invoked on the GUI thread. ``on_return`` receives the generator's
        return value, or :data:`CANCELLED`. ``on_error`` defaults to :func:`notify_error`.
    """

    def __init__(
        self,
        gen_fn: Callable[..., Iterator[Any]],
        *args: Any,
        on_yield: Callable[[Any], None] | None = None,
        on_return: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_finish: Callable[[], None] | None = None,
        context: str = "",
        **kwargs: Any,
    ) -> None:
        self._gen_fn = gen_fn
        self._args = args
        self._kwargs = kwargs
        self._cancel = threading.Event()
        self.on_yield = on_yield
        self.on_return = on_return
        self.on_error = on_error or (lambda exc: notify_error(exc, context))
        self.on_finish = on_finish
        self.worker: Any = None
        self.running = False
        self.cancelled = False
        self.error: BaseException | None = None
        self.result: Any = None

    # -- the generator actually run (in the worker thread when threaded) -------------------
    def _run_gen(self) -> Generator[Any, None, Any]:
        # ``yield from`` keeps the inner generator's return value; cancellation checked per yield
        inner = self._gen_fn(*self._args, **self._kwargs)
        try:
            if self._cancel.is_set():
                return CANCELLED
            while True:
                try:
                    event = next(inner)
                except StopIteration as stop:
                    return stop.value
                yield event
                if self._cancel.is_set():
                    return CANCELLED
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()

    # -- callbacks ---------------------------------------------------------------------------
    def _yielded(self, event: Any) -> None:
        if self.on_yield is not None and not self.cancelled:
            try:
                self.on_yield(event)
            except Exception as exc:  # a display bug must not kill the run silently
                self.cancel()
                self._errored(exc)

    def _returned(self, value: Any) -> None:
        self.result = value
        if value is CANCELLED:
            self.cancelled = True
        if self.on_return is not None:
            try:
                self.on_return(value)
            except Exception as exc:
                self._errored(exc)

    def _errored(self, exc: BaseException) -> None:
        self.error = exc
        self.on_error(exc)

    def _finished(self) -> None:
        self.running = False
        if self.on_finish is not None:
            self.on_finish()

    # -- public ------------------------------------------------------------------------------
    def start(self) -> Job:
        """Start the job (synchronously when threads are disabled)."""
        self.running = True
        if threads_disabled():
            self._run_sync()
            return self
        from napari.qt.threading import create_worker

        # passing ``errored`` through _connect stops superqt re-raising errors in the GUI thread
        self.worker = create_worker(
            self._run_gen,
            _connect={
                "yielded": self._yielded,
                "returned": self._returned,
                "errored": self._errored,
                "finished": self._finished,
            },
            _start_thread=False,
        )
        self.worker.start()
        return self

    def _run_sync(self) -> None:
        gen = self._run_gen()
        try:
            while True:
                try:
                    event = next(gen)
                except StopIteration as stop:
                    self._returned(stop.value)
                    break
                self._yielded(event)
                _process_events()
        except Exception as exc:
            self._errored(exc)
        finally:
            gen.close()
            self._finished()

    def cancel(self) -> None:
        """Ask the job to stop at its next progress event (the core generator is closed)."""
        self._cancel.set()
        self.cancelled = True

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()


def _process_events() -> None:
    """Let Qt repaint between synchronous progress events (keeps the viewer responsive)."""
    try:
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            app.processEvents()
    except Exception:  # pragma: no cover - no Qt at all
        pass


def run_job(gen_fn: Callable[..., Iterator[Any]], *args: Any, **kwargs: Any) -> Job:
    """Create and start a :class:`Job` (see its parameters)."""
    return Job(gen_fn, *args, **kwargs).start()


def _call_once(fn: Callable[..., Any], *args: Any) -> Generator[Any, None, Any]:
    yield "started"
    return fn(*args)


def call_in_thread(fn: Callable[..., Any], *args: Any, on_return: Callable[[Any], None], context: str = "",
                   on_finish: Callable[[], None] | None = None) -> Job:
    """Run a plain function as a :class:`Job` (off the GUI thread); errors become notifications."""
    return run_job(_call_once, fn, *args, on_return=on_return, on_finish=on_finish, context=context)


def call_guarded(fn: Callable[..., Any], *args: Any, context: str = "", **kwargs: Any) -> Any:
    """Call ``fn``; on error show a notification and return None instead of raising."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        notify_error(exc, context)
        return None
