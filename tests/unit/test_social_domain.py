"""The social domain: validation, aggregates' decisions, password hashing, and no I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from cqrskit.testing import given
from social.domain import (
    KEEP,
    CannotFollowSelf,
    Follow,
    InvalidValue,
    NotAllowed,
    Post,
    PostCreated,
    ScryptParams,
    User,
    UserFollowed,
    UserProfileUpdated,
    UserRegistered,
    UserUnfollowed,
    hash_password,
    verify_password,
)
from social.domain.values import (
    email_key,
    normalize_email,
    validate_avatar_url,
    validate_content,
    validate_display_name,
    validate_password,
)

FAST = ScryptParams(n=2**10)
NOW = "2026-01-01T00:00:00Z"


# -- values ------------------------------------------------------------------------------------


def test_email_is_trimmed_and_its_domain_lower_cased() -> None:
    assert normalize_email("  Ann.Lee@Example.COM ") == "Ann.Lee@example.com"
    assert email_key(" Ann.Lee@Example.COM") == "ann.lee@example.com"


@pytest.mark.parametrize(
    "email",
    ["", "plain", "a@b", "a b@example.com", "a@@example.com", "@example.com", "\ud800@x.io"],
)
def test_malformed_emails_are_refused(email: str) -> None:
    with pytest.raises(InvalidValue) as info:
        normalize_email(email)
    assert info.value.field == "email"


def test_password_needs_eight_characters_and_the_error_never_repeats_it() -> None:
    validate_password("12345678")
    with pytest.raises(InvalidValue) as info:
        validate_password("seven77")
    assert "seven77" not in str(info.value)


def test_display_name_is_stripped_and_1_to_100_characters() -> None:
    assert validate_display_name("  Ann  ") == "Ann"
    assert validate_display_name("x" * 100) == "x" * 100
    for bad in ("", "   ", "x" * 101, "a\x00b"):
        with pytest.raises(InvalidValue):
            validate_display_name(bad)


def test_avatar_url_must_be_http_or_https_up_to_2048_characters() -> None:
    assert validate_avatar_url("https://img.example/a.png") == "https://img.example/a.png"
    long_ok = "http://e.io/" + "a" * (2048 - len("http://e.io/"))
    assert validate_avatar_url(long_ok) == long_ok
    for bad in ("ftp://e.io/a", "not a url", "https://", "javascript:alert(1)", long_ok + "a"):
        with pytest.raises(InvalidValue):
            validate_avatar_url(bad)


def test_content_is_1_to_5000_characters() -> None:
    assert validate_content("x" * 5000) == "x" * 5000
    for bad in ("", "  \n ", "x" * 5001):
        with pytest.raises(InvalidValue):
            validate_content(bad)


# -- passwords ---------------------------------------------------------------------------------


def test_password_hash_is_salted_scrypt_and_verifies() -> None:
    first = hash_password("correct horse", FAST)
    second = hash_password("correct horse", FAST)
    assert first.startswith("scrypt$1024$8$1$")
    assert first != second  # a random salt each time
    assert "correct horse" not in first
    assert verify_password("correct horse", first)
    assert not verify_password("correct horsE", first)


@pytest.mark.parametrize("encoded", ["", "bcrypt$x", "scrypt$a$b$c$d$e", "scrypt$1024$8$1$!!$!!"])
def test_verifying_against_a_malformed_hash_is_false(encoded: str) -> None:
    assert not verify_password("whatever1", encoded)


# -- user (given/when/then: cqrskit.testing) ---------------------------------------------------

REGISTERED = UserRegistered("u1", "ann@example.com", "h", "Ann", "https://a.io/x", NOW)


def test_register_records_one_event_with_normalized_values() -> None:
    user = (
        given(User)
        .when(lambda _: User.register("u1", " Ann@Example.com", "scrypt$h", " Ann ", None, NOW))
        .then(UserRegistered("u1", "Ann@example.com", "scrypt$h", "Ann", None, NOW))
    )
    assert user.version == 1


def test_register_refuses_invalid_fields() -> None:
    (
        given(User)
        .when(lambda _: User.register("u1", "ann@example.com", "h", "", None, NOW))
        .then_raises(InvalidValue, match="^display_name: ")
    )
    (
        given(User)
        .when(lambda _: User.register("u1", "ann@example.com", "h", None, "ftp://x.io", NOW))
        .then_raises(InvalidValue, match="^avatar_url: ")
    )


def test_profile_update_keeps_unnamed_fields_and_clears_null_ones() -> None:
    user = (
        given(User, REGISTERED, id="u1")
        .when(lambda u: u.update_profile("u1", "Annie", KEEP, NOW))
        .when(lambda u: u.update_profile("u1", KEEP, None, NOW))
        .then(
            UserProfileUpdated("u1", "Annie", "https://a.io/x", NOW),
            UserProfileUpdated("u1", "Annie", None, NOW),
        )
    )
    assert user.version == 3


def test_only_the_user_changes_their_profile() -> None:
    (
        given(User, REGISTERED, id="u1")
        .when(lambda u: u.update_profile("someone-else", "Mallory", KEEP, NOW))
        .then_raises(NotAllowed)  # and records nothing
    )


# -- follow and post ---------------------------------------------------------------------------

AB = Follow.pair_id("a", "b")


def test_following_twice_records_one_event_and_unfollowing_twice_one_more() -> None:
    (
        given(Follow, id=AB)
        .when(lambda f: f.follow("a", "b", NOW))
        .when(lambda f: f.follow("a", "b", NOW))
        .when(lambda f: f.unfollow("a", "b", NOW))
        .when(lambda f: f.unfollow("a", "b", NOW))
        .then(UserFollowed("a", "b", NOW), UserUnfollowed("a", "b", NOW))
    )


def test_following_again_or_unfollowing_again_records_nothing() -> None:
    followed = UserFollowed("a", "b", NOW)
    given(Follow, followed, id=AB).when(lambda f: f.follow("a", "b", NOW)).then_nothing()
    (
        given(Follow, followed, UserUnfollowed("a", "b", NOW), id=AB)
        .when(lambda f: f.unfollow("a", "b", NOW))
        .then_nothing()
    )


def test_unfollowing_someone_not_followed_records_nothing() -> None:
    given(Follow, id=AB).when(lambda f: f.unfollow("a", "b", NOW)).then_nothing()


def test_following_oneself_is_refused() -> None:
    (
        given(Follow, id=Follow.pair_id("a", "a"))
        .when(lambda f: f.follow("a", "a", NOW))
        .then_raises(CannotFollowSelf)  # and records nothing
    )


def test_post_records_its_content() -> None:
    (
        given(Post)
        .when(lambda _: Post.create("p1", "u1", "hello", NOW))
        .then(PostCreated("p1", "u1", "hello", NOW))
    )
    (
        given(Post)
        .when(lambda _: Post.create("p2", "u1", "", NOW))
        .then_raises(InvalidValue, match="^content: ")
    )


# -- no I/O ------------------------------------------------------------------------------------

FORBIDDEN = {
    "sqlite3",
    "psycopg",
    "psycopg_pool",
    "fastapi",
    "starlette",
    "httpx",
    "uvicorn",
    "socket",
    "asyncio",
    "os",
    "io",
    "subprocess",
    "requests",
    "urllib.request",
    "prometheus_client",
    "threading",
}
DOMAIN = Path(__file__).resolve().parents[2] / "services" / "social" / "src" / "social" / "domain"


def test_the_domain_imports_no_database_http_or_io_module() -> None:
    found: dict[str, set[str]] = {}
    for path in sorted(DOMAIN.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = {node.module}
            else:
                continue
            for name in names:
                if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN - {"urllib"}:
                    found.setdefault(path.name, set()).add(name)
                if name.startswith("cqrskit") and name not in (
                    "cqrskit.aggregate",
                    "cqrskit.messages",
                ):
                    found.setdefault(path.name, set()).add(name)
    assert found == {}


def test_importing_the_domain_loads_no_database_or_http_library() -> None:
    code = (
        "import sys, social.domain; "
        "print(sorted(m for m in ('sqlite3', 'psycopg', 'fastapi', 'starlette', 'httpx', "
        "'uvicorn', 'social.infrastructure', 'social.api') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
