"""Problems an operator can fix (credentials, schema, addresses, settings): the CLI prints them as
one clear line and exits 1, without a traceback."""


class OperatorError(Exception):
    pass
