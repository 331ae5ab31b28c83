"""The data sets' one error type, apart so that reading images and parsing labels both raise it."""

from inspector.errors import InspectorError


class DatasetError(InspectorError):
    """A labelled data set is missing, malformed, or does not match the station's classes."""
