"""`run_pipeline`: reading, the model and writing at the same time, through bounded queues."""
import queue
import threading
from typing import Callable, Dict, Iterable, NamedTuple, Optional


END = object()


def offer(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Puts `item` in `q`, waiting while it is full, unless `stop` is set first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False


class _Failure(NamedTuple):
    error: BaseException


class ReaderThread:
    """Iterates `source` on a thread, at most `queue_size` items ahead of the consumer. Iterating the
    ReaderThread gives the items, and raises an error of the source where it happened."""

    def __init__(self, source: Iterable, queue_size: int):
        self._source, self._queue, self._stop = source, queue.Queue(queue_size), threading.Event()
        self._thread = threading.Thread(target=self._run, name='reader', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._source:
                if not offer(self._queue, item, self._stop):
                    return
        except BaseException as error:
            offer(self._queue, _Failure(error), self._stop)
            return
        offer(self._queue, END, self._stop)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class WorkerThread:
    """Calls `work(item)` on a thread for every item `put`, in order, with at most `queue_size` waiting.

    An error in `work` is raised by the next `put` or by `close`; items after it are dropped unseen,
    so that `put` never blocks forever.
    """

    def __init__(self, work: Callable, queue_size: int, name: str = 'writer'):
        self._work, self._queue = work, queue.Queue(queue_size)
        self.error: Optional[BaseException] = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is END:
                return
            if self.error is None and not self._cancelled:
                try:
                    self._work(item)
                except BaseException as error:
                    self.error = error

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def close(self) -> None:
        """Waits until every item is done; raises the error of `work` if there was one."""
        self._queue.put(END)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Drops the items still waiting and returns once the thread has ended."""
        self._cancelled = True
        self._queue.put(END)
        self._thread.join()


def run_pipeline(source: Iterable, compute: Callable[[object], Dict[str, object]],
                 sinks: Dict[str, Callable[[object], None]], queue_size: int = 4) -> None:
    """Reads, computes and writes at the same time, so the model is not idle during input and output.

    A reader thread iterates `source`; the calling thread runs `compute(item)` (the model), which
    returns {sink name: result}; each sink runs on its own writer thread. Bounded queues of
    `queue_size` between the stages keep memory flat. The first error of any stage stops the others
    and is raised here, once every thread has ended, so the caller can then remove unfinished files.
    """
    assert queue_size >= 1
    reader = ReaderThread(source, queue_size)
    writers = {name: WorkerThread(sink, queue_size, name=f'writer-{name}') for name, sink in sinks.items()}
    try:
        for item in reader:
            for name, result in compute(item).items():
                writers[name].put(result)
    except BaseException:
        reader.close()
        for writer in writers.values():
            writer.cancel()
        raise
    reader.close()
    errors = []
    for writer in writers.values():  # every writer finishes before an error is raised
        try:
            writer.close()
        except BaseException as error:
            errors.append(error)
    if errors:
        raise errors[0]
