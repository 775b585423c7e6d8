"""The Follow aggregate: one per (follower, followee) pair, so each pair's history is a
stream and concurrent follow/unfollow of the same pair meet on its version."""

from __future__ import annotations

from cqrskit.aggregate import Aggregate
from cqrskit.messages import Event

from .errors import SocialError
from .events import UserFollowed, UserUnfollowed

__all__ = ["CannotFollowSelf", "Follow"]


class CannotFollowSelf(SocialError):
    def __init__(self) -> None:
        super().__init__("You cannot follow yourself")


class Follow(Aggregate):
    stream_prefix = "follow"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.following = False

    @staticmethod
    def pair_id(follower_id: str, followee_id: str) -> str:
        return f"{follower_id}:{followee_id}"

    def follow(self, follower_id: str, followee_id: str, now: str) -> None:
        """Following twice records nothing."""
        if follower_id == followee_id:
            raise CannotFollowSelf()
        if not self.following:
            self.record(
                UserFollowed(follower_id=follower_id, followee_id=followee_id, followed_at=now)
            )

    def unfollow(self, follower_id: str, followee_id: str, now: str) -> None:
        """Unfollowing someone not followed records nothing."""
        if self.following:
            self.record(
                UserUnfollowed(follower_id=follower_id, followee_id=followee_id, unfollowed_at=now)
            )

    def apply(self, event: Event) -> None:
        match event:
            case UserFollowed():
                self.following = True
            case UserUnfollowed():
                self.following = False
            case _:
                super().apply(event)
