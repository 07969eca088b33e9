"""Second factors. factors/: one module per factor (totp, otp_code for SMS and email, webauthn,
recovery) behind the interface in factors/base.py, found through factors/registry.py; flow.py
runs the second step and its purposes (login, step-up, and those features register);
enrollment.py adds a factor; the *_views modules put routes on blueprint.py's blueprint and
install.py registers it all on an app."""
