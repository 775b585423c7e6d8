"""social: the reference service built on cqrskit (users, posts, follows)."""
