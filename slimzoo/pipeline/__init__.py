"""The stages behind :mod:`slimzoo.api`, one module each, in the order data flows (see that module's docstring):
``workspace``, ``training``, ``platforms``, ``searching``, ``profiling``, ``evaluation``, ``exporting``,
``building``, ``gate``."""
