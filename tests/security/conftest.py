"""Fixtures of the security tests: a throwaway PKI made once per session (see security_helpers)."""

from __future__ import annotations

import pytest
from security_helpers import OPENSSL, Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if OPENSSL is None:
        pytest.skip("the openssl command line tool is not installed")
    return make_pki(tmp_path_factory.mktemp("pki"))
