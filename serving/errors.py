"""The root of every error a user can cause (a bad setting, bundle, bucket or path).

Each command line catches ``UserError`` in one place (``serving.cli.OneLineErrors``)
and prints its message as one line; anything else is a bug and keeps its traceback.
The HTTP side answers such errors with a 4xx JSON body instead.
"""


class UserError(Exception):
    """An error the user can fix; its message is one line that says what to do or what is wrong."""
