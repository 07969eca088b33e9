from idp.web.access_log import redact


def test_one_time_links_are_redacted_in_access_logs():
    assert redact("/password/reset/abcDEF_123-xyz") == "/password/reset/[redacted]"
    assert redact("/account/email/verify/tok") == "/account/email/verify/[redacted]"
    assert redact("/authorize") == "/authorize"
