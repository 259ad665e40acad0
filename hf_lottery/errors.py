"""The one exception type the CLI turns into a single line on stderr."""


class LotteryError(Exception):
    """Bad input or a state the user can fix; the message is shown as is, without a traceback."""
