"""The Certificate Librarian: lodging, publishing, bulk files, search and the repository web service."""

from smki.librarian.librarian import Librarian, RunningRepository

__all__ = ["Librarian", "RunningRepository"]
