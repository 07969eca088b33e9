"""Generated client ids: a CI run once failed because a random id began with '-' and the native
app's argparse read `--client-id -...` as a missing value."""

import argparse
import re

from idp.oidc.clients import new_client_id


def test_generated_client_ids_never_start_with_a_dash_or_underscore() -> None:
    ids = [new_client_id() for _ in range(5000)]  # a leading '-' or '_' is 1 in 32 per draw
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{21}", cid) for cid in ids)
    assert len(set(ids)) == len(ids)
    assert any("-" in cid or "_" in cid for cid in ids)  # still the URL-safe alphabet inside


def test_a_generated_id_parses_as_an_option_value() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client-id")
    for _ in range(500):
        cid = new_client_id()
        assert parser.parse_args(["--client-id", cid]).client_id == cid
