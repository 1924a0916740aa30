"""ymir-dropbox: a watch folder that imports YMIR model packages exactly once."""

__version__ = "0.1.0"
