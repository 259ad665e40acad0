"""The exception types the CLI turns into a single line on stderr."""


class LotteryError(Exception):
    """Bad input or a state the user can fix; the message is shown as is, without a traceback."""


class NotATicketError(LotteryError):
    """A repository or folder that holds a model but no hf-lottery ticket files."""
