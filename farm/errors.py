"""The one error type users see: what is wrong, where, and how to fix it, on one line."""
from __future__ import annotations


class FarmError(Exception):
    """A problem with the user's input or configuration.

    subject: the thing at fault (a file path, a shot id, a config key);
    problem: what is wrong with it; fix: what the user can do. The CLI prints str(error) as one
    line and exits with status 2; it never shows a traceback for a FarmError.
    """

    def __init__(self, subject: str, problem: str, fix: str = "") -> None:
        self.subject = str(subject)
        self.problem = problem
        self.fix = fix
        super().__init__(str(self))

    def __reduce__(self):
        # Errors cross process boundaries (Ray workers); rebuild them from their three parts.
        return (self.__class__, (self.subject, self.problem, self.fix))

    def __str__(self) -> str:
        text = f"{self.subject}: {self.problem}"
        return f"{text} — {self.fix}" if self.fix else text

    def for_shot(self, shot_id: str) -> FarmError:
        """The same error, prefixed with the shot it belongs to."""
        if self.subject.startswith(f"shot {shot_id}"):
            return self
        return FarmError(f"shot {shot_id}: {self.subject}", self.problem, self.fix)


class MediaError(FarmError):
    """An input file that cannot be read as the media it should be."""
