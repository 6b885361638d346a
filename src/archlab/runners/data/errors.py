"""The error of every data source: data that cannot be read or does not fit the spec."""

from archlab.errors import UserInputError


class DataError(UserInputError):
    """Data that cannot be read, or that does not fit the spec; the message says how to fix it."""
