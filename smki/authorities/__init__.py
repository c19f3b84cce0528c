"""The authorities: Root and Issuing Authorities and the Certificate Librarian, orchestrating the layers below."""
