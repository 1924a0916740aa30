"""Storing a judged package: the transaction of one import, the backends, the model store and
the ledger with the attempt's lifecycle. It uses ``reading`` and never ``running``.
"""
