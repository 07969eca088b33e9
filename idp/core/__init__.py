"""The lowest layer: modules here import nothing from the rest of idp."""
