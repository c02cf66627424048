"""google-genai's and google-auth's exceptions sorted for the runner: what ends a run and what is tried again."""

from __future__ import annotations

import pytest
from google.auth import exceptions as auth

from batchflow.backends.sdk import api_errors
from batchflow.errors import BackendError, TransientError


def test_no_credentials_is_a_one_line_backend_error_naming_the_call() -> None:
    with pytest.raises(BackendError, match=r"models.get m: no usable credentials .*DefaultCredentialsError"), \
            api_errors("models.get m"):
        raise auth.DefaultCredentialsError("Your default credentials were not found.")


@pytest.mark.parametrize("error", [auth.TransportError("metadata server unreachable"),
                                   auth.RefreshError("try again", retryable=True)])
def test_a_credential_refresh_that_may_pass_is_transient(error: Exception) -> None:
    with pytest.raises(TransientError) as raised, api_errors("get batches/x"):
        raise error
    assert not isinstance(raised.value, BackendError)
