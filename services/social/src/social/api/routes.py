"""The HTTP routes: parse, build a command or query, dispatch, answer (with X-Position)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Query as QueryParam
from fastapi.responses import JSONResponse, Response

from cqrskit import IdempotencyKey, Query, QueryResult, relay_reports
from cqrskit.fastapi import IdempotencyKeyHeader, respond, responses

from ..application import commands as c
from ..application import queries as q
from ..domain import KEEP
from ..infrastructure.bootstrap import SocialApp
from ..infrastructure.metrics import CONTENT_TYPE
from . import schemas as s
from .deps import Caller, CurrentUser, MinPosition, Services, UserId

__all__ = ["router"]

router = APIRouter()

_USER_ERRORS = {
    401: "No valid bearer token.",
    403: "Not allowed for this user.",
    404: "No such user.",
}
USER_WRITE = responses(write=True, extra=_USER_ERRORS)
USER_CREATE = responses(status=201, write=True, extra=_USER_ERRORS)
SIGN_UP = responses(status=201, write=True, extra={409: "The email is registered already."})
LOG_IN = responses(
    write=True,
    extra={401: "Wrong email or password.", 429: "Too many failed logins: see Retry-After."},
)
READ = responses(extra={404: "No such user."})

Limit = Annotated[int, QueryParam(ge=1, le=q.MAX_LIMIT)]
Before = Annotated[str | None, QueryParam()]


async def _read(
    container: SocialApp, min_position: int | None, query: Query[Any]
) -> QueryResult[Any]:
    """Ask, first waiting (bounded) for the query's read models to reach ``X-Min-Position``."""
    return await container.ask(query, min_position=min_position)


def _page(page: q.Page[Any]) -> dict[str, Any]:
    return {"items": page.items, "next": page.next}  # msgspec encodes the dataclasses


# -- users and sessions ------------------------------------------------------------------------


@router.post(
    "/users",
    status_code=201,
    response_model=s.UserVersionOut,
    tags=["users"],
    responses=SIGN_UP,
)
async def register(
    body: s.Registration, container: Services, key: IdempotencyKeyHeader
) -> Response:
    cmd = c.RegisterUser(body.email, body.password, body.display_name, body.avatar_url)
    result = await container.dispatch(cmd, idempotency=key)  # anonymous: the key's own scope
    return respond(result, {"id": result.value.id, "version": result.value.version}, 201)


@router.post("/sessions", response_model=s.SessionToken, tags=["users"], responses=LOG_IN)
async def login(body: s.SessionRequest, container: Services) -> Response:
    result = await container.ask(q.Authenticate(body.email, body.password))
    token = container.tokens.issue(result.value)
    return respond(result, {"token": token, "user_id": result.value})


@router.get("/users/{user_id}", response_model=s.UserOut, tags=["users"], responses=READ)
async def get_user(
    user_id: UserId, container: Services, caller: Caller, min_position: MinPosition
) -> Response:
    result = await _read(container, min_position, q.GetUser(user_id, caller))
    user: q.UserView = result.value
    body = {
        "id": user.id,
        "display_name": user.display_name,
        "avatar_url": user.avatar_url,
        "created_at": user.created_at,
        "post_count": user.post_count,
        "follower_count": user.follower_count,
        "following_count": user.following_count,
        "version": user.version,
    }
    if user.email is not None:
        body["email"] = user.email
    return respond(result, body)


@router.patch(
    "/users/{user_id}",
    response_model=s.UserVersionOut,
    tags=["users"],
    responses=USER_WRITE,
)
async def update_profile(
    user_id: UserId,
    body: s.ProfileChange,
    container: Services,
    me: CurrentUser,
    key: IdempotencyKeyHeader,
) -> Response:
    given = body.model_fields_set
    cmd = c.UpdateProfile(
        user_id=user_id,
        actor_id=me,
        version=body.version,
        display_name=body.display_name if "display_name" in given else KEEP,
        avatar_url=body.avatar_url if "avatar_url" in given else KEEP,
    )
    result = await container.dispatch(cmd, idempotency=_mine(key, me))
    return respond(result, {"id": result.value.id, "version": result.value.version})


@router.delete(
    "/users/me",
    response_model=s.DeletedOut,
    tags=["users"],
    responses=responses(
        write=True, extra={401: "No valid bearer token, or the password is wrong."}
    ),
)
async def forget_me(
    body: s.Forget, container: Services, me: CurrentUser, key: IdempotencyKeyHeader
) -> Response:
    """Forget the caller: their personal data becomes unreadable everywhere the service
    stored it (crypto-shredding: docs/personal-data.md), their tokens stop working, their
    email may register again."""
    result = await container.dispatch(c.ForgetUser(me, body.password), idempotency=_mine(key, me))
    return respond(result, {"deleted": result.value.deleted})


# -- posts ---------------------------------------------------------------------------------------


@router.post(
    "/posts",
    status_code=201,
    response_model=s.PostCreated,
    tags=["posts"],
    responses=USER_CREATE,
)
async def create_post(
    body: s.NewPost, container: Services, me: CurrentUser, key: IdempotencyKeyHeader
) -> Response:
    result = await container.dispatch(c.CreatePost(me, body.content), idempotency=_mine(key, me))
    return respond(result, {"id": result.value.id}, 201)


@router.get("/users/{user_id}/posts", response_model=s.PostPage, tags=["posts"], responses=READ)
async def list_posts(
    user_id: UserId,
    container: Services,
    min_position: MinPosition,
    limit: Limit = q.DEFAULT_LIMIT,
    before: Before = None,
) -> Response:
    query = q.ListPosts(user_id, limit, before)
    result = await _read(container, min_position, query)
    return respond(result, _page(result.value))


# -- follows -------------------------------------------------------------------------------------


@router.put(
    "/users/{user_id}/followers/me",
    response_model=s.Following,
    tags=["follows"],
    responses=USER_WRITE,
)
async def follow(
    user_id: UserId, container: Services, me: CurrentUser, key: IdempotencyKeyHeader
) -> Response:
    result = await container.dispatch(c.FollowUser(me, user_id), idempotency=_mine(key, me))
    return respond(result, {"following": result.value.following})


@router.delete(
    "/users/{user_id}/followers/me",
    response_model=s.Following,
    tags=["follows"],
    responses=USER_WRITE,
)
async def unfollow(
    user_id: UserId, container: Services, me: CurrentUser, key: IdempotencyKeyHeader
) -> Response:
    result = await container.dispatch(c.UnfollowUser(me, user_id), idempotency=_mine(key, me))
    return respond(result, {"following": result.value.following})


@router.get(
    "/users/{user_id}/followers",
    response_model=s.FollowPage,
    tags=["follows"],
    responses=READ,
)
async def list_followers(
    user_id: UserId,
    container: Services,
    min_position: MinPosition,
    limit: Limit = q.DEFAULT_LIMIT,
    before: Before = None,
) -> Response:
    query = q.ListFollowers(user_id, limit, before)
    result = await _read(container, min_position, query)
    return respond(result, _page(result.value))


@router.get(
    "/users/{user_id}/following",
    response_model=s.FollowPage,
    tags=["follows"],
    responses=READ,
)
async def list_following(
    user_id: UserId,
    container: Services,
    min_position: MinPosition,
    limit: Limit = q.DEFAULT_LIMIT,
    before: Before = None,
) -> Response:
    query = q.ListFollowing(user_id, limit, before)
    result = await _read(container, min_position, query)
    return respond(result, _page(result.value))


# -- operations ----------------------------------------------------------------------------------


@router.get("/health", tags=["operations"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/projections", response_model=list[s.ProjectionInfo], tags=["operations"])
async def projections(container: Services) -> Response:
    return JSONResponse([p.to_dict(s.STATUS_FIELDS) for p in await container.status()])


@router.get("/metrics", tags=["operations"], response_class=Response)
async def metrics(container: Services) -> Response:
    relays = await relay_reports(container.store, container.db)
    body = container.metrics.render(await container.status(), relays)
    return Response(body, media_type=CONTENT_TYPE)


def _mine(key: IdempotencyKey | None, user_id: str) -> IdempotencyKey | None:
    """The request's idempotency key, scoped to the authenticated caller (the contract:
    a key is the caller's, whichever of their tokens sent it)."""
    return None if key is None else key.for_caller(user_id)
