"""The base of errors the user can fix (a params key, a labels file, a missing weight file, ...).

The ``fundus`` command prints them as one line and exits with status 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """Something in the user's input or files is wrong; the message says what and where."""
