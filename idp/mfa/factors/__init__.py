"""One module per second factor behind one interface (base.py), found by kind through the
registry (registry.py). The built-in modules register themselves when imported (idp.mfa.install)."""
