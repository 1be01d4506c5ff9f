"""One account's login: a current access token, refreshed ahead of expiry, written back safely.

- `credentials`: `KiroCredentials`: expiry, single-flight refresh (one per account across
  workers, through a store lock), write-back.
- `refresh`: the two token-refresh calls (Kiro social login, AWS IdC) and their failures.
- `token_file`: the token file on disk: `expiresAt` formats, reading, companions, atomic writes.
- `file_store`: `TokenFileStore`, the token file behind one account (re-read when it changes).
- `token_home`: where an account's tokens live between refreshes: file, store or memory.
- `discovery`: where a login comes from on this machine and what kind of login a file holds.
- `profiles`: finding a login's profile ARN (`ListAvailableProfiles`).
"""
