"""Preemption notices (SIGTERM) turned into a save-and-stop request the training loops check."""
import signal


class Preemption:
    """The first SIGTERM (preemption notice) asks the loop to save and stop after the current
    step; a second one terminates at once (the default action), so a stuck run stays killable."""

    def __init__(self):
        self.requested = False
        try:
            signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            pass

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
