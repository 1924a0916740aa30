"""The training server's side: building a package from a folder."""
