"""Errors caused by input the user can fix: entry points print them plainly, with no stack trace."""


class UserInputError(Exception):
    """Base of every error whose message tells the user what to change."""


USER_ERRORS = (UserInputError,)
