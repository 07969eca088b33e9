"""Security alerts and where sign-ins come from: the layer beside accounts and sessions."""
