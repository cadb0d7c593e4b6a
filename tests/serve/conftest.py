import pytest

from clinalign.accounts import create_user


@pytest.fixture
def clinician(store):
    with store.session() as session:
        user = create_user(session, "dr.review", "clinician", None, "test")
        session.flush()
        session.expunge(user)
    return user
