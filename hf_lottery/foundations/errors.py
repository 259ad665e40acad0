"""The exception types the CLI turns into a single line on stderr."""


class LotteryError(Exception):
    """Bad input or a state the user can fix; the message is shown as is, without a traceback."""


class NotATicketError(LotteryError):
    """A repository or folder that holds a model but no hf-lottery ticket files."""


class NoTicketError(LotteryError):
    """``--level best`` in a run where no pruned level is within tolerance of dense: ``reason`` says so, ``level`` is
    the ``--level`` value that ships the best-scoring pruned level anyway (``"0"``, the dense model, when the run
    pruned nothing)."""

    def __init__(self, reason: str, level: str) -> None:
        super().__init__(f"{reason}; `--level {level}` ships it anyway")
        self.reason, self.level = reason, level


class DamagedFileError(LotteryError):
    """A file that cannot be read as what it should be (cut short by a kill or a full disk, or edited): the line names
    it, why, and ``hint``, what to do about it."""

    def __init__(self, path: object, reason: str, hint: str = "restore it, or remove it") -> None:
        super().__init__(f"{path} is damaged ({reason}): {hint}")
        self.path, self.reason = path, reason


class Terminated(LotteryError):
    """The run stopped on SIGTERM (``hf_lottery.training.stopping``); the message says where, and whether the level's
    checkpoint was saved. The command line exits 143, as a process killed by SIGTERM does."""
