"""The one base class for problems a user can fix (bad spec, file, option): exit code 2 in the CLI."""


class UserInputError(ValueError):
    """Bad input from the user: a spec, a file, a device or dtype name, an option value."""
