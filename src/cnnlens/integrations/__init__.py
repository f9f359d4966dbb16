"""Bridges to other tools, each in its own module and importing its tool lazily (the core never imports them).

* :mod:`cnnlens.integrations.quantus`: ``explain`` as a Quantus ``explain_func`` (``pip install "cnnlens[quantus]"``).
"""
