"""social: the reference service built on cqrskit (users, posts, follows).

Layout: the folders are the layers, and imports point inward (api/cli -> infrastructure
-> application -> domain; a unit test keeps ``social.domain`` free of I/O).

``domain/``
    Plain Python, no I/O. Aggregates decide and record events: ``User`` (register, update
    profile), ``Post`` (create), ``Follow`` (one per follower/followee pair: following twice
    or unfollowing twice records nothing, following oneself is refused). Events are frozen
    dataclasses in the past tense (``UserRegistered``, ``UserProfileUpdated``,
    ``UserFollowed``, ``UserUnfollowed``, ``PostCreated``). ``values`` validates and
    normalizes input, ``passwords`` hashes with scrypt (``scrypt$n$r$p$salt$hash``). Errors
    live beside their aggregates under one root, ``SocialError``.
``application/``
    Commands (``RegisterUser``, ``UpdateProfile``, ``CreatePost``, ``FollowUser``,
    ``UnfollowUser``) and their handlers (load, call the domain, save), queries
    (``GetUser``, ``ListPosts``, ``ListFollowers``, ``ListFollowing``, ``Authenticate``)
    with their typed answers and opaque cursors, the projections' event logic (which rows
    each event changes, behind small row protocols), and bearer tokens (HMAC-SHA256).
``infrastructure/``
    The SQL: read-model tables and statements (``read_models``), the write model's
    ``users`` table kept inline in each append's transaction (``UNIQUE(email_lower)``
    makes registration unique case-insensitively; logins read it), the query handlers,
    Prometheus metrics, settings, the token secret, and ``bootstrap(settings)``: the only
    place objects are built (SQLite files in the data dir, or PostgreSQL from URLs).
``api/``
    FastAPI: ``create_app(settings)`` (its lifespan opens the container and runs the
    projections), thin routes, one table from error classes to HTTP statuses, the 64 KiB
    body limit and a catch-all that turns a bug into a logged JSON 500.
``cli.py``
    ``social serve | worker | rebuild [NAME] | status [--json]`` (typer + rich).

Read models, each a cqrskit projection whose checkpoint commits with its rows:
``user_profiles`` (profile, counters, the user stream's version), ``posts`` (per user,
keyset-paginated on the event's global position) and ``follows`` (both lists, with the
users' current display names).
"""
