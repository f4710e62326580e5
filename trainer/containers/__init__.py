"""Container images: the Python base built from Debian's mirror."""
