"""The Post aggregate: a user's text, written once."""

from __future__ import annotations

from cqrskit.aggregate import Aggregate
from cqrskit.messages import Event

from .events import PostCreated
from .values import validate_content

__all__ = ["Post"]


class Post(Aggregate):
    stream_prefix = "post"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.user_id = ""
        self.content = ""

    @classmethod
    def create(cls, id: str, user_id: str, content: str, now: str) -> Post:
        post = cls(id)
        post.record(
            PostCreated(id=id, user_id=user_id, content=validate_content(content), created_at=now)
        )
        return post

    def apply(self, event: Event) -> None:
        match event:
            case PostCreated():
                self.user_id = event.user_id
                self.content = event.content
            case _:
                super().apply(event)
